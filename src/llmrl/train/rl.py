"""The RL loop: collect → reward → advantage → epochs × minibatches → step → log / eval / checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from llmrl.algos import ADVANTAGES, KLController, RunningMean, kl_estimate, sequence_kl, token_rewards
from llmrl.core.seed import derive_seed, rng_state, seed_everything, set_rng_state
from llmrl.core.types import Batch
from llmrl.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from llmrl.train.collect import DataStream, collect
from llmrl.train.config import Config
from llmrl.train.critic import build_critic
from llmrl.train.metrics import MetricsLogger, read_metrics
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.rewarding import SequenceRewards
from llmrl.train.setup import RunParts, build_run, evaluate_run, finish_run, remax_baseline, sampling_params
from llmrl.train.update import LossSpec, optimizer_step, sequence_logprobs


class TrainingAborted(RuntimeError):
    """Raised after ``optim.max_bad_steps`` consecutive non-finite steps; the last checkpoint is intact."""


def train(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """Run RL as configured; returns the summary (also written to ``<output_dir>/summary.json``)."""
    t0 = time.time()
    seed_everything(cfg.seed)
    run: RunParts = build_run(cfg, resume)  # model, reference, generator, task, data, optional SFT warm start
    a, out = cfg.algo, Path(cfg.output_dir)
    critic, scorer = build_critic(run.model, cfg), SequenceRewards(cfg, run)  # both copy the initial policy
    warm = cfg.critic.warmup_steps if critic is not None else 0  # RL steps that train only the critic
    opt_steps = max(cfg.steps - warm, 0) * a.epochs * a.minibatches
    optimizer = build_optimizer([*run.model.parameters(), *(critic.joint_parameters() if critic else [])],
                                cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.eps)
    scheduler = build_scheduler(optimizer, cfg.optim.warmup_steps, opt_steps, cfg.optim.schedule)
    data, baseline, start, bad = DataStream(run.train, cfg.seed), RunningMean(), 0, 0
    kl_ctl = KLController(a.kl_coef, a.kl_target, a.kl_horizon)  # β of the KL penalty: fixed or adaptive
    stateful = {"baseline": baseline, "kl_ctl": kl_ctl, "rewards": scorer, **({"critic": critic} if critic else {})}
    extra = {"critic": critic.module()} if critic is not None and not critic.frozen else {}
    ckpt = latest_checkpoint(out / "checkpoints") if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, run.model, optimizer, scheduler, extra)
        start, data.position, bad = state["step"], state["data_position"], state["bad_steps"]
        for key in stateful.keys() & state.keys():
            stateful[key].load_state_dict(state[key])
        set_rng_state(state["rng"])
    log = MetricsLogger(out, resume_step=start if ckpt is not None else None)
    if start == 0:
        run.before = log.log(0, evaluate_run(run, cfg, step=0), kind="eval")
    else:  # resumed: the "before" numbers are in the log already
        run.before = next((r for r in read_metrics(log.path, "eval") if r["step"] == 0), {})
    spec = LossSpec(a.loss, a.loss_options, a.loss_agg, a.agg_constant or float(cfg.rollout.max_new_tokens),
                    cfg.rollout.temperature, 0.0, a.kl_estimator, a.entropy_coef,
                    aux=critic.joint_loss if critic is not None and critic.shared else None)
    bar = run.progress(cfg.steps, start)
    for step in range(start + 1, cfg.steps + 1):
        t_step = time.time()
        # 1. collect: sample groups of completions and score them
        params = sampling_params(cfg, seed=derive_seed(cfg.seed, "rollout", step))
        ro = collect(run.generator, run.tokenizer, run.task, data, prompts=cfg.rollout.prompts_per_step,
                     params=params, chat_template=cfg.model.chat_template, failure_value=a.reward_failure_value,
                     dynamic_sampling=cfg.rollout.dynamic_sampling, max_rounds=cfg.rollout.max_sampling_rounds,
                     overlong_buffer=cfg.rollout.overlong_buffer, overlong_factor=cfg.rollout.overlong_penalty,
                     env=run.env, max_turns=run.max_turns)
        batch = Batch.collate(ro.episodes, run.pad_id)
        if cfg.rollout.overlong_filter:
            batch.mask[torch.tensor([e.truncated for e in ro.episodes])] = 0.0
        batch.scores, score_metrics = scorer(ro.episodes, step)  # task reward / reward model → length pen. → shaping
        t_gen = time.time()
        # 2. score: old log-probs (the sampler's unless asked to recompute), the reference's, the critic's values
        if a.recompute_logprobs:
            batch.old_logprobs = sequence_logprobs(run.model, batch, cfg.rollout.temperature, a.micro_batch_size)
        if run.ref is not None:
            batch.ref_logprobs = sequence_logprobs(run.ref, batch, cfg.rollout.temperature, a.micro_batch_size,
                                                   run.ref_context)
        batch.values = critic.values(batch) if critic is not None else None  # [B, T]
        # 3. advantages: token rewards (score on the last token, KL penalty β = kl_ctl.value) → registered estimator
        kl = kl_estimate(batch.old_logprobs, batch.ref_logprobs, a.kl_estimator) if run.ref is not None else None
        beta = kl_ctl.value  # β of this step: in the reward (kl_in_reward) or as a loss term
        spec.kl_coef = 0.0 if a.kl_in_reward else beta
        rewards = token_rewards(batch.scores * a.sequence_reward, batch.mask, kl, beta * a.kl_in_reward)  # [B, T]
        base = (remax_baseline(run, cfg, ro.episodes, step) if a.advantage == "remax"
                else baseline.update(rewards.sum(-1)) if a.advantage == "reinforce" else batch.values)
        batch.advantages = ADVANTAGES.get(a.advantage)(rewards, batch.mask, group_ids=batch.group_ids,
                                                       baseline=base, **a.advantage_options)
        if critic is not None:
            batch.returns = critic.targets(rewards, batch)  # GAE returns: the value targets
            score_metrics.update(critic.batch_metrics(batch))
        if kl is not None:
            kl_ctl.update(float(sequence_kl(kl, batch.mask)), batch.size)
        t_score = time.time()
        # 4. update: epochs × shuffled minibatches, each one optimizer step (micro-batched)
        upd_sum: dict[str, float] = {}
        for epoch in range(a.epochs):
            order = torch.randperm(batch.size, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, step, epoch)))
            for idx in order.chunk(a.minibatches):
                mb = batch.select(idx)
                upd = critic.update(mb, policy_step=step > warm) if critic is not None else {}
                ok, pol = (optimizer_step(run.model, optimizer, scheduler, mb, spec, a.micro_batch_size,
                                          cfg.optim.grad_clip) if step > warm else (True, {}))
                upd.update(pol)
                for k, v in upd.items():  # metrics of the step's optimizer updates, averaged
                    upd_sum[k] = upd_sum.get(k, 0.0) + v / (a.epochs * a.minibatches)
                bad = 0 if ok else bad + 1
                if not ok:
                    run.warn(f"step {step}: non-finite loss or gradient ({upd}); update skipped ({bad} in a row)")
                if bad >= cfg.optim.max_bad_steps:
                    raise TrainingAborted(f"{bad} consecutive non-finite updates at step {step}; "
                                          f"last good checkpoint: {latest_checkpoint(out / 'checkpoints')}")
        # 5. log, evaluate, checkpoint
        t_end = time.time()
        rec = log.log(step, {**ro.metrics, **score_metrics, **upd_sum, "kl_coef": beta,
                             "lr": scheduler.get_last_lr()[0], "time/generate": t_gen - t_step,
                             "time/score": t_score - t_gen, "time/update": t_end - t_score})
        if cfg.eval.every and step % cfg.eval.every == 0 and step != cfg.steps:
            run.last_eval = log.log(step, evaluate_run(run, cfg, step), kind="eval")
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
            save_checkpoint(out / "checkpoints", step, run.model, optimizer, scheduler, keep=cfg.keep_checkpoints,
                            state={"data_position": data.position, "bad_steps": bad, "rng": rng_state(),
                                   **{k: obj.state_dict() for k, obj in stateful.items()}}, extra_models=extra)
        run.show(bar, step, rec, cfg.log_every)
    if bar is not None:
        bar.close()
    if critic is not None and not critic.frozen:
        critic.save(out / "critic_model", run.tokenizer)
    return finish_run(run, cfg, log, t0)
