"""The RL loop: collect → reward → advantage → epochs × minibatches → step → log / eval / checkpoint."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmrl.algos import ADVANTAGES, KLController, kl_estimate, sequence_kl, token_rewards
from llmrl.algos.advantages import needs_turns, turn_index
from llmrl.algos.rollout_correction import correction_weights, mismatch_metrics
from llmrl.algos.turn_rewards import turn_token_rewards
from llmrl.core.config import to_dict
from llmrl.core.errors import ConfigError
from llmrl.core.seed import derive_seed, rng_state, seed_everything
from llmrl.core.types import Batch
from llmrl.rl.baselines import GreedyBaseline, build_baseline
from llmrl.rl.critic import build_critic
from llmrl.rl.rewarding import SequenceRewards
from llmrl.rl.rollouts import build_rollout_source
from llmrl.rollout.base import sync_weights
from llmrl.train.checkpoint import save_checkpoint
from llmrl.train.collect import DataStream
from llmrl.train.distributed import DataParallel
from llmrl.train.guard import BadSteps, Checkpoints, eval_due, open_log, resume_state
from llmrl.train.memory import AutoMicroBatch
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.run import RunParts, build_collector, build_run, evaluate_run, finish_run, sampling_params
from llmrl.train.update import LossSpec, optimizer_step, sequence_logprobs

if TYPE_CHECKING:
    from llmrl.config import Config


class _FirstForward:
    """``LossSpec.probe`` of a step run with the sampler's log-probs as the old ones (no recompute): keeps the
    trainer's log-probs of the first minibatch, computed by its forward before the optimizer steps, i.e. under
    the sampling-time policy, next to the sampler's (``mb.old_logprobs``); later calls are ignored."""

    def __init__(self) -> None:
        self.open = True
        self.seen: tuple[list[torch.Tensor], ...] = ([], [], [])  # trainer, sampler log-probs, mask

    def __call__(self, mb: Batch, logprobs: torch.Tensor) -> None:
        if self.open:
            keep = mb.mask > 0
            for acc, t in zip(self.seen, (logprobs, mb.old_logprobs, mb.mask), strict=True):
                acc.append(t[keep])

    def close(self, threshold: float) -> dict[str, torch.Tensor]:
        """Stop recording; the mismatch metrics of what was seen (flattened valid tokens)."""
        self.open = False
        trainer, sampler, mask = (torch.cat(acc) for acc in self.seen)
        return mismatch_metrics(trainer, sampler, mask, threshold)


