"""Shared fixtures: a tiny, fast run configuration and a test-only task a random model can learn by RL."""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from llmrl.tasks.base import TASKS, Task

TINY = [
    "progress=false", "threads=1",
    "model.tiny.hidden_size=32", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "model.tiny.max_position_embeddings=64",
    "task.train_size=64", "task.test_size=16", "eval.samples=2", "eval.pass_k=[1,2]", "eval.every=0",
    "rollout.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=6",
]


CPU_GUARD = 5.0  # a complexity guard's slack over a documented per-call bound


def load_module(path: Path, name: str) -> ModuleType:
    """Import the script at ``path`` (a benchmark, an example) as module ``name`` (registered in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def cpu_guard(bound_s: float, what: str = "") -> Iterator[None]:
    """Fail if the block used more than CPU_GUARD x `bound_s` seconds of this process's CPU time.

    A guard against complexity blow-ups (a quadratic path on a 1 MB input takes minutes), not a speed
    target: process CPU time leaves out the time spent waiting for a core, so a loaded machine does not
    fail it. The documented bounds are measured by the benchmarks (benchmarks/fidelity_*.py print worst
    1 MB times)."""
    start = time.process_time()
    yield
    used = time.process_time() - start
    assert used < CPU_GUARD * bound_s, f"{what or 'block'} used {used:.2f} s of CPU (documented bound {bound_s} s)"


class CharCountTask(Task):
    """Reward = fraction of completion characters that are 'a' (partial credit a random model can climb)."""

    name = "test_char_a"

    def __init__(self, *, target: str = "a") -> None:
        self.target = target

    def make_sample(self, rng: random.Random) -> dict[str, Any]:
        n = rng.randrange(10**6)
        return {"task": self.name, "prompt": f"{n}:", "answer": self.target * 4}

    def _score(self, completion: str, sample: Mapping[str, Any]) -> float:
        return completion.count(self.target) / max(len(completion), 1)

    def reward_functions(self):
        return {"a_rate": self._score}

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return self._score(completion, sample) >= 0.5

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return len(completion) > 0


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models: intra-op threads only add overhead (and stall badly on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _test_task(monkeypatch):
    """The test-only task is registered for each test and removed afterwards."""
    monkeypatch.setitem(TASKS._items, "test_char_a", CharCountTask)


@pytest.fixture
def tiny_overrides(tmp_path):
    return [*TINY, f"output_dir={tmp_path / 'run'}"]
