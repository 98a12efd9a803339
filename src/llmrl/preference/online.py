"""Online / iterative preference training: ``trainer: online_dpo`` (self-judged / iterative DPO, IPO
arXiv:2502.16182, CLaMP-DPO arXiv:2502.18008) and ``trainer: onpo`` (optimistic online mirror descent, ONPO
arXiv:2502.16852).

One iteration, K = ``online.iterations`` times:

1. sample ``rollout.samples_per_prompt`` completions for each of ``online.prompts`` training prompts from
   the current policy (``rollout`` settings);
2. rank them with the configured preference source (:mod:`llmrl.preference.sources`; classes in
   :mod:`llmrl.preference.ranking`: the task's rewards, a reward model, a Yes/No judge — the policy itself
   when ``online.judge_model`` is null — or a pairwise A/B judge) and build pairs (best vs worst, CLaMP-DPO's
   top × bottom fractions, or oracle-labelled pairs);
3. train on those pairs for ``ceil(online.epochs · pairs / pref.batch_size)`` optimizer steps with a fresh
   AdamW and ``optim``'s warm-up/schedule, reusing the ``dpo`` trainer's step (:func:`llmrl.preference.dpo.pair_step`):
   * ``online_dpo``: the DPO-family loss ``pref.loss_type`` (CLaMP-DPO: ``dpop``) against the reference
     ``online.reference`` = ``initial`` (the starting policy, after any SFT warm start) or ``previous``
     (the policy that sampled this iteration's data);
   * ``onpo``: two regressions on the same pairs, π′_{t+1} = argmin E (g(π; π′_t) − target)² and
     π_{t+1} = argmin E (g(π; π′_{t+1}) − target)² (:mod:`llmrl.algos.onpo`; target = η/2 by default,
     ``online.target``); each regression starts from its anchor's weights, and π′_1 = the starting policy.
     Sequence log-probs are summed (the paper's g) unless ``pref.average_logps`` is true;
4. log the iteration's mean source score (``score_mean``: for a judge, the judge's mean score of the
   samples the policy produced this iteration) and task accuracy, evaluate on held-out prompts (task
   metrics, and ``score_mean`` of fresh held-out samples drawn with the same seed every time; for a
   pairwise judge, ``win_rate`` against the starting policy's held-out samples) and checkpoint.

Reference and anchor log-probs are computed once per iteration, before its updates (the pairs are fixed
within an iteration), so no frozen copy is needed except the starting policy for ``reference: initial``
(under LoRA: the adapters disabled). Metrics records use the iteration number as the step.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from llmrl.algos.onpo import onpo_beta, onpo_target
from llmrl.algos.preference import REFERENCE_FREE
from llmrl.core.config import to_dict
from llmrl.core.seed import derive_seed, rng_state, seed_everything
from llmrl.preference.dpo import PairObjective, PairOrder, pair_step, score_pairs
from llmrl.preference.ranking import (
    PairwiseSource,
    PreferenceSource,
    best_worst_pairs,
    clamp_pairs,
    oracle_pairs,
    score_groups,
)
from llmrl.preference.sources import build_source, judge_model
from llmrl.rewards.base import safe_check
from llmrl.rollout.base import SamplingParams
from llmrl.rollout.episodes import generate_episodes
from llmrl.train.build import reference_policy
from llmrl.train.checkpoint import save_checkpoint
from llmrl.train.collect import DataStream
from llmrl.train.guard import BadSteps, Checkpoints, open_log, resume_state
from llmrl.train.memory import AutoMicroBatch
from llmrl.train.metrics import read_metrics
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.pairs import PairBatch, encode_pairs
from llmrl.train.run import RunParts, build_run, evaluate_run, sampling_params, save_final

if TYPE_CHECKING:
    from llmrl.core.types import Sample
    from llmrl.preference.config import OnlineRoot
    from llmrl.tasks.preference import PreferencePair


# -- one iteration's data ---------------------------------------------------------------------------------


def sample_completions(run: RunParts, samples: list[Sample], params: SamplingParams, chat_template: bool | None,
                       ) -> tuple[list[list[str]], list[list[bool]], list[list[bool]]]:
    """(completions, well_formed, correct) per prompt, ``params.n`` each, in sampling order."""
    eps = generate_episodes(run.generator, run.tokenizer, samples, params, chat_template)
    comps: list[list[str]] = [[] for _ in samples]
    wf: list[list[bool]] = [[] for _ in samples]
    ok: list[list[bool]] = [[] for _ in samples]
    for e in eps:
        comps[e.group_id].append(e.completion)
        wf[e.group_id].append(safe_check(run.task.is_well_formed, e.completion, e.sample))
        ok[e.group_id].append(safe_check(run.task.is_correct, e.completion, e.sample))
    return comps, wf, ok


def make_pairs(cfg: OnlineRoot, source: PreferenceSource, samples: list[Sample], comps: list[list[str]],
               wf: list[list[bool]], rng: random.Random) -> tuple[list[PreferencePair], dict[str, float]]:
    """Rank and pair one iteration's completions; metrics: ``score_mean`` (not for a pairwise source, whose
    mean win rate is ½ by construction), ``pairs``, mean chosen/rejected scores or oracle probability."""
    o = cfg.online
    metrics: dict[str, float] = {}
    if o.pairing == "oracle_pairs":
        assert isinstance(source, PairwiseSource)
        pairs = oracle_pairs(samples, comps, source.prob, label=o.oracle_label, rng=rng)
        if pairs:
            metrics["pairs/prob"] = sum(p.meta["prob"] for p in pairs) / len(pairs)
    else:
        groups = score_groups(source, samples, comps, wf)
        if not isinstance(source, PairwiseSource):
            flat = [x for g in groups for x in g.scores]
            metrics["score_mean"] = sum(flat) / max(len(flat), 1)
        if o.pairing == "best_worst":
            pairs = best_worst_pairs(groups, o.min_margin)
        else:
            pairs = clamp_pairs(groups, o.top_frac, o.bottom_frac, o.reference_key, o.max_similarity, o.similarity)
        if pairs:
            metrics["pairs/chosen_score"] = sum(p.meta["chosen_score"] for p in pairs) / len(pairs)
            metrics["pairs/rejected_score"] = sum(p.meta["rejected_score"] for p in pairs) / len(pairs)
    metrics["pairs"] = float(len(pairs))
    return pairs, metrics


# -- training on one iteration's pairs --------------------------------------------------------------------


def fit_pairs(model: torch.nn.Module, batch: PairBatch, ref: Tensor | None, objective: PairObjective, cfg: OnlineRoot,
              seed: int, reference_copy: bool = False) -> dict[str, float]:
    """``ceil(online.epochs · pairs / pref.batch_size)`` optimizer steps on ``batch`` against the fixed
    reference log-probs ``ref`` ([N, 2], or None for reference-free losses), with a fresh AdamW and
    ``optim``'s warm-up/schedule; returns the steps' mean metrics. Aborts after ``optim.max_bad_steps``
    consecutive non-finite steps. ``pref.micro_batch_size`` 0: the most pairs per forward/backward that fit
    ``optim.memory_budget_gb`` (``reference_copy``: a separate reference model is in memory too)."""
    p, o, n = cfg.pref, cfg.optim, batch.num_pairs
    auto = AutoMicroBatch(model, o.memory_budget_gb, reference=reference_copy, micro_batch_size=p.micro_batch_size)
    bs = min(p.batch_size, n)
    steps = max(1, math.ceil(cfg.online.epochs * n / bs))
    optimizer = build_optimizer(model.parameters(), o.lr, o.weight_decay, o.betas, o.eps)
    scheduler = build_scheduler(optimizer, o.warmup_steps, steps, o.schedule)
    order, sums = PairOrder(n, bs, seed), defaultdict(float)
    bad = BadSteps(o.max_bad_steps, warn=False, where=" of an online iteration")
    for step in range(1, steps + 1):
        idx = order.indices(step)
        sub = batch.select(idx)
        ok, upd = pair_step(model, optimizer, scheduler, sub, None if ref is None else ref[idx], objective,
                            auto.pairs(sub), o.grad_clip)
        bad(ok, step)
        for k, v in upd.items():
            sums[k] += v / steps
    return {**sums, "steps": float(steps)}


def trainable_state(model: torch.nn.Module) -> dict[str, Tensor]:
    """A CPU copy of the trainable parameters (all weights, or only the LoRA adapters)."""
    return {n: q.detach().to("cpu", copy=True) for n, q in model.named_parameters() if q.requires_grad}


@torch.no_grad()
def load_trainable_state(model: torch.nn.Module, state: dict[str, Tensor]) -> None:
    for n, q in model.named_parameters():
        if n in state:
            q.copy_(state[n].to(q.device, q.dtype))


class OnpoObjective(PairObjective):
    """ONPO's regression (g − target)²: the ``ipo`` loss with β = 1/(2·target), as
    :func:`llmrl.algos.onpo.onpo_loss` computes it; adds ``onpo/g`` (mean g) to the metrics."""

    def __call__(self, logps: Tensor, ref: Tensor | None, lengths: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        losses, metrics = super().__call__(logps, ref, lengths)
        metrics["onpo/g"] = metrics["rewards/margins"] / self.beta  # margins = β · mean g
        return losses, metrics


def onpo_objective(cfg: OnlineRoot) -> OnpoObjective:
    """The ONPO objective of ``cfg`` (summed log-probs, the paper's g, unless ``pref.average_logps`` is true)."""
    beta = onpo_beta(onpo_target(cfg.online.eta, cfg.online.target))
    return OnpoObjective("ipo", beta, {}, 0.0, bool(cfg.pref.average_logps))


# -- held-out evaluation ----------------------------------------------------------------------------------


def held_out_params(cfg: OnlineRoot) -> SamplingParams:
    """Sampling for held-out scores: eval.samples per prompt at eval.temperature (greedy when 0 samples);
    the same seed every evaluation, so iterations are compared on common random numbers."""
    e = cfg.eval
    return SamplingParams(max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens,
                          temperature=e.temperature if e.samples > 0 else 0.0, n=max(e.samples, 1),
                          stop=list(cfg.rollout.stop), seed=derive_seed(cfg.seed, "online-eval"))


def evaluate_online(run: RunParts, cfg: OnlineRoot, it: int, source: PreferenceSource,
                    initial: list[list[str]] | None) -> tuple[dict[str, float], list[list[str]] | None]:
    """Held-out task metrics + the source's mean score (or pairwise win rate vs ``initial``, the starting
    policy's held-out completions). Returns (metrics, held-out completions)."""
    out = evaluate_run(run, cfg, it) if run.test else {}
    if not (cfg.online.eval_score and run.test):
        return out, None
    comps, _, _ = sample_completions(run, run.test, held_out_params(cfg), cfg.model.chat_template)
    if isinstance(source, PairwiseSource):
        if initial is not None:
            probs = [source.prob(s["prompt"], y, y0) for s, cs, c0 in zip(run.test, comps, initial)
                     for y, y0 in zip(cs, c0)]
            out["win_rate"] = sum(probs) / len(probs)
    else:
        flat = [x for row in source.score(run.test, comps) for x in row]
        out["score_mean"] = sum(flat) / len(flat)
    return out, comps


# -- the loop ---------------------------------------------------------------------------------------------


def train(cfg: OnlineRoot, resume: bool = False) -> dict[str, Any]:
    """``trainer: online_dpo``: online / iterative DPO-family training; returns the summary."""
    return _run(cfg, resume, onpo=False)


def train_onpo(cfg: OnlineRoot, resume: bool = False) -> dict[str, Any]:
    """``trainer: onpo``: the two-step optimistic update per iteration."""
    return _run(cfg, resume, onpo=True)


def _run(cfg: OnlineRoot, resume: bool, onpo: bool) -> dict[str, Any]:
    t0 = time.time()
    seed_everything(cfg.seed)
    run = build_run(cfg, resume)  # policy (+ SFT warm start, LoRA), tokenizer, generator, task, prompts
    o, p, out = cfg.online, cfg.pref, Path(cfg.output_dir)
    source = build_source(cfg, run)
    objective = onpo_objective(cfg) if onpo else PairObjective.from_config(cfg)
    needs_ref = onpo or p.loss_type not in REFERENCE_FREE
    ref_model, ref_ctx = None, None
    if not onpo and needs_ref and o.reference == "initial":  # the starting policy, before any checkpoint load
        ref_model, ref_ctx = reference_policy(run.model, cfg.model.lora.enabled,
                                              device=cfg.model.reference_device)
    prime = trainable_state(run.model) if onpo else None  # π′_1 = π_1 = the starting policy
    data = DataStream(run.train, cfg.seed)
    state = resume_state(out, resume, run.model, *_blank_optimizer(run.model, cfg), config=to_dict(cfg))  # no optimizer state is kept
    if state is not None:
        data.position, prime = state["data_position"], state.get("prime", prime)
    start = state["step"] if state is not None else 0
    init_path = out / "initial_eval_completions.json"
    initial = json.loads(init_path.read_text()) if start > 0 and init_path.is_file() else None

    def evaluate_before() -> dict[str, float]:  # and keep the starting policy's held-out completions
        nonlocal initial
        ev, initial = evaluate_online(run, cfg, 0, source, None)
        if initial is not None:
            init_path.write_text(json.dumps(initial))
        return ev

    log, run.before = open_log(out, state, evaluate_before, cfg)
    saves = Checkpoints(lambda it: save_checkpoint(
        out / "checkpoints", it, run.model, *_blank_optimizer(run.model, cfg), keep=cfg.keep_checkpoints,
        config=to_dict(cfg), state={"data_position": data.position, "rng": rng_state(),
                                    **({"prime": prime} if onpo else {})}), 1, 0.0, o.iterations)
    for it in saves.steps(start):  # a checkpoint after each iteration; RunInterrupted after a SIGINT/SIGTERM
        t_it = time.time()
        # 1. sample from the current policy
        samples = data.next(o.prompts)
        comps, wf, ok = sample_completions(run, samples, sampling_params(cfg, derive_seed(cfg.seed, "online", it)),
                                           cfg.model.chat_template)
        flat_ok = [x for row in ok for x in row]
        rec: dict[str, float] = {"accuracy": sum(flat_ok) / len(flat_ok),
                                 "format_rate": sum(x for row in wf for x in row) / len(flat_ok)}
        t_gen = time.time()
        # 2. rank and pair
        pairs, pm = make_pairs(cfg, source, samples, comps, wf, random.Random(derive_seed(cfg.seed, "oracle", it)))
        rec.update(pm)
        t_score = time.time()
        # 3. train
        if pairs:
            batch = encode_pairs(run.tokenizer, pairs, max_length=p.max_length, max_prompt_length=p.max_prompt_length,
                                 chat_template=cfg.model.chat_template)
            rec["truncated"] = float(batch.truncated.float().mean())
            if onpo:
                load_trainable_state(run.model, prime)  # type: ignore[arg-type]  # start from π′_t, the anchor
                first = fit_pairs(run.model, batch, score_pairs(run.model, batch, p.micro_batch_size), objective,
                                  cfg, derive_seed(cfg.seed, "onpo-prime", it))
                prime = trainable_state(run.model)  # π′_{t+1}
                rec.update({f"prime/{k}": v for k, v in first.items()})
                rec.update(fit_pairs(run.model, batch, score_pairs(run.model, batch, p.micro_batch_size), objective,
                                     cfg, derive_seed(cfg.seed, "onpo", it)))
            else:
                ref = None
                if needs_ref:
                    ref = score_pairs(ref_model if ref_model is not None else run.model, batch, p.micro_batch_size,
                                      ref_ctx)
                rec.update(fit_pairs(run.model, batch, ref, objective, cfg, derive_seed(cfg.seed, "online-order", it),
                                     reference_copy=ref_model is not None and ref_model is not run.model))
        else:
            run.warn(f"iteration {it}: no preference pairs (all tied or filtered out); no update")
        t_end = time.time()
        rec.update({"time/generate": t_gen - t_it, "time/score": t_score - t_gen, "time/update": t_end - t_score})
        log.log(it, rec)
        # 4. evaluate and checkpoint
        ev, _ = evaluate_online(run, cfg, it, source, initial)
        run.last_eval = log.log(it, ev, kind="eval")
        _show(cfg, it, rec, run.last_eval)
    log.close()
    return _finish(run, cfg, out, t0, onpo)


def _show(cfg: OnlineRoot, it: int, rec: dict[str, Any], ev: dict[str, Any]) -> None:
    if not cfg.progress and not cfg.log_every:
        return
    parts = [f"iteration {it}/{cfg.online.iterations}: pairs {int(rec.get('pairs', 0))}"]
    for k in ("score_mean", "accuracy", "loss"):
        if isinstance(rec.get(k), float):
            parts.append(f"{k} {rec[k]:.4f}")
    for k in ("score_mean", "win_rate", "accuracy"):
        if isinstance(ev.get(k), float):
            parts.append(f"eval {k} {ev[k]:.4f}")
    print(", ".join(parts), file=sys.stderr)


def _blank_optimizer(model: torch.nn.Module, cfg: OnlineRoot) -> tuple[torch.optim.Optimizer, Any]:
    """(optimizer, scheduler) for checkpoints, which hold none of value here: every iteration's updates
    start from a fresh AdamW (:func:`fit_pairs`)."""
    blank = build_optimizer(model.parameters(), cfg.optim.lr)
    return blank, build_scheduler(blank, 0, 1, "constant")


def _finish(run: RunParts, cfg: OnlineRoot, out: Path, t0: float, onpo: bool) -> dict[str, Any]:
    save_final(run, cfg)
    evals = sorted(read_metrics(out / "metrics.jsonl", "eval"), key=lambda r: r["step"])
    iters = sorted(read_metrics(out / "metrics.jsonl", "train"), key=lambda r: r["step"])
    after = evals[-1] if evals else {}
    summary = {
        "trainer": "onpo" if onpo else "online_dpo",
        "source": cfg.online.source + (" (self)" if cfg.online.source in ("judge", "pairwise_judge")
                                       and cfg.online.judge_model is None else ""),
        "pairing": cfg.online.pairing,
        "iterations": cfg.online.iterations,
        "accuracy_before": run.before.get("accuracy"),
        "accuracy_after": after.get("accuracy"),
        "eval_score_mean": [r.get("score_mean") for r in evals],  # iteration 0 (before) .. K
        "eval_win_rate": [r.get("win_rate") for r in evals],
        "sample_score_mean": [r.get("score_mean") for r in iters],  # samples of iterations 1 .. K
        "sample_accuracy": [r.get("accuracy") for r in iters],
        "pairs": [r.get("pairs") for r in iters],
        "wall_seconds": time.time() - t0,
        "sft_seconds": run.sft_seconds,
        "before": run.before,
        "after": after,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["OnpoObjective", "build_source", "evaluate_online", "fit_pairs", "judge_model", "make_pairs", "onpo_objective",
           "sample_completions", "train", "train_onpo"]
