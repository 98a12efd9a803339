"""Separate policies for multi-agent discussions (``rollout.agents.shared: false``; docs/agents.md).

Every agent has its own policy (a copy of the warm-started model), its own critic, optimizer, scheduler and KL
controller; the KL reference is the warm-started model, shared. Each step: one batch of discussions, in which
each agent's turns are sampled by its own policy (one ``generate`` call per agent per round); then, agent by
agent, its episodes are scored (per-round MAPoRL rewards on each turn's last token), advantaged and trained
(``algo.epochs`` × ``algo.minibatches`` optimizer steps on its policy only). A small trainer: no resume, LoRA,
log-prob recomputation or reward shaping (one-line errors); metrics of agent a are logged as ``agent{a}/...``,
its final weights saved to ``<output_dir>/final_model_agent{a}``.

Under torchrun every agent's policy (and critic) is an FSDP2 trainer beside its rollout replica, as the RL
loop's; each rank runs the discussions of its share of the step's prompts (every answer seeded by its global
place, :meth:`~llmrl.train.agent_collect.AgentCollector.seed_per_group`), batch statistics (GAE whitening, the
KL controller's input) are taken over all ranks, and rank 0 logs, evaluates and saves.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmrl.algos import ADVANTAGES, KLController, kl_estimate, sequence_kl
from llmrl.algos.turn_rewards import turn_token_rewards
from llmrl.core.errors import ConfigError
from llmrl.core.seed import derive_seed, seed_everything
from llmrl.core.types import Batch, Episode
from llmrl.rewards.pool import PoolOptions
from llmrl.rl.critic import Critic, build_critic
from llmrl.train.agent_collect import AgentCollector, evaluate_discussion
from llmrl.train.build import build_generator
from llmrl.train.collect import DataStream
from llmrl.train.distributed import DataParallel, is_main
from llmrl.train.evaluate import evaluate
from llmrl.train.guard import eval_due, open_log
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.run import RunParts, build_run, sampling_params, save_model_atomic
from llmrl.train.update import LossSpec, optimizer_step, sequence_logprobs

if TYPE_CHECKING:
    from llmrl.config import Config
    from llmrl.rollout.base import Generator


class Agent:
    """One agent's policy, generator, critic, optimizer, scheduler and KL controller."""

    def __init__(self, policy: torch.nn.Module, generator: Generator, cfg: Config) -> None:
        a, o = cfg.algo, cfg.optim
        self.dp = DataParallel(policy)  # torchrun: an FSDP2 trainer (dp.policy) beside the replica; else as is
        self.policy, self.replica, self.generator = self.dp.policy, policy, generator
        self.critic: Critic | None = build_critic(policy, cfg, self.policy)
        extra = self.critic.joint_parameters() if self.critic else []
        self.optimizer = build_optimizer([*self.policy.parameters(), *extra], o.lr, o.weight_decay, o.betas, o.eps)
        self.scheduler = build_scheduler(self.optimizer, o.warmup_steps, cfg.steps * a.epochs * a.minibatches,
                                         o.schedule)
        self.kl_ctl = KLController(a.kl_coef, a.kl_target, a.kl_horizon)

    def update(self, episodes: list[Episode], run: RunParts, cfg: Config, step: int) -> dict[str, float]:
        """Score, advantage and train on this agent's episodes (the RL loop's steps 2-4); metrics (reduced over
        the ranks under torchrun)."""
        a, o = cfg.algo, cfg.optim
        batch = Batch.collate(episodes, run.pad_id)
        if run.ref is not None:
            batch.ref_logprobs = sequence_logprobs(run.ref, batch, cfg.rollout.temperature, a.micro_batch_size,
                                                   run.ref_context)
        batch.values = self.critic.values(batch) if self.critic is not None else None
        kl = kl_estimate(batch.old_logprobs, batch.ref_logprobs, a.kl_estimator) if run.ref is not None else None
        beta = self.kl_ctl.value
        rewards = turn_token_rewards([[r * a.sequence_reward for r in e.metadata["turn_rewards"]] for e in episodes],
                                     [e.turn_spans for e in episodes], batch.mask, kl, beta * a.kl_in_reward)
        with self.dp.whole_batch():  # torchrun: whitening over every rank's share
            batch.advantages = ADVANTAGES.get(a.advantage)(rewards, batch.mask, group_ids=batch.group_ids,
                                                           baseline=batch.values if a.advantage == "gae" else None,
                                                           **a.advantage_options)
        metrics: dict[str, float] = {"kl_coef": beta, "lr": self.scheduler.get_last_lr()[0]}
        if self.critic is not None:
            batch.returns = self.critic.targets(rewards, batch)
            with self.dp.whole_batch():  # torchrun: token means over every rank
                metrics.update(self.critic.batch_metrics(batch))
        if kl is not None:
            self.kl_ctl.update(self.dp.mean(float(sequence_kl(kl, batch.mask))), int(self.dp.total(batch.size)))
        spec = LossSpec(loss=a.loss, loss_options=a.loss_options, agg=a.loss_agg,
                        agg_constant=a.agg_constant or float(cfg.rollout.max_new_tokens),
                        temperature=cfg.rollout.temperature, kl_estimator=a.kl_estimator,
                        entropy_coef=a.entropy_coef, kl_coef=0.0 if a.kl_in_reward else beta,
                        aux=self.critic.policy_aux if self.critic is not None and self.critic.shared else None)
        n, summed = a.epochs * a.minibatches, set()
        for epoch in range(a.epochs):
            order = torch.randperm(batch.size, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, step,
                                                                                                   epoch)))
            for idx in order.chunk(a.minibatches):
                mb = batch.select(idx)
                upd = self.critic.update(mb, policy_step=True) if self.critic is not None else {}
                ok, pol = optimizer_step(self.policy, self.optimizer, self.scheduler, mb, spec, a.micro_batch_size,
                                         o.grad_clip)
                upd.update(pol)
                summed.update(upd)  # each rank's share of the minibatch's loss terms: summed over the ranks
                upd["skipped"] = float(not ok)
                for k, v in upd.items():
                    metrics[k] = metrics.get(k, 0.0) + v / n
        self.optimizer.zero_grad(set_to_none=True)
        self.dp.sync()  # torchrun: the trainer's weights into the rollout replica
        return self.dp.reduce(metrics, frozenset(summed - {"grad_norm", "critic/grad_norm", "critic/skipped"}))


