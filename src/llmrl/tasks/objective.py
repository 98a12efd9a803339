"""``single_objective``: another task with ONE of its named reward components as the whole reward.

Used to train single-objective policies (e.g. the K policies that MPO mixes, arXiv:2502.18699): the prompts,
splits, verifier (``is_correct`` / ``is_well_formed``) and demonstrations are the wrapped task's; only
``reward_functions()`` is narrowed to ``{component: fn}``.

Recipe form::

    task:
      name: single_objective
      options: {task: arithmetic, component: format, task_options: {digits: 2, style: plain}}
"""

from __future__ import annotations

from typing import Any

from llmrl.rewards.base import RewardFn
from llmrl.tasks.base import TASKS, TaskWrapper, get_task


@TASKS.register("single_objective")
class SingleObjectiveTask(TaskWrapper):
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

    def reward_functions(self) -> dict[str, RewardFn]:
        return {self.component: self.base.reward_functions()[self.component]}
