"""ReVISE (arXiv 2502.14565; PAPERS.md §11; docs/agents.md): ``trainer: revise``.

SFT warm start (``sft``) → the special token ``[refine]`` added to the tokenizer and embeddings
(:func:`llmrl.models.special_tokens.add_special_token`) → ``revise.samples_per_prompt`` answers ŷ sampled per
training prompt and checked by the task's verifier → preference pairs over token sequences (the sampled tokens
kept exactly; :func:`revise_pairs`):

* verify: correct ŷ: x⊕ŷ⊕[eos] ≻ x⊕ŷ⊕[refine]; wrong ŷ: x⊕ŷ⊕[refine] ≻ x⊕ŷ⊕[eos];
* correct: wrong ŷ: x⊕ŷ⊕[refine]⊕gold⊕[eos] ≻ x⊕ŷ⊕[eos] (+ the verify pairs of correct ŷ with
  ``revise.replay_verify``);

→ per stage, ``steps`` optimizer steps of SFT + λ·DPO (:func:`sft_plus_dpo`: summed NLL of the chosen
continuation + λ · the dpo trainer's :class:`~llmrl.preference.dpo.PairObjective`; :func:`~llmrl.preference.dpo.pair_step`), the reference being
the model at the start of the stage → evaluation after each stage (:func:`evaluate_revise`): plain decoding,
the refine loop, majority vote and confidence-aware vote over the same samples.

DPO's margin depends only on what follows ŷ (ŷ's log-probs are the same in both rows and cancel exactly). The
SFT term covers what follows a wrong ŷ (the decision, then the gold answer: a wrong ŷ is never imitated) and,
with ``revise.sft_answer`` (default), the whole ŷ⊕[eos] of a correct ŷ. Without that anchor the tiny model
learns [refine] as a token to emit anywhere, also inside its first answer (measured: first-answer accuracy 0.59
→ 0.00 after the verify stage, greedy outputs like ``7[refine]67``; docs/agents.md).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from llmrl.core.errors import ConfigError
from llmrl.core.progress import progress_bar
from llmrl.core.seed import derive_seed, seed_everything
from llmrl.models.loading import encode_prompt, render_prompt
from llmrl.models.special_tokens import add_special_token
from llmrl.preference.dpo import PairObjective, PairOrder, pair_step, score_pairs
from llmrl.rewards.base import safe_check
from llmrl.rollout.base import SamplingParams
from llmrl.rollout.refine import eos_confidence, split_answers, weighted_vote
from llmrl.rollout.sampler import eos_token_ids
from llmrl.train.build import build_generator
from llmrl.train.guard import open_log
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.pairs import PairBatch
from llmrl.train.run import RunParts, build_run, save_final

if TYPE_CHECKING:
    from llmrl.core.types import Sample
    from llmrl.preference.revise_config import ReviseRoot
    from llmrl.tasks.base import Task
    from llmrl.train.metrics import MetricsLogger

# -- pairs --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenPair:
    """A preference pair over token ids: ``prompt`` (x⊕ŷ, no loss) then ``chosen`` ≻ ``rejected``."""

    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]


def revise_pairs(prompt: Sequence[int], answer: Sequence[int], correct: bool, gold: Sequence[int], eos_id: int,
                 refine_id: int, sft_answer: bool = True) -> tuple[TokenPair, TokenPair | None]:
    """(verify pair, correction pair or None) of one sampled answer ŷ = ``answer`` to ``prompt``: correct ŷ
    prefers [eos] to [refine] (no correction pair); wrong ŷ prefers [refine] to [eos], and
    [refine]⊕``gold``⊕[eos] to [eos]. The pair's prompt is x⊕ŷ, except for a correct ŷ with ``sft_answer``:
    then ŷ is part of both completions (DPO's margin is the same) and the SFT term covers ŷ⊕[eos] too."""
    ctx = tuple(prompt) + tuple(answer)
    if correct and sft_answer:
        return TokenPair(tuple(prompt), (*answer, eos_id), (*answer, refine_id)), None
    if correct:
        return TokenPair(ctx, (eos_id,), (refine_id,)), None
    return (TokenPair(ctx, (refine_id,), (eos_id,)),
            TokenPair(ctx, (refine_id, *gold, eos_id), (eos_id,)))


def token_pair_batch(pairs: Sequence[TokenPair], pad_id: int) -> PairBatch:
    """The :class:`~llmrl.train.pairs.PairBatch` of ``pairs`` (rows 0..B-1 chosen, B..2B-1 rejected, right
    padded; ``loss_mask`` target-aligned over the completion tokens). Nothing is truncated or appended."""
    if not pairs:
        raise ValueError("token_pair_batch got no pairs")
    rows = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    if any(not p or not c for p, c in rows):
        raise ValueError("token_pair_batch: every pair needs a non-empty prompt and completions")
    L = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    attn = torch.zeros(len(rows), L, dtype=torch.long)
    mask = torch.zeros(len(rows), L - 1)
    for r, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        ids[r, :n] = torch.tensor([*p, *c])
        attn[r, :n] = 1
        mask[r, len(p) - 1 : n - 1] = 1.0  # target t+1 is a completion token
    return PairBatch(input_ids=ids, attention_mask=attn, loss_mask=mask, num_pairs=len(pairs),
                     truncated=torch.zeros(len(rows), dtype=torch.bool))


def prompt_ids(tokenizer: Any, samples: Sequence[Sample], chat_template: bool | None) -> list[list[int]]:
    return [encode_prompt(tokenizer, render_prompt(tokenizer, s, chat_template)) for s in samples]


def collect_pairs(run: RunParts, cfg: ReviseRoot, refine_id: int
                  ) -> tuple[list[TokenPair], list[TokenPair], list[TokenPair], dict[str, float]]:
    """(verify pairs of correct ŷ, verify pairs of wrong ŷ, correction pairs, stats) from
    ``revise.samples_per_prompt`` answers per training prompt, sampled by the current model; answers cut by the
    token budget are dropped, repeated (prompt, ŷ) count once."""
    r, tok = cfg.revise, run.tokenizer
    samples = run.train[: r.prompts]
    eos_ids, eos = eos_token_ids(run.model, tok), int(tok.eos_token_id)
    params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                            top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, n=r.samples_per_prompt,
                            seed=derive_seed(cfg.seed, "revise-pairs"))
    right: list[TokenPair] = []
    wrong: list[TokenPair] = []
    correct_pairs: list[TokenPair] = []
    seen: set[tuple[int, ...]] = set()
    n = n_right = cut = 0
    chunk = max(cfg.eval.batch_size, 1)
    for s0 in range(0, len(samples), chunk):
        part = samples[s0 : s0 + chunk]
        ids = prompt_ids(tok, part, cfg.model.chat_template)
        for s, p, gens in zip(part, ids, run.generator.generate(ids, params)):
            gold = tok.encode(run.task.demonstration(s), add_special_tokens=False)
            for g in gens:
                traj = split_answers(g.token_ids, refine_id, eos_ids)
                if not traj.accepted and traj.refines == 0:  # no EOS / [refine] closed the answer
                    cut += 1
                    continue
                ans = traj.first
                if (*p, *ans) in seen:
                    continue
                seen.add((*p, *ans))
                ok = safe_check(run.task.is_correct, tok.decode(ans, skip_special_tokens=True), s)
                n, n_right = n + 1, n_right + ok
                v, c = revise_pairs(p, ans, ok, gold, eos, refine_id, r.sft_answer)
                (right if ok else wrong).append(v)
                if c is not None:
                    correct_pairs.append(c)
    stats = {"pairs/answers": float(n), "pairs/answers_correct": float(n_right), "pairs/answers_cut": float(cut),
             "pairs/verify": float(len(right) + len(wrong)), "pairs/correct": float(len(correct_pairs))}
    return right, wrong, correct_pairs, stats