def refuse_unsupported(cfg: Config, resume: bool) -> None:
    """One-line ConfigErrors for what the separate-policies trainer does not do."""
    a = cfg.algo
    for on, what in ((resume, "--resume"), (cfg.model.lora.enabled, "model.lora"),
                     (cfg.rollout.backend == "vllm", "rollout.backend=vllm"),
                     (a.recompute_logprobs, "algo.recompute_logprobs"),
                     (bool(a.reward_model or a.length_penalty or a.shaping), "reward model / length penalty / shaping"),
                     (a.advantage in ("remax", "reinforce"), f"algo.advantage={a.advantage}"),
                     (a.rollout_correction.mode != "none", "algo.rollout_correction"),
                     (cfg.critic.warmup_steps > 0, "critic.warmup_steps"), (cfg.rollout.overlong_filter,
                                                                            "rollout.overlong_filter")):
            if on:
                raise ConfigError(f"rollout.agents.shared=false (separate policies): {what} is not supported; "
                                  "use shared: true for the full RL loop")


def evaluate_agents(run: RunParts, agents: list[Agent], cfg: Config, step: int) -> dict[str, float]:
    """Greedy single-agent metrics of every agent (``agent{a}/...``) and the discussion's per-round accuracy
    (torchrun: rank 0 only, the others get {})."""
    if not is_main():
        return {}
    e, out = cfg.eval, {}
    max_new = e.max_new_tokens or cfg.rollout.max_new_tokens
    for i, ag in enumerate(agents):
        m = evaluate(ag.generator, run.tokenizer, run.task, run.test, max_new_tokens=max_new,
                     chat_template=cfg.model.chat_template, pass_k=e.pass_k, n_samples=e.samples,
                     temperature=e.temperature, seed=derive_seed(cfg.seed, step), batch_size=e.batch_size,
                     stop=cfg.rollout.stop)
        out.update({f"agent{i}/{k}": v for k, v in m.items()})
    out["accuracy"] = sum(out[f"agent{i}/accuracy"] for i in range(len(agents))) / len(agents)
    out.update(evaluate_discussion([ag.generator for ag in agents], run.tokenizer, run.task, run.test,
                                   agents=cfg.rollout.agents, chat_template=cfg.model.chat_template,
                                   max_new_tokens=max_new, temperature=e.temperature,
                                   seed=derive_seed(cfg.seed, "discussion", step), batch_size=e.batch_size,
                                   stop=cfg.rollout.stop))
    return out


def train_separate(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """Co-train ``rollout.agents.count`` separate policies; returns the summary (also ``summary.json``)."""
    t0 = time.time()
    refuse_unsupported(cfg, resume)
    seed_everything(cfg.seed)
    run = build_run(cfg, resume, cfg.algo.kl_coef)  # warm start once; the reference is the warm-started model
    out, A = Path(cfg.output_dir), cfg.rollout.agents.count
    policies = [run.model, *(copy.deepcopy(run.model) for _ in range(A - 1))]
    agents = [Agent(p, run.generator if i == 0 else build_generator(p, run.tokenizer, cfg.rollout.backend), cfg)
              for i, p in enumerate(policies)]
    collect = AgentCollector([ag.generator for ag in agents], run.tokenizer, run.task, DataStream(run.train, cfg.seed),
                             prompts=cfg.rollout.prompts_per_step, chat_template=cfg.model.chat_template,
                             failure_value=cfg.algo.reward_failure_value, agents=cfg.rollout.agents,
                             pool_options=PoolOptions.for_run(cfg))
    collect = agents[0].dp.shard_collector(collect, cfg.rollout.prompts_per_step)  # torchrun: this rank's share
    log, before = open_log(out, None, lambda: evaluate_agents(run, agents, cfg, 0), cfg)
    for step in range(1, cfg.steps + 1):
        t_step = time.time()
        ro = collect(sampling_params(cfg, seed=derive_seed(cfg.seed, "rollout", step)))
        rec: dict[str, float] = {**agents[0].dp.reduce(ro.metrics), "time/generate": time.time() - t_step}
        for i, ag in enumerate(agents):
            mine = [e for e in ro.episodes if e.agent_id == i]
            rec.update({f"agent{i}/{k}": v for k, v in ag.update(mine, run, cfg, step).items()})
        rec["time/step"] = time.time() - t_step
        log.log(step, rec)
        if eval_due(step, cfg.eval.every, cfg.steps):
            log.log(step, evaluate_agents(run, agents, cfg, step), kind="eval")
    after = log.log(cfg.steps, evaluate_agents(run, agents, cfg, cfg.steps), kind="eval")
    log.close()
    for i, ag in enumerate(agents):
        save_model_atomic(ag.replica, run.tokenizer, out / f"final_model_agent{i}")  # torchrun: rank 0
    summary = {"accuracy_before": before.get("accuracy"), "accuracy_after": after.get("accuracy"),
               "wall_seconds": time.time() - t0, "sft_seconds": run.sft_seconds, "steps": cfg.steps,
               "before": before, "after": after}
    if is_main():
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
