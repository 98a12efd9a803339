"""Reward-model training (``trainer: reward_model``): a scalar head on a causal LM fit to preference pairs.

Loss per pair (r = the model's scalar at the last token of prompt + completion + EOS):

    ℓ = −log σ(r_c − r_r) + reg_coef·(r_c² + r_r²)

(Bradley-Terry; ``rm.reg_coef`` > 0 is PAR's "Reg" variant, arXiv:2502.18770). Pairs come from a file, from a
verifiable task (chosen = the task's demonstration, rejected = its ``wrong_demonstration``, skipped where
that happens to be right) or from distillation (:mod:`llmrl.preference.distill`, arXiv:2502.19557).

Label privacy (AUP-RLHF, arXiv:2502.17515; mechanisms in :mod:`llmrl.algos.privacy`), ``rm.privacy.mechanism``:

* ``randomized_response``: each training label is flipped (the pair's completions swapped) with
  probability ρ = 1/(1+e^ε′), ε′ = ε/m where m is the largest number of pairs of one user (so each user is
  ε-DP by composition; m = 1 without a users column), once, before training and with a seeded RNG (it
  simulates users privatising their own labels). The loss is the debiased BT loss (``debias: true``).
* ``user_dp``: each step Poisson-samples users with rate q = users_per_step/users; per sampled user the
  gradient of their mean loss over all their pairs is clipped to ``clip``; the sum gets Gaussian noise
  σ·clip and is divided by q·users. σ is calibrated so the whole run is (ε, δ)-DP at user level under the
  chosen accountant (or set by ``noise_multiplier``; then the ε spent is reported). ``optim.grad_clip`` is
  not applied on top (the per-user clip bounds every update). Without a users column each pair is a user.

Evaluation: pairwise accuracy (r_c > r_r; ties ½), mean margin and loss on held-out pairs before and after
training (and every ``eval.every`` steps); with user ids, the personalised metrics of
:mod:`llmrl.preference.personal` (minority users from the agreement over train + held-out pairs, before any
privatisation). The model is saved to ``<output_dir>/reward_model`` (usable as a reward with
:func:`llmrl.rewards.reward_model.reward_model_reward`). The top-level ``steps`` is not used: the run
lasts ``rm.epochs`` (capped by ``rm.max_steps``). ``sft`` applies only to ``source: distill`` (the student
warm-up).

Under torchrun (``llmrl train --nproc N``) the reward model is an FSDP2 trainer beside a full replica: each
rank scores its contiguous share of every batch of pairs (``rm.batch_size`` must split evenly), the loss is
each rank's sum over the batch size, so the summed gradients are one process's, and rank 0 evaluates the
synced replica and writes ``reward_model``. ``user_dp`` (per-user clipping and noise over the whole step) and
``source: distill`` (pairs sampled by the student) stay single-process (one-line errors).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from llmrl.algos.privacy import (
    PrivacyAccountant,
    UserGradientSum,
    calibrate_noise_multiplier,
    randomized_response,
    rr_debiased_bt_loss,
    rr_flip_probability,
    rr_label_epsilon,
)
from llmrl.core.config import ConfigError, to_dict
from llmrl.core.progress import progress_bar
from llmrl.core.seed import derive_seed, rng_state, seed_everything
from llmrl.models.loading import eval_mode
from llmrl.models.value_head import HEAD_WEIGHTS, ScalarHeadModel, load_scalar_model, scalar_model_from_policy
from llmrl.preference.personal import (
    condition_on_user,
    pair_accuracy,
    personal_metrics,
    user_agreement,
    user_of,
)
from llmrl.rewards.reward_model import RM_META
from llmrl.tasks.preference import PreferencePair, read_preference_pairs, task_pairs
from llmrl.train.checkpoint import save_checkpoint
from llmrl.train.distributed import DataParallel, all_finite, world
from llmrl.train.guard import BadSteps, Checkpoints, eval_due, open_log, resume_state
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.pairs import PairBatch, encode_pairs
from llmrl.train.rundir import apply_threads, atomic_dir

if TYPE_CHECKING:
    from llmrl.preference.config import RewardModelRoot
    from llmrl.tasks.base import Task


def rm_pair_losses(r_chosen: Tensor, r_rejected: Tensor, *, reg_coef: float = 0.0, flip_prob: float = 0.0) -> Tensor:
    """Per-pair loss ``[B]``: −log σ(r_c − r_r) (debiased for randomized-response labels flipped with
    probability ``flip_prob``, :func:`llmrl.algos.privacy.rr_debiased_bt_loss`) + reg_coef·(r_c² + r_r²)."""
    margins = r_chosen - r_rejected
    loss = rr_debiased_bt_loss(margins, torch.ones_like(margins), flip_prob)
    return loss + reg_coef * (r_chosen**2 + r_rejected**2) if reg_coef else loss


def score_pair_batch(model: ScalarHeadModel, batch: PairBatch) -> tuple[Tensor, Tensor]:
    """(r_chosen [B], r_rejected [B]) of a :class:`PairBatch` (gradients flow when enabled)."""
    dev = next(model.parameters()).device
    s = model.score(batch.input_ids.to(dev), batch.attention_mask.to(dev))
    return s[: batch.num_pairs], s[batch.num_pairs :]


def _encode(cfg: RewardModelRoot, tok: Any, pairs: list[PreferencePair]) -> PairBatch:
    return encode_pairs(tok, pairs, max_length=cfg.rm.max_length, max_prompt_length=cfg.rm.max_prompt_length,
                        chat_template=cfg.model.chat_template)


@torch.no_grad()
def evaluate_pairs(model: ScalarHeadModel, tok: Any, pairs: list[PreferencePair], cfg: RewardModelRoot,
                   agreement: dict[str, float | None] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """(scalar metrics: accuracy, margin, loss, pairs; personalised metrics or {} without user ids)."""
    rc: list[float] = []
    rr: list[float] = []
    with eval_mode(model):
        for s in range(0, len(pairs), cfg.rm.eval_batch_size):
            c, r = score_pair_batch(model, _encode(cfg, tok, pairs[s : s + cfg.rm.eval_batch_size]))
            rc += c.float().cpu().tolist()
            rr += r.float().cpu().tolist()
    acc = pair_accuracy(rc, rr)
    loss = rm_pair_losses(torch.tensor(rc), torch.tensor(rr), reg_coef=cfg.rm.reg_coef)
    out = {"accuracy": sum(acc) / len(acc), "margin": sum(c - r for c, r in zip(rc, rr)) / len(rc),
           "loss": float(loss.mean()), "pairs": float(len(pairs))}
    personal: dict[str, Any] = {}
    if any(user_of(p, cfg.rm.user_key) is not None for p in pairs):
        personal = personal_metrics(pairs, acc, agreement, cfg.rm.user_key)
        for k in ("mean_user_accuracy", "worst_user_accuracy", "minority_accuracy", "majority_accuracy"):
            if personal[k] is not None:
                out[k] = personal[k]
    return out, personal


def _read(cfg: RewardModelRoot, path: str) -> list[PreferencePair]:
    r = cfg.rm
    return read_preference_pairs(path, prompt_key=r.prompt_key, chosen_key=r.chosen_key, rejected_key=r.rejected_key)


def _distill(cfg: RewardModelRoot, policy: Any, tok: Any, task: Task, train: list, test: list) -> tuple[list, list, dict]:
    from llmrl.models.loading import load_model
    from llmrl.preference.distill import distill_pairs, sample_responses
    from llmrl.rewards.judge import judge_scores
    from llmrl.train.build import build_generator
    from llmrl.train.run import sampling_params, warm_start

    d = cfg.rm.distill
    if cfg.sft.steps > 0:
        warm_start(policy, tok, task, train, cfg)  # the student's SFT warm-up on teacher (task) demonstrations
    policy.eval()
    teacher = (load_model(d.teacher_path, dtype=cfg.model.dtype, device=next(policy.parameters()).device)
               if d.teacher_path else policy)
    gens = (build_generator(teacher, tok, cfg.rollout.backend), build_generator(policy, tok, cfg.rollout.backend))

    def judge(items: Any) -> list[float]:
        return judge_scores(teacher, tok, items, d.judge_category, max_tokens=cfg.rm.max_length)

    out, stats = [], {}
    for split, samples in (("train", train[: d.prompts]), ("test", test)):
        t, s = (sample_responses(g, tok, samples, n, sampling_params(cfg, seed=derive_seed(cfg.seed, split, who), n=1),
                                 cfg.model.chat_template)
                for g, n, who in zip(gens, (d.teacher_samples, d.student_samples), ("teacher", "student")))
        pairs, st = distill_pairs(task, samples, t, s, label=d.label, vote_over=d.vote_over, judge=judge,
                                  threshold=d.judge_threshold, max_pairs_per_prompt=d.max_pairs_per_prompt,
                                  seed=derive_seed(cfg.seed, split))
        out.append(pairs)
        stats[split] = st.as_dict()
    return out[0], out[1], stats


def build_models_and_pairs(cfg: RewardModelRoot) -> tuple[ScalarHeadModel, Any, list, list, dict[str, Any]]:
    """(reward model, tokenizer, train pairs, held-out pairs, info) for ``cfg``."""
    from llmrl.models.loading import load_tokenizer
    from llmrl.train.build import build_data, build_policy, build_task

    r, info = cfg.rm, {}
    if cfg.model.lora.enabled:
        raise ConfigError("model.lora.enabled: the reward_model trainer trains all weights (LoRA not supported)")
    path = cfg.model.path
    if path is not None and (Path(path) / HEAD_WEIGHTS).is_file():  # continue from a saved reward model
        policy, tok = None, load_tokenizer(path)
    else:
        policy, tok = build_policy(cfg)
    if r.source == "file":
        train = _read(cfg, r.train_file)  # type: ignore[arg-type]
        if r.test_file:
            test = _read(cfg, r.test_file)
        else:
            order = list(range(len(train)))
            random.Random(derive_seed(cfg.seed, "rm_split")).shuffle(order)
            k = max(1, len(train) // 10) if len(train) > 1 else 0
            test, train = [train[i] for i in order[:k]], [train[i] for i in order[k:]]
    else:
        task = build_task(cfg)
        samples_train, samples_test = build_data(cfg, task)
        if r.source == "task":
            train, test = task_pairs(task, samples_train, cfg.seed), task_pairs(task, samples_test, cfg.seed + 1)
        else:
            if policy is None:
                raise ConfigError("rm.source=distill: model.path must be a causal LM (the student), not a reward model")
            train, test, info["distill"] = _distill(cfg, policy, tok, task, samples_train, samples_test)
    if not train:
        raise ConfigError(f"rm.source={r.source}: no training pairs")
    if not test:
        raise ConfigError(f"rm.source={r.source}: no held-out pairs (set rm.test_file or use more data)")
    if policy is None:
        model = load_scalar_model(path, dtype=cfg.model.dtype)  # type: ignore[arg-type]
    else:
        model = scalar_model_from_policy(policy, share=True, seed=cfg.seed)
    return model, tok, train, test, info


def _users(pairs: list[PreferencePair], key: str) -> list[int]:
    """User index per pair (a pair without a user is its own user)."""
    ids: dict[str, int] = {}
    return [ids.setdefault(u if u is not None else f"\0pair{i}", len(ids)) for i, u in
            enumerate(user_of(p, key) for p in pairs)]


def privatise_labels(pairs: list[PreferencePair], users: list[int], epsilon: float, seed: int,
                     ) -> tuple[list[PreferencePair], float, dict[str, float]]:
    """Randomized response on the labels (flipped pair = chosen/rejected swapped): (pairs, ρ, info)."""
    m = max(users.count(u) for u in set(users))
    eps_label = rr_label_epsilon(epsilon, m)
    _, flipped = randomized_response(torch.ones(len(pairs), dtype=torch.long), eps_label,
                                     torch.Generator().manual_seed(derive_seed(seed, "rr")))
    out = [dataclasses.replace(p, chosen=p.rejected, rejected=p.chosen) if f else p for p, f in zip(pairs, flipped)]
    rho = rr_flip_probability(eps_label)
    return out, rho, {"epsilon_user": epsilon, "epsilon_label": eps_label, "max_pairs_per_user": m, "flip_prob": rho,
                      "flipped_fraction": float(flipped.float().mean())}


def save_reward_model(model: ScalarHeadModel, tok: Any, path: Path, meta: dict[str, Any]) -> Path:
    """Atomic save (temporary directory + rename) with ``reward_model.json`` next to the weights."""
    with atomic_dir(path) as tmp:
        model.save(tmp, tok)
        (tmp / RM_META).write_text(json.dumps(meta, indent=2))
    return path


def _dp_step(model: ScalarHeadModel, params: list[Tensor], cfg: RewardModelRoot, tok: Any, train: list[PreferencePair],
             by_user: list[list[int]], q: float, sigma: float, gen: torch.Generator) -> dict[str, float]:
    """One user-level DP step: per-user mean-loss gradients, clipped, summed, noised, into ``.grad``."""
    r, p = cfg.rm, cfg.rm.privacy
    acc = UserGradientSum(p.clip, sigma)
    picked = (torch.rand(len(by_user), generator=gen) < q).nonzero().flatten().tolist()
    losses, skipped = [], 0
    for u in picked:
        idx = by_user[u]
        model.zero_grad(set_to_none=True)
        total = 0.0
        for s in range(0, len(idx), r.batch_size):
            c, rj = score_pair_batch(model, _encode(cfg, tok, [train[i] for i in idx[s : s + r.batch_size]]))
            loss = rm_pair_losses(c, rj, reg_coef=r.reg_coef).sum() / len(idx)
            loss.backward()
            total += float(loss.detach())
        grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in params]
        if not math.isfinite(total) or not all(bool(torch.isfinite(g).all()) for g in grads):
            skipped += 1  # contributes nothing (still within the per-user bound)
            continue
        acc.add(grads)
        losses.append(total)
    noisy = acc.release(like=params, generator=gen)
    for x, g in zip(params, noisy):
        x.grad = g / (q * len(by_user))
    return {"loss": sum(losses) / max(len(losses), 1), "users": float(len(picked)),
            "clipped_fraction": acc.clipped / max(acc.users, 1), "skipped_users": float(skipped)}


def train(cfg: RewardModelRoot, resume: bool = False) -> dict[str, Any]:
    """Train a reward model as configured; returns the summary (also ``<output_dir>/summary.json``)."""
    t0, r, pv = time.time(), cfg.rm, cfg.rm.privacy
    out = Path(cfg.output_dir)
    apply_threads(cfg)
    seed_everything(cfg.seed)
    if world() is not None and (pv.mechanism == "user_dp" or r.source == "distill"):
        what = "rm.privacy.mechanism=user_dp" if pv.mechanism == "user_dp" else "rm.source=distill"
        raise ConfigError(f"{what}: not supported under torchrun; run the reward_model trainer in one process")
    model, tok, train_raw, test, info = build_models_and_pairs(cfg)
    par = DataParallel(model)  # torchrun: an FSDP2 trainer (par.policy) beside the replica (model); else as is
    trainer = par.policy
    agreement = user_agreement(train_raw + test, r.user_key) if any(
        user_of(x, r.user_key) is not None for x in test) else None
    users = _users(train_raw, r.user_key)
    train, rho, privacy = train_raw, 0.0, {"mechanism": pv.mechanism}
    if pv.mechanism == "randomized_response":
        train, rho, rr_info = privatise_labels(train_raw, users, pv.epsilon, cfg.seed)
        privacy.update(rr_info)
        rho = rho if pv.debias else 0.0
    if r.user_conditioned:
        train, test = condition_on_user(train, r.user_key), condition_on_user(test, r.user_key)
    params = [x for x in trainer.parameters() if x.requires_grad]
    by_user: list[list[int]] = [[] for _ in range(max(users) + 1)]
    for i, u in enumerate(users):
        by_user[u].append(i)
    if pv.mechanism == "user_dp":
        q = min(1.0, pv.users_per_step / len(by_user))
        total = math.ceil(r.epochs / q)
    else:
        q, per_epoch = 1.0, math.ceil(len(train) / r.batch_size)
        total = math.ceil(r.epochs * per_epoch)
    total = min(total, r.max_steps) if r.max_steps else total
    sigma, accountant = 0.0, None
    if pv.mechanism == "user_dp":
        sigma = pv.noise_multiplier or calibrate_noise_multiplier(pv.epsilon, pv.delta, total, q, pv.accountant)
        accountant = PrivacyAccountant(sigma, q, pv.delta, pv.accountant)
        print(f"privacy: noise multiplier {sigma:.4g} (noise std {sigma * pv.clip:.4g}) for {total} steps over "
              f"{len(by_user)} users at sampling rate {q:.4g}", file=sys.stderr)
    optimizer = build_optimizer(params, r.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.eps)
    scheduler = build_scheduler(optimizer, cfg.optim.warmup_steps, total, cfg.optim.schedule)
    bad = BadSteps(cfg.optim.max_bad_steps, checkpoints=out / "checkpoints", warn=False)
    state = resume_state(out, resume, trainer, optimizer, scheduler, config=to_dict(cfg))
    par.sync()  # torchrun: the replica gets the resumed (or initial) weights
    start, bad.count = (state["step"], state["bad_steps"]) if state is not None else (0, 0)
    if state is not None and accountant is not None:
        accountant.load_state_dict(state["accountant"])
    log, before = open_log(out, state, lambda: evaluate_pairs(model, tok, test, cfg, agreement)[0], cfg)
    saves = Checkpoints(lambda step: save_checkpoint(
        out / "checkpoints", step, trainer, optimizer, scheduler, keep=cfg.keep_checkpoints, config=to_dict(cfg),
        state={"bad_steps": bad.count, "rng": rng_state(), "accountant": accountant.state_dict() if accountant else None}),
        cfg.save_every, cfg.save_minutes, total)
    trainer.train()
    bar = progress_bar(total, "reward model", enabled=cfg.progress and par.main, initial=start)
    for step in saves.steps(start):  # after each: checkpoint if due; RunInterrupted after a SIGINT/SIGTERM
        if accountant is not None:
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "dp", step))
            rec = _dp_step(model, params, cfg, tok, train, by_user, q, sigma, gen)
            ok = all(bool(torch.isfinite(x.grad).all()) for x in params if x.grad is not None)
        else:
            epoch, k = divmod(step - 1, per_epoch)
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "rm", epoch)))
            idx = order[k * r.batch_size :][: r.batch_size].tolist()
            c, rj = score_pair_batch(trainer, _encode(cfg, tok, [train[i] for i in par.share(idx, "rm.batch_size")]))
            n = len(idx)  # the whole batch (every rank's share): each rank's sum / n sums to the batch mean
            loss = rm_pair_losses(c, rj, reg_coef=r.reg_coef, flip_prob=rho).sum() / n
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf"))
            ok = all_finite(loss) and bool(torch.isfinite(gn))  # under torchrun: every rank agrees
            rec = {"loss": par.total(float(loss.detach())), "accuracy": par.total(float((c > rj).float().sum())) / n,
                   "grad_norm": float(gn)}
        if ok:
            optimizer.step()
            scheduler.step()
        else:
            optimizer.zero_grad(set_to_none=True)
        bad(ok, step)  # TrainingAborted after optim.max_bad_steps skipped updates in a row
        if accountant is not None:
            accountant.step()  # the noisy release happened whether or not the update was applied
            rec["epsilon_spent"] = accountant.spent().epsilon
        log.log(step, {**rec, "lr": scheduler.get_last_lr()[0]})
        if eval_due(step, cfg.eval.every, total):
            par.sync()  # torchrun: the replica gets the trainer's weights; rank 0 evaluates it
            if par.main:
                log.log(step, evaluate_pairs(model, tok, test, cfg, agreement)[0], kind="eval")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
        elif cfg.log_every and step % cfg.log_every == 0:
            print(f"step {step}/{total}: loss {rec['loss']:.4f}", file=sys.stderr)
    if bar is not None:
        bar.close()
    par.sync()
    if not par.main:  # torchrun: rank 0 evaluates and writes reward_model and summary.json
        log.close()
        return {}
    after, personal = evaluate_pairs(model, tok, test, cfg, agreement)
    log.once(total, "eval", lambda: after)
    log.close()
    if accountant is not None:
        budget = accountant.spent()
        privacy.update(budget.as_dict(), clip=pv.clip, users=len(by_user), target_epsilon=pv.epsilon)
        print(f"privacy: {budget}", file=sys.stderr)
    elif pv.mechanism == "randomized_response":
        print(f"privacy: randomized response, {privacy['epsilon_label']:.4g}-DP per label, "
              f"{pv.epsilon:.4g}-DP per user (flip probability {privacy['flip_prob']:.4g})", file=sys.stderr)
    meta = {"max_length": r.max_length, "max_prompt_length": r.max_prompt_length,
            "chat_template": cfg.model.chat_template, "user_conditioned": r.user_conditioned,
            "user_key": r.user_key, "source": r.source, "privacy": privacy}
    path = save_reward_model(model, tok, out / "reward_model", meta)
    summary = {"accuracy_before": before.get("accuracy"), "accuracy_after": after["accuracy"],
               "loss_before": before.get("loss"), "loss_after": after["loss"], "pairs_train": len(train),
               "pairs_test": len(test), "steps": total, "privacy": privacy, "personal": personal,
               "reward_model": str(path), "wall_seconds": time.time() - t0, "before": before, "after": after, **info}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["build_models_and_pairs", "evaluate_pairs", "privatise_labels", "rm_pair_losses", "save_reward_model",
           "score_pair_batch", "train"]
