"""Task interface: a seeded sample generator plus a verifier and named reward functions.

Train and test never share a prompt: every prompt belongs to exactly one split, decided by a hash
of its text (``split_of``), and generators reject candidates that hash into the other split.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from llmrl.core.registry import Registry, check_options
from llmrl.rewards.base import RewardFn

if TYPE_CHECKING:
    from llmrl.core.types import Sample

SPLITS = ("train", "test")

TEXT = str | int | float
"""Type of a gold ``answer`` in a file of samples: a string or a number (``str()`` gives its text); not null,
a boolean, a list or an object (see :func:`llmrl.tasks.io.conforms` for the type specs of ``*_fields``)."""


def prompt_key(prompt: str | list[dict[str, str]]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}:{m['content']}" for m in prompt)


def split_of(prompt: str | list[dict[str, str]], test_fraction: float = 0.1) -> str:
    """'test' for a fixed, hash-chosen fraction of all possible prompts, else 'train'."""
    h = int.from_bytes(hashlib.sha256(prompt_key(prompt).encode()).digest()[:8], "little")
    return "test" if (h % 1_000_000) < test_fraction * 1_000_000 else "train"


class Task:
    """Base class for tasks. Subclasses implement ``make_sample`` and ``reward_functions``,
    ``is_correct`` and ``is_well_formed``; the rest is shared.

    Subclasses take their options as keyword arguments in ``__init__`` (these are the task's config).
    """

    name: str = ""
    test_fraction: float = 0.1
    required_fields: Mapping[str, Any] = {"answer": TEXT}
    """Fields (besides ``prompt``) the verifier and reward functions read from every sample, name -> type;
    a file of samples (``task.train_file`` / ``test_file``) is checked against them when it is read."""
    optional_fields: Mapping[str, Any] = {}
    """Fields they read when present (checked for their type only)."""
    demonstration_fields: Mapping[str, Any] = {"answer": TEXT}
    """Fields :meth:`demonstration` reads (SFT warm starts on demonstrations, pairs built from the task)."""
    wrong_demonstration_fields: Mapping[str, Any] = {}
    """Fields ``wrong_demonstration`` reads, for tasks that have one."""

    def sample_fields(self, sample: Mapping[str, Any], uses: Collection[str] = (),
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(required, optional) fields of ``sample`` besides ``prompt``, name -> type: ``required_fields``,
        plus ``demonstration_fields`` / ``wrong_demonstration_fields`` when ``uses`` holds ``"demonstration"``
        / ``"wrong_demonstration"`` (the run builds those from the samples). A task whose needs depend on the
        sample (e.g. its subtask) overrides this."""
        required = dict(self.required_fields)
        if "demonstration" in uses:
            required.update(self.demonstration_fields)
        if "wrong_demonstration" in uses:
            required.update(self.wrong_demonstration_fields)
        return required, dict(self.optional_fields)

    def make_sample(self, rng: random.Random) -> Sample:  # pragma: no cover - interface
        """One candidate sample (any split) drawn with ``rng``."""
        raise NotImplementedError

    def reward_functions(self) -> dict[str, RewardFn]:  # pragma: no cover - interface
        """Named reward components; the episode reward is their (weighted) sum."""
        raise NotImplementedError

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:  # pragma: no cover
        raise NotImplementedError

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:  # pragma: no cover
        raise NotImplementedError

    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """A correct completion for SFT warm-starts (default: the gold answer text)."""
        return str(sample["answer"])

    def accept_for_sft(self, completion: str, sample: Mapping[str, Any]) -> bool:
        """Whether rejection-sampled SFT keeps a sampled completion (default: ``is_correct``; a task may
        be more lenient, e.g. SoRFT keeps localisations that merely overlap the gold set)."""
        return self.is_correct(completion, sample)

    def samples(self, n: int, split: str = "train", seed: int = 0, max_tries: int | None = None) -> list[Sample]:
        """``n`` distinct samples of ``split``, deterministic in (task options, split, seed)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        out: list[Sample] = []
        seen: set[str] = set()
        tries, limit = 0, max_tries if max_tries is not None else 200 * n + 1000
        while len(out) < n:
            tries += 1
            if tries > limit:
                raise RuntimeError(
                    f"task {self.name!r}: found only {len(out)} distinct {split} samples of {n} requested "
                    f"after {limit} tries; widen the task's options"
                )
            s = self.make_sample(rng)
            key = prompt_key(s["prompt"])
            if key in seen or split_of(s["prompt"], self.test_fraction) != split:
                continue
            seen.add(key)
            s.setdefault("task", self.name)
            out.append(s)
        return out


def answer_and_format_rewards(task: Task, answer_reward: float = 1.0, format_penalty: float = -0.1,
                              ) -> dict[str, RewardFn]:
    """The common verifier reward pair: ``answer`` = ``answer_reward`` if ``task.is_correct`` else 0.0;
    ``format`` = 0.0 if ``task.is_well_formed`` else ``format_penalty``."""

    def answer(completion: str, sample: Mapping[str, Any]) -> float:
        return answer_reward if task.is_correct(completion, sample) else 0.0

    def format_(completion: str, sample: Mapping[str, Any]) -> float:
        return 0.0 if task.is_well_formed(completion, sample) else format_penalty

    return {"answer": answer, "format": format_}


class TaskWrapper(Task):
    """A task built on another one (``self.base``): prompts, splits, demonstrations and the verifier are the
    base task's; a wrapper changes only what it overrides (usually ``reward_functions``). Any other
    attribute (e.g. ``wrong_demonstration``, ``parse``) is looked up on the base task."""

    base: Task

    def __getattr__(self, attr: str) -> Any:
        if attr == "base":  # not set yet (during __init__): no recursion
            raise AttributeError(attr)
        return getattr(self.base, attr)

    def make_sample(self, rng: random.Random) -> Sample:
        return self.base.make_sample(rng)

    def sample_fields(self, sample: Mapping[str, Any], uses: Collection[str] = (),
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The wrapped task's (its samples, verifier and demonstrations)."""
        return self.base.sample_fields(sample, uses)

    def samples(self, n: int, split: str = "train", seed: int = 0, max_tries: int | None = None) -> list[Sample]:
        """The wrapped task's samples (same prompts and splits as training on the base task)."""
        return self.base.samples(n, split, seed, max_tries)

    def reward_functions(self) -> dict[str, RewardFn]:
        return self.base.reward_functions()

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        """The base task's verifier (the true objective, whatever the wrapper rewards)."""
        return self.base.is_correct(completion, sample)

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return self.base.is_well_formed(completion, sample)

    def demonstration(self, sample: Mapping[str, Any]) -> str:
        return self.base.demonstration(sample)


TASKS: Registry[Callable[..., Task]] = Registry("task")


def get_task(name: str, **options: Any) -> Task:
    factory = TASKS.get(name)
    check_options(factory, options, f"task {name!r}")
    return factory(**options)
