"""``single_objective``: another task with ONE of its named reward components as the whole reward.

Used to train single-objective policies (e.g. the K policies that MPO mixes, PAPERS.md §5): the prompts,
splits, verifier (``is_correct`` / ``is_well_formed``) and demonstrations are the wrapped task's; only
``reward_functions()`` is narrowed to ``{component: fn}``.

Recipe form::

    task:
      name: single_objective
      options: {task: arithmetic, component: format, task_options: {digits: 2, style: plain}}
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from llmrl.core.types import Sample
from llmrl.rewards.base import RewardFn
from llmrl.tasks.base import TASKS, Task, get_task


@TASKS.register("single_objective")
class SingleObjectiveTask(Task):
    """Another task scored by one of its reward components only (single-objective training)."""

    name = "single_objective"

    def __init__(self, *, task: str, component: str, task_options: dict[str, Any] | None = None) -> None:
        if task == self.name:
            raise ValueError("single_objective cannot wrap itself")
        self.base = get_task(task, **(task_options or {}))
        names = list(self.base.reward_functions())
        if component not in names:
            raise ValueError(f"task {task!r} has no reward component {component!r}; its components: {names}")
        self.component = component
        self.test_fraction = self.base.test_fraction

    def __getattr__(self, attr: str) -> Any:  # anything else (e.g. wrong_demonstration) is the base task's
        if attr == "base":
            raise AttributeError(attr)
        return getattr(self.base, attr)

    def make_sample(self, rng: random.Random) -> Sample:
        return self.base.make_sample(rng)

    def samples(self, n: int, split: str = "train", seed: int = 0, max_tries: int | None = None) -> list[Sample]:
        """The wrapped task's samples (same prompts and splits)."""
        return self.base.samples(n, split, seed, max_tries)

    def reward_functions(self) -> dict[str, RewardFn]:
        return {self.component: self.base.reward_functions()[self.component]}

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return self.base.is_correct(completion, sample)

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return self.base.is_well_formed(completion, sample)

    def demonstration(self, sample: Mapping[str, Any]) -> str:
        return self.base.demonstration(sample)
