"""Collect one RL batch: prompts → generations → Episodes → rewards (with DAPO's refinements)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from llmrl.core.seed import derive_seed
from llmrl.core.types import Episode, Sample
from llmrl.rewards.pool import PoolOptions, RewardPool, task_pool
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.rollout.episodes import generate_episodes
from llmrl.rollout.multiturn import EnvironmentFactory, finish_turn_rewards
from llmrl.tasks.base import Task


class DataStream:
    """Endless shuffled pass over a list of samples; its state is one integer (the position)."""

    def __init__(self, samples: list[Sample], seed: int, position: int = 0) -> None:
        if not samples:
            raise ValueError("no training samples")
        self.samples, self.seed, self.position = samples, seed, position
        self._epoch, self._order = -1, list(range(len(samples)))

    def next(self, k: int) -> list[Sample]:
        out = []
        for _ in range(k):
            epoch, idx = divmod(self.position, len(self.samples))
            if epoch != self._epoch:
                self._order = list(range(len(self.samples)))
                random.Random(derive_seed(self.seed, "data", epoch)).shuffle(self._order)
                self._epoch = epoch
            out.append(self.samples[self._order[idx]])
            self.position += 1
        return out


@dataclass
class Rollouts:
    episodes: list[Episode]
    metrics: dict[str, float] = field(default_factory=dict)


def overlong_penalty(length: int, max_len: int, buffer: int, factor: float) -> float:
    """DAPO soft overlong punishment: 0 up to max_len − buffer, then linear down to −factor at max_len."""
    if buffer <= 0 or length <= max_len - buffer:
        return 0.0
    return max(-1.0, ((max_len - buffer) - length) / buffer) * factor


def score_episodes(episodes: list[Episode], task: Task, failure_value: float, max_new_tokens: int,
                   overlong_buffer: int = 0, overlong_factor: float = 1.0, pool: RewardPool | None = None) -> None:
    """Fill ``reward`` / ``reward_components`` of each episode, and ``correct`` / ``well_formed`` /
    ``reward_failures`` (``"name: error"``), ``reward_failed`` / ``reward_timeouts`` (component names) in its
    metadata. The task's reward functions and verdicts run in ``pool`` (default: the task's shared pool,
    :func:`~llmrl.rewards.pool.task_pool`): a component that raises, returns a non-number, NaN or a value
    beyond the pool's ``max_abs``, runs past its ``timeout`` or kills its worker gives ``failure_value``;
    the failure is counted, never raised."""
    pool = pool if pool is not None else task_pool(task)
    outs = pool.score([ep.completion for ep in episodes], [ep.sample for ep in episodes],
                      failure_value=failure_value, checks=True)
    for ep, out in zip(episodes, outs, strict=True):
        if overlong_buffer > 0:
            length = max(e - s for s, e in ep.turn_spans) if ep.turn_spans else 0
            pen = overlong_penalty(length, max_new_tokens, overlong_buffer, overlong_factor)
            out.components["overlong"] = pen
            out.total += pen
        ep.reward, ep.reward_components = out.total, out.components
        ep.metadata["reward_failures"] = out.failures
        ep.metadata["reward_failed"] = out.failed
        ep.metadata["reward_timeouts"] = out.timed_out
        ep.metadata["correct"] = out.checks.get("correct", False)
        ep.metadata["well_formed"] = out.checks.get("well_formed", False)


@dataclass
class Collector:
    """Generates and scores one RL batch of ``prompts`` groups: ``collector(params) -> Rollouts``. Built once
    before the loop; the prompts come from ``data`` (whose position is the loop's data state).

    With dynamic sampling (DAPO), groups whose rewards are all equal carry no signal: they are dropped and
    more prompts are drawn, for at most ``max_rounds`` (if every group was dropped, the last round's groups
    are returned unchanged). ``overlong_buffer`` / ``overlong_factor``: DAPO's soft overlong punishment
    (:func:`overlong_penalty`); ``env`` / ``max_turns`` / ``max_episode_tokens``: multi-turn episodes (an environment factory,
    :mod:`llmrl.rollout.multiturn`); ``pool_options``: where and
    under which limits the reward functions run (the ``reward`` and ``ray`` config sections:
    :meth:`~llmrl.rewards.pool.PoolOptions.for_run`; None = the defaults), in ``pool``
    (:func:`~llmrl.rewards.pool.task_pool`)."""

    generator: Generator
    tokenizer: Any
    task: Task
    data: DataStream
    prompts: int
    chat_template: bool | None
    failure_value: float
    dynamic_sampling: bool = False
    max_rounds: int = 4
    overlong_buffer: int = 0
    overlong_factor: float = 1.0
    env: EnvironmentFactory | None = None  # a fresh environment per episode (rollout.env)
    max_turns: int = 1
    max_episode_tokens: int = 0  # token budget of a multi-turn episode (0 = none)
    pool_options: PoolOptions | None = None  # the reward pool's settings (PoolOptions.for_run; None = defaults)
    pool: RewardPool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The task's shared pool with these settings: later score_episodes(task) calls (evaluation, the ReMax
        # baseline) use it too. Its processes start on the first call.
        self.pool = task_pool(self.task, self.pool_options or PoolOptions())

    def seed_per_group(self, first_group: int) -> None:
        """Under torchrun: sample each prompt group with its own seed, from its global index (``first_group`` is
        this rank's first), so a rank's groups are those one process holding the whole batch draws whatever the
        world size (:class:`~llmrl.train.distributed.PerGroupSeeded`)."""
        from llmrl.train.distributed import PerGroupSeeded  # lazy: distributed imports this module

        self.generator = PerGroupSeeded(self.generator, first_group)  # type: ignore[assignment]

    def __call__(self, params: SamplingParams) -> Rollouts:
        """The step's rollouts; round r of dynamic sampling uses seed ``params.seed + r``."""
        prompts, dynamic = self.prompts, self.dynamic_sampling
        kept: list[list[Episode]] = []
        all_eps: list[Episode] = []
        rounds, dropped = 0, 0
        base_seed = params.seed
        while True:
            p = replace(params, seed=None if base_seed is None else base_seed + rounds)
            eps = generate_episodes(self.generator, self.tokenizer, self.data.next(prompts), p, self.chat_template,
                                    group_offset=rounds * prompts, env=self.env, max_turns=self.max_turns,
                                    max_episode_tokens=self.max_episode_tokens)
            score_episodes(eps, self.task, self.failure_value, params.max_new_tokens, self.overlong_buffer,
                           self.overlong_factor, self.pool)
            for e in eps:  # environment rewards per turn + the task's on the last: metadata["turn_rewards"]
                finish_turn_rewards(e)
            all_eps += eps
            groups: dict[int, list[Episode]] = defaultdict(list)
            for e in eps:
                groups[e.group_id].append(e)
            for g in groups.values():
                if dynamic and len({e.reward for e in g}) == 1:
                    dropped += 1
                else:
                    kept.append(g)
            rounds += 1
            if not dynamic or len(kept) >= prompts or rounds >= self.max_rounds:
                break
        kept = kept[:prompts]
        # Nothing informative after max_rounds: train on the last round anyway. Its groups have equal
        # rewards, so group-relative advantages are 0 and only the KL/entropy terms act; logged as groups_kept=0.
        episodes = [e for g in kept for e in g] if kept else eps
        # Metrics describe everything sampled (what the policy does), not only the kept groups.
        metrics = score_summary(all_eps)
        metrics.update({"groups_kept": float(len(kept)), "groups_dropped": float(dropped),
                        "sampling_rounds": float(rounds)})
        return Rollouts(episodes=episodes, metrics=metrics)


def score_summary(episodes: list[Episode]) -> dict[str, float]:
    n = max(len(episodes), 1)
    rewards = [e.reward for e in episodes]
    mean = sum(rewards) / n
    comps: dict[str, float] = defaultdict(float)
    failed: dict[str, int] = defaultdict(int)  # episodes whose component failed, by reward name
    for e in episodes:
        for k, v in e.reward_components.items():
            comps[f"reward/{k}"] += v / n
            if k != "overlong":  # every reward's count is logged, 0 included (overlong is no reward function)
                failed.setdefault(k, 0)
        for k in e.metadata.get("reward_failed", ()):
            failed[k] += 1
    return {
        "reward": mean,
        "reward_std": (sum((r - mean) ** 2 for r in rewards) / n) ** 0.5,
        "accuracy": sum(bool(e.metadata.get("correct")) for e in episodes) / n,
        "length": sum(e.num_policy_tokens for e in episodes) / n,
        "format_rate": sum(bool(e.metadata.get("well_formed")) for e in episodes) / n,
        "truncated": sum(e.truncated for e in episodes) / n,
        "reward_failures": float(sum(bool(e.metadata.get("reward_failures")) for e in episodes)),
        "reward_timeouts": float(sum(len(e.metadata.get("reward_timeouts", ())) for e in episodes)),
        **{f"reward_failures/{k}": float(v) for k, v in sorted(failed.items())},
        **comps,
    }