def train(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """Run RL as configured; returns the summary (also written to ``<output_dir>/summary.json``)."""
    if cfg.rollout.agents.count and not cfg.rollout.agents.shared:  # separate policies: their own small trainer
        from llmrl.rl.agents_loop import train_separate

        return train_separate(cfg, resume)
    t0 = time.time()
    seed_everything(cfg.seed)
    run: RunParts = build_run(cfg, resume, cfg.algo.kl_coef)  # model, reference, generator, task, data, SFT
    a, o, out = cfg.algo, cfg.optim, Path(cfg.output_dir)
    dp = DataParallel(run.model)  # torchrun: FSDP2 trainer (dp.policy) + rollout replica (run.model); else as is
    policy, run.show_progress = dp.policy, run.show_progress and dp.main
    critic, scorer = build_critic(run.model, cfg, policy), SequenceRewards(cfg, run)  # both copy the initial policy
    warm = cfg.critic.warmup_steps if critic is not None else 0  # RL steps that train only the critic
    optimizer = build_optimizer([*policy.parameters(), *(critic.joint_parameters() if critic else [])],
                                o.lr, o.weight_decay, o.betas, o.eps)
    scheduler = build_scheduler(optimizer, o.warmup_steps, max(cfg.steps - warm, 0) * a.epochs * a.minibatches,
                                o.schedule)
    data = DataStream(run.train, cfg.seed)
    collect = build_collector(run, cfg, data, a.reward_failure_value)  # groups of completions, scored
    baseline = build_baseline(cfg, run)  # what the estimator subtracts (remax: greedy reward, ...), or None
    if cfg.rollout.agents.count and (scorer.active or isinstance(baseline, GreedyBaseline)):
        raise ConfigError("rollout.agents: the MAPoRL per-round rewards do not combine with a reward model, length "
                          f"penalty, reward shaping or the {a.advantage} baseline")
    collect = dp.shard_collector(collect, cfg.rollout.prompts_per_step)  # this rank's share of the prompt groups
    kl_ctl = KLController(a.kl_coef, a.kl_target, a.kl_horizon)  # β of the KL penalty: fixed or adaptive
    stateful = {"baseline": baseline, "kl_ctl": kl_ctl, "rewards": scorer, **({"critic": critic} if critic else {})}
    extra = {"critic": critic.module()} if critic is not None and not critic.frozen else {}
    sharded = critic.checkpoint_optimizer() if critic is not None else {}  # torchrun: the critic's AdamW, in DCP
    bad = BadSteps(o.max_bad_steps, checkpoints=out / "checkpoints")
    auto_micro = AutoMicroBatch(policy, o.memory_budget_gb, micro_batch_size=a.micro_batch_size,  # the trainer
                                reference=run.ref is not None and run.ref is not run.model,  # 0: from the budget
                                extra_bytes=critic.memory_bytes() if critic is not None else 0)
    saved = critic.checkpoint_model(policy) if critic is not None else policy  # + a shared head under torchrun
    state = resume_state(out, resume, saved, optimizer, scheduler, extra, config=to_dict(cfg),
                         extra_optimizers=sharded)
    if state is not None:
        data.position, bad.count = state["data_position"], state["bad_steps"]
        for key in stateful.keys() & state.keys():
            stateful[key].load_state_dict(state[key])
        dp.sync()  # the rollout replica gets the resumed weights
    # where batches come from: in-process now (default), Ray rollout workers, one step ahead (rollout.async)
    rollouts = build_rollout_source(cfg, run, collect, data, lambda step: sampling_params(
        cfg, seed=derive_seed(cfg.seed, "rollout", step)), dp.distributed)
    log, run.before = open_log(out, state, lambda: evaluate_run(run, cfg, step=0), cfg)

    def checkpoint(step: int) -> Path:
        return save_checkpoint(out / "checkpoints", step, saved, optimizer, scheduler, keep=cfg.keep_checkpoints,
                               state={"data_position": rollouts.data_position, "bad_steps": bad.count, "rng": rng_state(),
                                      **{k: obj.state_dict() for k, obj in stateful.items()}},
                               extra_models=extra, config=to_dict(cfg), extra_optimizers=sharded)

    saves = Checkpoints(checkpoint, cfg.save_every, cfg.save_minutes, cfg.steps)  # + on SIGINT/SIGTERM
    spec = LossSpec(loss=a.loss, loss_options=a.loss_options, agg=a.loss_agg,
                    agg_constant=a.agg_constant or float(cfg.rollout.max_new_tokens),
                    temperature=cfg.rollout.temperature, kl_estimator=a.kl_estimator, entropy_coef=a.entropy_coef,
                    aux=critic.policy_aux if critic is not None and critic.shared else None)
    start = state["step"] if state is not None else 0
    bar = run.progress(cfg.steps, start)
    for step in saves.steps(start):  # after each: checkpoint if due; RunInterrupted after a SIGINT/SIGTERM
        t_step = time.time()
        # 1. generate groups of completions and score them (task reward / reward model → length pen. → shaping)
        ro = rollouts.next(step)
        batch = Batch.collate(ro.episodes, run.pad_id)
        if cfg.rollout.overlong_filter:
            batch.mask[torch.tensor([e.truncated for e in ro.episodes])] = 0.0
        batch.scores, score_metrics = scorer(ro.episodes, step)
        micro = dp.agree(auto_micro(batch))  # algo.micro_batch_size, or the largest that fits optim.memory_budget_gb
        scoring = dp.agree(auto_micro.scoring(batch))  # no-grad forwards: usually the whole batch
        if critic is not None:
            critic.follow(micro)  # critic.micro_batch_size 0: the same plan (its memory is in the budget's floor)
        t_gen = time.time()
        # 2. old log-probs (the sampler's unless asked to recompute), the reference's, the critic's values
        #    and the sampler/trainer mismatch Δ (both at the sampling temperature) with its TIS / MIS weights
        rc, rollout_lp, mismatch = a.rollout_correction, batch.old_logprobs, {}
        if a.recompute_logprobs:
            batch.old_logprobs = sequence_logprobs(policy, batch, cfg.rollout.temperature, scoring)
            batch.loss_weights, corr = correction_weights(batch.old_logprobs, rollout_lp, batch.mask, rc.mode,
                                                          cap=rc.cap, lower=rc.lower, keep=rc.keep)  # none: None
            mismatch = {**mismatch_metrics(batch.old_logprobs, rollout_lp, batch.mask, rc.threshold), **corr}
        if run.ref is not None:
            batch.ref_logprobs = sequence_logprobs(run.ref, batch, cfg.rollout.temperature, scoring,
                                                   run.ref_context)
        batch.values = critic.values(batch) if critic is not None else None  # [B, T]
        # 3. advantages: token rewards (score on the last token, KL penalty β = kl_ctl.value) → registered estimator
        kl = kl_estimate(batch.old_logprobs, batch.ref_logprobs, a.kl_estimator) if run.ref is not None else None
        beta = kl_ctl.value  # β of this step: in the reward (kl_in_reward) or as a loss term
        if any("turn_rewards" in e.metadata for e in ro.episodes):  # per-turn rewards (environments,
            # rollout.agents) on each turn's last token; an episode without them: its score on its last turn
            # (the score's change by a length penalty / shaping, score − Σ turn rewards, goes to the last turn)
            per_turn = [[*t[:-1], t[-1] + float(sc) - sum(t)] if (t := e.metadata.get("turn_rewards"))
                        else [0.0] * (len(e.turn_spans) - 1) + [float(sc)]
                        for e, sc in zip(ro.episodes, batch.scores.tolist(), strict=True)]
            rewards = turn_token_rewards([[r * a.sequence_reward for r in t] for t in per_turn],
                                         [e.turn_spans for e in ro.episodes], batch.mask, kl, beta * a.kl_in_reward)
        else:
            rewards = token_rewards(batch.scores * a.sequence_reward, batch.mask, kl, beta * a.kl_in_reward)  # [B, T]
        estimator = ADVANTAGES.get(a.advantage)  # turn-level ones also get each token's policy turn
        turns = {"turn_ids": turn_index([e.turn_spans for e in ro.episodes], batch.mask)} if needs_turns(estimator) else {}
        with dp.whole_batch():  # torchrun: batch whitening (gae, reinforce_pp) over every rank's share
            batch.advantages = estimator(rewards, batch.mask, group_ids=batch.group_ids,
                                         baseline=baseline(rewards, batch, ro.episodes, step), **turns, **a.advantage_options)
        if critic is not None:
            batch.returns = critic.targets(rewards, batch)  # GAE returns: the value targets
            with dp.whole_batch():  # torchrun: token means over every rank
                score_metrics.update(critic.batch_metrics(batch))
        if kl is not None:
            kl_ctl.update(dp.mean(float(sequence_kl(kl, batch.mask))), int(dp.total(batch.size)))
        t_score = time.time()
        # 4. update: epochs × shuffled minibatches, each one optimizer step (micro-batched)
        #    (without recompute, Δ is measured by the first minibatch's forward: the probe)
        probe = _FirstForward() if not a.recompute_logprobs and step > warm else None
        step_spec = replace(spec, kl_coef=0.0 if a.kl_in_reward else beta, probe=probe)  # KL as a loss term, or not
        upd_sum: dict[str, float] = {}
        for epoch in range(a.epochs):
            order = torch.randperm(batch.size, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, step, epoch)))
            for idx in order.chunk(a.minibatches):
                mb = batch.select(idx)
                upd = critic.update(mb, policy_step=step > warm) if critic is not None else {}
                ok, pol = (optimizer_step(policy, optimizer, scheduler, mb, step_spec, micro,
                                          o.grad_clip) if step > warm else (True, {}))
                if probe is not None and probe.open:  # the first minibatch only: its forward was under π_old
                    mismatch = probe.close(rc.threshold)
                upd.update(pol)
                for k, v in upd.items():  # metrics of the step's optimizer updates, averaged
                    upd_sum[k] = upd_sum.get(k, 0.0) + v / (a.epochs * a.minibatches)
                bad(ok, step, upd)  # skipped: warns; TrainingAborted after optim.max_bad_steps in a row
        optimizer.zero_grad(set_to_none=True)  # the gradients' memory back for the next generation and scoring
        if step > warm:
            dp.sync()  # torchrun: the trainer's weights into the rollout replica
            sync_weights(run.generator, run.model)  # backends with their own copy of the weights (vllm)
            rollouts.updated()  # Ray workers / the async copy get the new weights before their next batch
        # 5. log, evaluate, checkpoint
        t_end = time.time()
        rec = log.log(step, dp.reduce({**ro.metrics, **score_metrics, **upd_sum, **mismatch, **auto_micro.metrics(), "kl_coef": beta,
                             "lr": scheduler.get_last_lr()[0], "time/generate": t_gen - t_step,
                             "time/score": t_score - t_gen, "time/update": t_end - t_score},
                                      summed=frozenset(upd_sum) - {"grad_norm", "critic/grad_norm",
                                                                   "critic/skipped"}))  # torchrun: over the ranks
        if eval_due(step, cfg.eval.every, cfg.steps):
            run.last_eval = log.log(step, evaluate_run(run, cfg, step), kind="eval")
        run.show(bar, step, rec, cfg.log_every)
    rollouts.close()
    if bar is not None:
        bar.close()
    if critic is not None and not critic.frozen:
        critic.save(out / "critic_model", run.tokenizer)
    return finish_run(run, cfg, log, t0)