# -- loss and stage training --------------------------------------------------------------------------------


def sft_plus_dpo(lam: float, beta: float) -> Any:
    """The per-pair loss SFT + λ·DPO: the chosen continuation's negative log-likelihood, SUMMED over its tokens,
    + λ·(sigmoid DPO, β; the dpo trainer's :class:`~llmrl.preference.dpo.PairObjective`). Summed, not per-token
    averaged as RPO's term: with the answer in a correct pair's completion (``revise.sft_answer``) an average
    would give its [eos] a third of the weight of a wrong answer's [refine] (measured: P([eos]) ≈ 0.2 even after
    correct answers). -> objective(logps [2b], ref [b, 2], lengths [2b]) -> (losses [b], metrics)."""
    dpo = PairObjective("sigmoid", beta, {}, rpo_alpha=0.0, average=False)

    def objective(logps: Tensor, ref: Tensor | None, lengths: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        losses, metrics = dpo(logps, ref, lengths)
        nll = -logps[: logps.shape[0] // 2]  # [b] summed NLL of each chosen continuation
        metrics["sft/nll"] = nll.detach().mean()
        return nll + lam * losses, metrics

    return objective


def train_stage(model: torch.nn.Module, batch: PairBatch, cfg: ReviseRoot, name: str, log: MetricsLogger | None,
                step0: int) -> dict[str, float]:
    """``cfg.steps`` optimizer steps of SFT + λ·DPO on ``batch`` (``revise.batch_size`` pairs each, seeded
    per-epoch permutations), the reference being ``model`` as it is now; the last step's metrics."""
    r, o = cfg.revise, cfg.optim
    ref = score_pairs(model, batch, r.batch_size)  # [N, 2] reference log-probs: the model at the stage's start
    objective = sft_plus_dpo(r.lam, r.beta)
    opt = build_optimizer(model.parameters(), o.lr, o.weight_decay, o.betas, o.eps)
    sched = build_scheduler(opt, o.warmup_steps, cfg.steps, o.schedule)
    order = PairOrder(batch.num_pairs, r.batch_size, derive_seed(cfg.seed, "revise", name))
    bar = progress_bar(cfg.steps, name, enabled=cfg.progress, leave=False)
    last: dict[str, float] = {}
    for step in range(1, cfg.steps + 1):
        idx = order.indices(step)
        ok, last = pair_step(model, opt, sched, batch.select(idx), ref[idx], objective, 0, o.grad_clip)
        if not ok:
            raise FloatingPointError(f"revise stage {name}: non-finite loss or gradient at step {step}")
        if log is not None:
            log.log(step0 + step, {f"{name}/{k}": v for k, v in last.items()})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last.get('rewards/accuracies', math.nan):.2f}")
    if bar is not None:
        bar.close()
    return last


# -- evaluation ---------------------------------------------------------------------------------------------


def evaluate_revise(model: torch.nn.Module, generator: Any, tokenizer: Any, task: Task, samples: Sequence[Sample],
                    refine_id: int, *, n: int, temperature: float, max_new_tokens: int, seed: int,
                    chat_template: bool | None = None, batch_size: int = 128) -> dict[str, float]:
    """Held-out accuracies of one model: ``plain`` (greedy, the first answer), ``refine`` (greedy, the refine
    loop's final answer), and over ``n`` samples per prompt at ``temperature``: ``sample`` (mean accuracy of the
    first answers), ``sample_refine`` (of the refine loop's final answers), ``majority`` (majority vote of the
    first answers) and ``confidence`` (confidence-aware vote, weights c_i = P([eos] | x, y_i)); ``verify/*``: how
    well c_i > 1/2 predicts a first answer's correctness, mean c of correct / wrong answers, refine rates."""
    eos_ids, eos = eos_token_ids(model, tokenizer), int(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    parse = getattr(task, "parse", None)
    acc: dict[str, float] = {k: 0.0 for k in ("plain", "refine", "sample", "sample_refine", "majority",
                                              "confidence")}
    ver = {"hits": 0.0, "c_right": 0.0, "n_right": 0.0, "c_wrong": 0.0, "n_wrong": 0.0, "refine_greedy": 0.0,
           "refine_sampled": 0.0}

    def text(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    for s0 in range(0, len(samples), batch_size):
        part = list(samples[s0 : s0 + batch_size])
        ids = prompt_ids(tokenizer, part, chat_template)
        greedy = generator.generate(ids, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, n=1))
        sampled = generator.generate(ids, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                                         n=n, seed=derive_seed(seed, s0)))
        trajs = [[split_answers(g.token_ids, refine_id, eos_ids) for g in gens] for gens in sampled]
        conf = eos_confidence(model, [p for p, ts in zip(ids, trajs) for _ in ts],
                              [t.first for ts in trajs for t in ts], eos, pad)
        for i, (s, g, ts) in enumerate(zip(part, greedy, trajs)):
            tg = split_answers(g[0].token_ids, refine_id, eos_ids)
            acc["plain"] += safe_check(task.is_correct, text(tg.first), s)
            acc["refine"] += safe_check(task.is_correct, text(tg.final), s)
            ver["refine_greedy"] += tg.refines > 0
            firsts = [text(t.first) for t in ts]
            right = [safe_check(task.is_correct, f, s) for f in firsts]
            c = conf[i * n : (i + 1) * n]
            acc["sample"] += sum(right) / n
            acc["sample_refine"] += sum(safe_check(task.is_correct, text(t.final), s) for t in ts) / n
            keys = [parse(f) if parse is not None else f.strip() for f in firsts]
            for name, weights in (("majority", None), ("confidence", c)):
                win = weighted_vote(keys, weights)
                acc[name] += win is not None and right[keys.index(win)]
            for ok, ci, t in zip(right, c, ts):
                ver["hits"] += (ci > 0.5) == ok
                ver["c_right" if ok else "c_wrong"] += ci
                ver["n_right" if ok else "n_wrong"] += 1
                ver["refine_sampled"] += t.refines > 0
    m = max(len(samples), 1)
    out = {f"accuracy/{k}": v / m for k, v in acc.items()}
    out["accuracy"] = out["accuracy/plain"]
    out["verify/accuracy"] = ver["hits"] / (m * n)
    out["verify/conf_correct"] = ver["c_right"] / max(ver["n_right"], 1)
    out["verify/conf_wrong"] = ver["c_wrong"] / max(ver["n_wrong"], 1)
    out["verify/refine_rate_greedy"] = ver["refine_greedy"] / m
    out["verify/refine_rate_sampled"] = ver["refine_sampled"] / (m * n)
    return out


# -- the loop -----------------------------------------------------------------------------------------------


def train(cfg: ReviseRoot, resume: bool = False) -> dict[str, Any]:
    """Run ReVISE as configured; returns the summary (also ``<output_dir>/summary.json``)."""
    if resume:
        raise ConfigError("trainer revise: --resume is not supported (a run is a few minutes of stages); start "
                          "again with --overwrite")
    t0 = time.time()
    seed_everything(cfg.seed)
    run = build_run(cfg, resume)  # model (+ SFT warm start), tokenizer, task, prompts
    r, out = cfg.revise, Path(cfg.output_dir)
    refine_id = add_special_token(run.model, run.tokenizer, r.token)
    run.generator = build_generator(run.model, run.tokenizer, cfg.rollout.backend)  # over the grown vocabulary
    test = run.test[: cfg.eval.size] if cfg.eval.size is not None else run.test

    def evaluate(stage: str) -> dict[str, float]:
        return evaluate_revise(run.model, run.generator, run.tokenizer, run.task, test, refine_id, n=r.eval_samples,
                               temperature=cfg.eval.temperature, max_new_tokens=r.eval_max_new_tokens,
                               seed=derive_seed(cfg.seed, "revise-eval", stage),
                               chat_template=cfg.model.chat_template, batch_size=cfg.eval.batch_size)

    log, before = open_log(out, None, lambda: evaluate("before"), cfg)
    t_pairs = time.time()
    right, wrong, correct, stats = collect_pairs(run, cfg, refine_id)
    stats["time/pairs"] = time.time() - t_pairs
    log.log(0, stats)
    pad = run.pad_id
    evals: dict[str, dict[str, float]] = {"before": before}
    for i, stage in enumerate(r.stages):
        pairs = right + wrong if stage == "verify" else correct + (right if r.replay_verify else [])
        if not pairs:
            raise ConfigError(f"revise: stage {stage} has no pairs (no complete sampled answer, or for the correct "
                              f"stage no wrong one; rollout.max_new_tokens, revise.prompts): {stats}")
        t = time.time()
        train_stage(run.model, token_pair_batch(pairs, pad), cfg, stage, log, i * cfg.steps)
        evals[stage] = log.log((i + 1) * cfg.steps, {**evaluate(stage), "time/stage": time.time() - t},
                               kind="eval")
    log.close()
    save_final(run, cfg)  # the tokenizer with [refine], the grown embeddings
    summary = {
        "trainer": "revise",
        "refine_token_id": refine_id,
        "accuracy_before": before.get("accuracy"),
        "accuracy_after": evals[r.stages[-1]].get("accuracy"),
        "pairs": stats,
        "evals": evals,
        "wall_seconds": time.time() - t0,
        "sft_seconds": run.sft_seconds,
        "steps_per_stage": cfg.steps,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["TokenPair", "collect_pairs", "evaluate_revise", "revise_pairs", "sft_plus_dpo", "token_pair_batch",
           "train", "train_stage"]
