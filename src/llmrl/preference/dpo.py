"""Offline preference optimisation (the DPO family): ``trainer: dpo``.

pairs (a JSONL/parquet file, or built from the task: chosen = a correct demonstration, rejected = a wrong
one) → reference log-probs, once → shuffled minibatches of pairs → preference loss (+ RPO's SFT term)
→ AdamW step → log / evaluate / checkpoint. The model is built by :func:`llmrl.train.run.build_run`
(local model or tiny model, optional SFT warm start, LoRA), so the reference is the starting policy:
the warm-started model when ``sft.steps > 0``.

Reference log-probs: with ``pref.precompute_ref_logps`` (default) every training and held-out pair is
scored once by the starting policy before the first update, which is exactly what a frozen copy would
give, without keeping one; the scores are saved to ``<output_dir>/ref_logps.pt`` (``cache_ref_logps``)
and reused on resume. Otherwise a frozen copy (:func:`llmrl.models.reference_model`; under LoRA, the
policy with its adapters disabled) scores each minibatch. Reference-free losses (``simpo``) skip both.

Steps and data order: one optimizer step = ``pref.batch_size`` pairs (gradients accumulated over
``pref.micro_batch_size`` pairs per forward/backward). Pairs are drawn from a stream of per-epoch seeded
permutations, so step s always sees the same pairs: a resumed run equals an uninterrupted one. The run
lasts ``steps`` optimizer steps, or ``ceil(pref.epochs · pairs / batch_size)`` when ``pref.epochs > 0``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from llmrl.algos.preference import AVERAGED_BY_DEFAULT, REFERENCE_FREE, preference_loss
from llmrl.core.config import to_dict
from llmrl.core.errors import ConfigError
from llmrl.core.progress import progress_bar
from llmrl.core.seed import derive_seed, rng_state, seed_everything
from llmrl.rollout.episodes import generate_episodes
from llmrl.tasks.preference import PreferencePair, read_preference_pairs
from llmrl.train.build import reference_policy
from llmrl.train.checkpoint import save_checkpoint
from llmrl.train.collect import score_episodes
from llmrl.train.distributed import DataParallel, all_finite, global_counts
from llmrl.train.guard import BadSteps, Checkpoints, eval_due, open_log, resume_state
from llmrl.train.memory import AutoMicroBatch
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.pairs import PairBatch, completion_logps, encode_pairs
from llmrl.train.run import RunParts, build_run, evaluate_run, sampling_params, save_final
from llmrl.train.update import clipped_step

if TYPE_CHECKING:
    from llmrl.core.types import Sample
    from llmrl.preference.config import DPORoot
    from llmrl.tasks.base import Task

# -- pairs --------------------------------------------------------------------------------------------------


def task_pairs(task: Task, samples: list[Sample], seed: int) -> tuple[list[PreferencePair], int]:
    """(pairs, skipped): chosen = ``task.demonstration(s)``; rejected = ``task.wrong_demonstration(s, rng)``
    where the task has a sloppy teacher (arithmetic) and its answer is wrong, else the demonstration of
    another random sample that the verifier rejects. Every prompt gets a pair where possible: pairs only for
    the prompts the teacher gets wrong would teach "avoid the teacher's method" even where it is right (for
    arithmetic: push down every carry-free digit-wise sum, including the correct ones)."""
    rng = random.Random(derive_seed(seed, "pref-pairs"))
    wrong = getattr(task, "wrong_demonstration", None)
    pairs, skipped = [], 0
    for s in samples:
        chosen = task.demonstration(s)
        rejected = wrong(s, rng) if wrong is not None else None
        if rejected is None or rejected == chosen or task.is_correct(rejected, s):
            rejected = task.demonstration(rng.choice(samples))
        if rejected == chosen or task.is_correct(rejected, s):
            skipped += 1
            continue
        pairs.append(PreferencePair(prompt=s["prompt"], chosen=chosen, rejected=rejected, meta=_meta(s)))
    return pairs, skipped


def policy_pairs(run: RunParts, cfg: DPORoot, samples: list[Sample], seed: int) -> tuple[list[PreferencePair], int]:
    """(pairs, skipped): chosen = ``task.demonstration(s)``; rejected = the first of ``pref.policy_samples``
    samples of the current policy (``rollout`` temperature / length) that the task's verifier rejects
    (SPIN-style: the model's own mistakes). Prompts with no wrong sample are skipped."""
    params = sampling_params(cfg, seed=derive_seed(seed, "pref-rejected"), n=cfg.pref.policy_samples)
    eps = generate_episodes(run.generator, run.tokenizer, samples, params, cfg.model.chat_template)
    score_episodes(eps, run.task, cfg.algo.reward_failure_value, cfg.rollout.max_new_tokens)
    rejected: dict[int, str] = {}
    for e in eps:
        if not e.metadata["correct"] and e.completion.strip() and e.group_id not in rejected:
            rejected[e.group_id] = e.completion
    pairs = []
    for i, s in enumerate(samples):
        chosen = run.task.demonstration(s)
        if i in rejected and rejected[i] != chosen:
            pairs.append(PreferencePair(prompt=s["prompt"], chosen=chosen, rejected=rejected[i], meta=_meta(s)))
    return pairs, len(samples) - len(pairs)


def _meta(s: Sample) -> dict[str, Any]:
    return {"answer": s.get("answer"), **({"assistant_prefix": s["assistant_prefix"]} if "assistant_prefix" in s
                                          else {})}


def load_pairs(cfg: DPORoot, run: RunParts) -> tuple[list[PreferencePair], list[PreferencePair], dict[str, Any]]:
    """(training pairs, held-out pairs, stats) from ``pref.train_file`` / ``pref.test_file`` or the task."""
    p = cfg.pref
    keys = dict(prompt_key=p.prompt_key, chosen_key=p.chosen_key, rejected_key=p.rejected_key, on_error=p.on_error)
    stats: dict[str, Any] = {}
    if p.train_file:
        file_stats: dict[str, int] = {}
        train = read_preference_pairs(p.train_file, **keys, stats=file_stats)
        stats["train_file"] = file_stats
    elif p.rejected_source == "policy":
        train, stats["skipped_task_pairs"] = policy_pairs(run, cfg, run.train[: p.pairs_from_task], cfg.seed)
    else:
        train, stats["skipped_task_pairs"] = task_pairs(run.task, run.train[: p.pairs_from_task], cfg.seed)
    if p.test_file:
        test = read_preference_pairs(p.test_file, **keys)
    elif not p.train_file:  # held-out pairs always contrast with the teacher's mistakes (fixed across runs)
        test, _ = task_pairs(run.task, run.test, derive_seed(cfg.seed, "eval"))
    else:
        test = []
    if not train:
        raise ConfigError(f"pref: no usable training pairs ({p.train_file or 'built from task ' + cfg.task.name})")
    return train, test[: p.eval_pairs], stats


# -- scoring ------------------------------------------------------------------------------------------------


def score_pairs(model: torch.nn.Module, batch: PairBatch, micro_pairs: int = 0, context: Any = None) -> Tensor:
    """Summed completion log-probs of every pair under ``model``, without gradients.  -> [B, 2] (chosen, rejected)"""
    B = batch.num_pairs
    size = micro_pairs if micro_pairs > 0 else B
    out = torch.zeros(B, 2)
    with torch.no_grad(), (context() if context is not None else nullcontext()):
        for s in range(0, B, size):
            idx = torch.arange(s, min(s + size, B))
            lp = completion_logps(model, batch.select(idx)).float()
            out[idx] = lp.view(2, -1).T.to(out.device)
    return out


def scoring_chunk(cfg: DPORoot) -> int:
    """Pairs per no-grad scoring forward over a whole data set: the micro-batch, else the batch size."""
    return cfg.pref.micro_batch_size or cfg.pref.batch_size


def _fingerprint(cfg: DPORoot, *batches: PairBatch | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([to_dict(cfg.model), to_dict(cfg.sft), cfg.seed, to_dict(cfg.task)], sort_keys=True,
                        default=str).encode())
    for b in batches:
        if b is not None:
            h.update(b.input_ids.numpy().tobytes())
            h.update(b.loss_mask.numpy().tobytes())
    return h.hexdigest()


def reference_scores(run: RunParts, cfg: DPORoot, train_b: PairBatch, eval_b: PairBatch | None,
                     ) -> tuple[Tensor, Tensor | None]:
    """Reference log-probs of the training and held-out pairs ([N, 2] each), scored by the starting policy
    (call before any update or checkpoint load), or read from ``<output_dir>/ref_logps.pt`` when it matches."""
    p, path = cfg.pref, Path(cfg.output_dir) / "ref_logps.pt"
    key = _fingerprint(cfg, train_b, eval_b)
    if p.cache_ref_logps and path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved.get("fingerprint") == key:
            return saved["train"], saved.get("eval")
    model, ctx = reference_policy(run.model, cfg.model.lora.enabled, copy=False)  # scored now: no copy needed
    train = score_pairs(model, train_b, scoring_chunk(cfg), ctx)
    ev = score_pairs(model, eval_b, scoring_chunk(cfg), ctx) if eval_b is not None else None
    if p.cache_ref_logps:
        tmp = path.with_suffix(".tmp")
        torch.save({"fingerprint": key, "train": train, **({"eval": ev} if ev is not None else {})}, tmp)
        tmp.replace(path)
    return train, ev


@dataclasses.dataclass
class PairObjective:
    """The configured loss: type, β, options, RPO weight, summed vs averaged log-probs."""

    loss_type: str
    beta: float
    options: dict[str, Any]
    rpo_alpha: float
    average: bool

    @classmethod
    def from_config(cls, cfg: DPORoot) -> PairObjective:
        p = cfg.pref
        avg = p.average_logps if p.average_logps is not None else p.loss_type in AVERAGED_BY_DEFAULT
        return cls(p.loss_type, p.beta, dict(p.loss_options), p.rpo_alpha, avg)

    def __call__(self, logps: Tensor, ref: Tensor | None, lengths: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-pair losses [b] from summed policy log-probs [2b], reference [b, 2] (or None), lengths [2b]."""
        b = logps.shape[0] // 2
        lengths = lengths.clamp(min=1).to(logps.device, logps.dtype)  # where the policy's log-probs are
        pol = logps / lengths if self.average else logps
        rc = rr = None
        if ref is not None:
            r = ref.T.reshape(-1).to(logps.device, logps.dtype)  # [2b]: chosen rows then rejected rows
            r = r / lengths if self.average else r
            rc, rr = r[:b], r[b:]
        losses, metrics = preference_loss(pol[:b], pol[b:], rc, rr, loss_type=self.loss_type, beta=self.beta,
                                          **self.options)
        nll = -(logps[:b] / lengths[:b])  # per-token NLL of each chosen completion
        if self.rpo_alpha:
            losses = losses + self.rpo_alpha * nll
        metrics.update({"logps/chosen": logps[:b].detach().mean(), "logps/rejected": logps[b:].detach().mean(),
                        "nll/chosen": nll.detach().mean()})
        return losses, metrics


def pair_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, batch: PairBatch,
              ref: Tensor | None, objective: PairObjective, micro_pairs: int, grad_clip: float,
              ) -> tuple[bool, dict[str, float]]:
    """One optimizer step on ``batch``: the mean per-pair loss, gradients accumulated over micro-batches of
    ``micro_pairs`` pairs (the sum of the micro-batch losses is exactly the batch mean). A non-finite loss
    or gradient norm skips the step (gradients dropped, optimizer and scheduler untouched)."""
    optimizer.zero_grad(set_to_none=True)
    B = batch.num_pairs
    size = micro_pairs if micro_pairs > 0 else B
    n_all = global_counts(float(B), 0.0)[0]  # under torchrun: the pairs of every rank (each holds a share)
    total, sums = 0.0, {}
    for s in range(0, B, size):
        idx = torch.arange(s, min(s + size, B))
        sub = batch.select(idx)
        losses, metrics = objective(completion_logps(model, sub), None if ref is None else ref[idx],
                                    sub.completion_lengths)
        loss = losses.sum() / n_all
        if not all_finite(loss):  # on every rank: they skip together
            optimizer.zero_grad(set_to_none=True)
            return False, {"loss": float("nan")}
        loss.backward()
        total += float(loss.detach())
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(idx) / n_all
    ok, norm = clipped_step(optimizer, scheduler, grad_clip)
    out = {"loss": total, "grad_norm": norm}
    return ok, ({**sums, **out} if ok else out)


def pair_metrics(model: torch.nn.Module, batch: PairBatch, ref: Tensor | None, objective: PairObjective,
                 micro_pairs: int) -> dict[str, float]:
    """Held-out pair metrics (prefixed ``pairs/``): the loss, its reward metrics, and ``pairs/logp_accuracy``
    = fraction of pairs where the policy gives the chosen completion the higher summed log-prob."""
    logps = score_pairs(model, batch, micro_pairs)  # [N, 2]
    flat = logps.T.reshape(-1)
    losses, metrics = objective(flat, ref, batch.completion_lengths)
    out = {f"pairs/{k}": float(v) for k, v in metrics.items()}
    out["pairs/loss"] = float(losses.mean())
    out["pairs/logp_accuracy"] = float((logps[:, 0] > logps[:, 1]).float().mean())
    return out


# -- the loop -----------------------------------------------------------------------------------------------


class PairOrder:
    """Pair indices of each step: a stream of per-epoch seeded permutations, a pure function of the step."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "pref-order", epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # only the current epoch is kept
        return self._perms[epoch]

    def indices(self, step: int) -> Tensor:
        """Pairs of optimizer step ``step`` (1-based).  -> [batch_size]"""
        pos = range((step - 1) * self.batch_size, step * self.batch_size)
        return torch.stack([self._perm(i // self.n)[i % self.n] for i in pos])


def evaluate_all(run: RunParts, cfg: DPORoot, step: int, eval_b: PairBatch | None, ref_eval: Tensor | None,
                 objective: PairObjective) -> dict[str, float]:
    """Held-out task metrics (greedy accuracy, pass@k: when the task has test prompts) + pair metrics."""
    out: dict[str, float] = {}
    if run.test:
        out.update(evaluate_run(run, cfg, step))
    if eval_b is not None:
        out.update(pair_metrics(run.model, eval_b, ref_eval, objective, scoring_chunk(cfg)))
    return out


def train(cfg: DPORoot, resume: bool = False) -> dict[str, Any]:
    """Run offline preference optimisation as configured; returns the summary (also ``summary.json``)."""
    t0 = time.time()
    seed_everything(cfg.seed)
    run = build_run(cfg, resume)  # model (+ SFT warm start, LoRA), tokenizer, generator, task, prompts
    p, out = cfg.pref, Path(cfg.output_dir)
    train_pairs, eval_pairs, stats = load_pairs(cfg, run)

    def encode(pairs: list[PreferencePair]) -> PairBatch:
        return encode_pairs(run.tokenizer, pairs, max_length=p.max_length, max_prompt_length=p.max_prompt_length,
                            chat_template=cfg.model.chat_template)

    train_b = encode(train_pairs)
    eval_b = encode(eval_pairs) if eval_pairs else None
    n = len(train_pairs)
    steps = math.ceil(p.epochs * n / p.batch_size) if p.epochs > 0 else cfg.steps
    cfg = dataclasses.replace(cfg, steps=steps)
    objective = PairObjective.from_config(cfg)
    # reference: scored by the starting policy, before any update or checkpoint load
    ref_train = ref_eval = None
    ref_model, ref_ctx = None, None
    if p.loss_type not in REFERENCE_FREE:
        if p.precompute_ref_logps:
            ref_train, ref_eval = reference_scores(run, cfg, train_b, eval_b)
        else:
            ref_model, ref_ctx = reference_policy(run.model, cfg.model.lora.enabled,
                                                  device=cfg.model.reference_device)
        if ref_model is not None and eval_b is not None:
            ref_eval = score_pairs(ref_model, eval_b, scoring_chunk(cfg), ref_ctx)
    o = cfg.optim
    dp = DataParallel(run.model)  # torchrun: FSDP2 trainer (dp.policy) + full replica (run.model); else as is
    policy = dp.policy
    auto = AutoMicroBatch(policy, o.memory_budget_gb, micro_batch_size=p.micro_batch_size,  # 0: from the budget
                          reference=ref_model is not None and ref_model is not run.model)
    optimizer = build_optimizer(policy.parameters(), o.lr, o.weight_decay, o.betas, o.eps)
    scheduler = build_scheduler(optimizer, o.warmup_steps, steps, o.schedule)
    order, bad = PairOrder(n, p.batch_size, cfg.seed), BadSteps(o.max_bad_steps, checkpoints=out / "checkpoints")
    state = resume_state(out, resume, policy, optimizer, scheduler, config=to_dict(cfg))
    dp.sync()  # the replica gets the resumed weights
    start, bad.count = (state["step"], state["bad_steps"]) if state is not None else (0, 0)
    log, run.before = open_log(out, state, lambda: evaluate_all(run, cfg, 0, eval_b, ref_eval, objective), cfg)
    saves = Checkpoints(lambda step: save_checkpoint(out / "checkpoints", step, policy, optimizer, scheduler,
                                                     keep=cfg.keep_checkpoints, config=to_dict(cfg),
                                                     state={"bad_steps": bad.count, "rng": rng_state()}),
                        cfg.save_every, cfg.save_minutes, steps)
    bar = progress_bar(steps, "dpo", enabled=cfg.progress and dp.main, initial=start)
    for step in saves.steps(start):  # after each: checkpoint if due; RunInterrupted after a SIGINT/SIGTERM
        t_step = time.time()
        idx = dp.share(order.indices(step), "pref.batch_size")  # torchrun: this rank's share of the pairs
        batch = train_b.select(idx)
        if ref_model is not None:
            ref = score_pairs(ref_model, batch, p.micro_batch_size, ref_ctx)
        else:
            ref = None if ref_train is None else ref_train[idx]
        micro = dp.agree(auto.pairs(batch))  # pref.micro_batch_size, or the most pairs that fit the budget
        ok, upd = pair_step(policy, optimizer, scheduler, batch, ref, objective, micro, o.grad_clip)
        bad(ok, step, upd)  # skipped: warns; TrainingAborted after optim.max_bad_steps in a row
        dp.sync()  # torchrun: the trainer's weights into the replica (evaluation, final model)
        rec = log.log(step, dp.reduce({**upd, "lr": scheduler.get_last_lr()[0], "epoch": step * p.batch_size / n,
                                       "truncated": float(batch.truncated.float().mean()),
                                       "time/step": time.time() - t_step, **auto.metrics()},
                                      summed=frozenset(upd) - {"grad_norm"}))
        if eval_due(step, cfg.eval.every, steps) and dp.main:
            run.last_eval = log.log(step, evaluate_all(run, cfg, step, eval_b, ref_eval, objective), kind="eval")
        if dp.main:
            _show(bar, step, rec, cfg.log_every)
    if bar is not None:
        bar.close()
    if not dp.main:  # torchrun: rank 0 evaluates and writes final_model and summary.json
        log.close()
        return {"steps": steps}
    after = log.once(steps, "eval", lambda: evaluate_all(run, cfg, steps, eval_b, ref_eval, objective))
    log.close()
    save_final(run, cfg)
    summary = {
        "trainer": "dpo",
        "loss_type": p.loss_type,
        "accuracy_before": run.before.get("accuracy"),
        "accuracy_after": after.get("accuracy"),
        "pair_accuracy_before": run.before.get("pairs/rewards/accuracies"),
        "pair_accuracy_after": after.get("pairs/rewards/accuracies"),
        "wall_seconds": time.time() - t0,
        "sft_seconds": run.sft_seconds,
        "steps": steps,
        "pairs": {"train": n, "eval": len(eval_pairs), "train_truncated": int(train_b.truncated.view(2, -1).any(0).sum()),
                  **stats},
        "before": run.before,
        "after": after,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _show(bar: Any, step: int, rec: dict[str, Any], every: int) -> None:
    acc = rec.get("rewards/accuracies", float("nan"))
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{float(rec.get('loss', 'nan')):.4f}", acc=f"{float(acc):.2f}")
    elif every and step % every == 0:
        print(f"step {step}: loss {float(rec.get('loss', 'nan')):.4f} reward_acc {float(acc):.3f} "
              f"margin {float(rec.get('rewards/margins', 'nan')):.3f}", file=sys.stderr)


__all__ = ["PairObjective", "PairOrder", "load_pairs", "pair_step", "score_pairs", "task_pairs", "train"]
