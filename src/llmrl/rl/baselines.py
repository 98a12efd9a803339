"""The ``baseline`` argument of the advantage estimators, by estimator: :data:`BASELINES`.

The estimators (:data:`llmrl.algos.ADVANTAGES`) are pure functions of a batch; what some of them
subtract has to be produced by the RL loop, so each such estimator registers here, under its own name, a
factory ``(cfg, run) -> Baseline`` built once per run. A baseline is called once per RL step as
``baseline(rewards [B, T], batch, episodes, step) -> [B] | [B, T] | 0-d | None`` and has
``state_dict`` / ``load_state_dict`` (checkpointed under ``baseline``). Registered:

* ``remax``: the reward of a greedy completion of each episode's prompt (sampled by the policy now);
* ``reinforce``: a running mean of the sequence returns (:class:`~llmrl.algos.RunningMean`);
* ``gae``: the critic's values of the batch (``batch.values``).

An estimator without an entry (grpo, rloo, ...) gets None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from llmrl.algos import RunningMean
from llmrl.core.registry import Registry
from llmrl.rollout.episodes import generate_episodes
from llmrl.train.collect import score_episodes
from llmrl.train.run import sampling_params

if TYPE_CHECKING:
    from llmrl.config import Config
    from llmrl.core.types import Batch, Episode, Sample
    from llmrl.train.run import RunParts


class Baseline:
    """No baseline (None). Every baseline checkpoints a :class:`RunningMean`'s state under ``baseline``
    (the running mean of ``reinforce``; an untouched one for the others), as RL checkpoints always have."""

    def __init__(self, cfg: Config, run: RunParts) -> None:
        self.cfg, self.run, self.running = cfg, run, RunningMean()

    def __call__(self, rewards: Tensor, batch: Batch, episodes: list[Episode], step: int) -> Tensor | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return self.running.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running.load_state_dict(state)


BASELINES: Registry[Callable[[Config, RunParts], Baseline]] = Registry("baseline")
"""Advantage estimator name → factory of the baseline it needs."""


@BASELINES.register("remax")
class GreedyBaseline(Baseline):
    """ReMax: the reward of a greedy completion of the same prompt, per episode.  -> [B]"""

    def __call__(self, rewards: Tensor, batch: Batch, episodes: list[Episode], step: int) -> Tensor:
        run, cfg = self.run, self.cfg
        firsts: dict[int, Sample] = {}
        for e in episodes:
            firsts.setdefault(e.group_id, e.sample)
        gids = list(firsts)
        greedy = replace(sampling_params(cfg, 0, n=1), temperature=0.0)
        geps = generate_episodes(run.generator, run.tokenizer, [firsts[g] for g in gids], greedy,
                                 cfg.model.chat_template)
        score_episodes(geps, run.task, cfg.algo.reward_failure_value, cfg.rollout.max_new_tokens)
        by_group = {g: ge.reward for g, ge in zip(gids, geps)}
        return torch.tensor([by_group[e.group_id] for e in episodes], dtype=torch.float32)


@BASELINES.register("reinforce")
class RunningMeanBaseline(Baseline):
    """REINFORCE: the running mean of the sequence returns before this batch.  -> 0-d"""

    def __call__(self, rewards: Tensor, batch: Batch, episodes: list[Episode], step: int) -> Tensor:
        return self.running.update(rewards.sum(-1))


@BASELINES.register("gae")
class ValueBaseline(Baseline):
    """GAE: the critic's values of the batch.  -> [B, T]"""

    def __call__(self, rewards: Tensor, batch: Batch, episodes: list[Episode], step: int) -> Tensor | None:
        return batch.values


def build_baseline(cfg: Config, run: RunParts) -> Baseline:
    """The baseline ``algo.advantage`` needs (:class:`Baseline`, i.e. None, when it registered none)."""
    name = cfg.algo.advantage
    return (BASELINES.get(name) if name in BASELINES else Baseline)(cfg, run)


__all__ = ["BASELINES", "Baseline", "GreedyBaseline", "RunningMeanBaseline", "ValueBaseline", "build_baseline"]
