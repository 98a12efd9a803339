"""Distilled rewards (Zhang et al., 2025, arXiv:2502.19557): pseudo-labelled preference pairs without gold labels.

Per training prompt, the teacher samples ``teacher_samples`` responses and the student (the policy, after
an optional SFT warm-up on the task's demonstrations) ``student_samples``. Each response gets a
pseudo-label, good or bad:

* ``label="vote"`` (verifiable tasks): the task's answer extraction (``task.parse``) gives each response's
  answer; the majority answer over all responses (``vote_over="all"``) or over the teacher's only
  (``"teacher"``) is the pseudo-label, and a response is good iff its answer equals it. Ties go to the
  answer seen first (teacher responses come first); unparseable responses never vote and are bad; a
  prompt whose voters are all unparseable gets no pairs.
* ``label="judge"`` (open-ended tasks): the teacher judges each response from its Yes/No probabilities
  (:func:`llmrl.rewards.judge.judge_scores`, p_yes/(p_yes+p_no)); good iff the score ≥ ``threshold``.

Pairs: every distinct good response × every distinct bad response of the prompt (chosen = good), shuffled
with a seeded RNG and cut to ``max_pairs_per_prompt``. The reward model is then trained on them by the
``reward_model`` trainer (``rm.source: distill``). The task's verifier is used only for a diagnostic,
``pseudo_label_accuracy`` (how often the pseudo-label equals the verifier's verdict), never for labels.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from llmrl.core.seed import derive_seed
from llmrl.rewards.base import safe_check
from llmrl.rewards.judge import instruction_of
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.tasks.preference import PreferencePair

if TYPE_CHECKING:
    from llmrl.core.types import Sample
    from llmrl.tasks.base import Task

JudgeFn = Callable[[Sequence[tuple[str, str]]], list[float]]
"""(instruction, response) pairs -> scores in [0, 1]."""


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """Most frequent non-None answer; ties go to the answer that appears first; None if none parsed."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def vote_labels(answers: Sequence[str | None], voters: Sequence[bool] | None = None) -> tuple[str | None, list[bool]]:
    """(majority answer among the ``voters``, per-response label: answer == majority). Without a
    majority (no voter parsed) every label is False."""
    if voters is not None and len(voters) != len(answers):
        raise ValueError(f"vote_labels: {len(answers)} answers but {len(voters)} voter flags")
    pool = [a for i, a in enumerate(answers) if voters is None or voters[i]]
    major = majority_answer(pool)
    return major, [major is not None and a == major for a in answers]


def pairs_from_labels(prompt: Any, responses: Sequence[str], labels: Sequence[bool], max_pairs: int,
                      rng: random.Random, meta: dict[str, Any] | None = None) -> list[PreferencePair]:
    """Distinct good × distinct bad responses as pairs (chosen = good), shuffled, at most ``max_pairs``.
    Whitespace-only responses are dropped (a pair needs two non-empty, different completions)."""
    good = list(dict.fromkeys(r for r, ok in zip(responses, labels, strict=True) if ok and r.strip()))
    bad = list(dict.fromkeys(r for r, ok in zip(responses, labels, strict=True) if not ok and r.strip()))
    combos = [(g, b) for g in good for b in bad if g != b]
    rng.shuffle(combos)
    return [PreferencePair(prompt=prompt, chosen=g, rejected=b, meta=dict(meta or {})) for g, b in combos[:max_pairs]]


def sample_responses(generator: Generator, tokenizer: Any, samples: Sequence[Sample], n: int, params: SamplingParams,
                     chat_template: bool | None) -> list[list[str]]:
    """``n`` completions per sample (texts as generated, without the sample's assistant prefix)."""
    from llmrl.rollout.episodes import generate_episodes

    if n == 0:
        return [[] for _ in samples]
    p = replace(params, n=n)
    out: list[list[str]] = [[] for _ in samples]
    for ep in generate_episodes(generator, tokenizer, list(samples), p, chat_template):
        out[ep.group_id].append(ep.completion)
    return out


@dataclass
class DistillStats:
    prompts: int = 0
    responses: int = 0
    pairs: int = 0
    prompts_without_pairs: int = 0
    good_fraction: float = 0.0
    pseudo_label_accuracy: float = 0.0  # agreement of the pseudo-labels with the task's verifier (diagnostic)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def distill_pairs(task: Task, samples: Sequence[Sample], teacher: Sequence[Sequence[str]],
                  student: Sequence[Sequence[str]], *, label: str = "vote", vote_over: str = "all",
                  judge: JudgeFn | None = None, threshold: float = 0.5, max_pairs_per_prompt: int = 16,
                  seed: int = 0) -> tuple[list[PreferencePair], DistillStats]:
    """Pseudo-labelled pairs from teacher and student responses per sample (see the module docstring)."""
    if not len(samples) == len(teacher) == len(student):
        raise ValueError(f"distill_pairs: {len(samples)} samples, {len(teacher)} teacher and {len(student)} "
                         "student response lists")
    if label == "vote" and not callable(getattr(task, "parse", None)):
        raise ValueError(f"task {task.name!r} has no answer extraction (parse) for majority voting; "
                         "use rm.distill.label=judge")
    if label == "judge" and judge is None:
        raise ValueError("distill_pairs: label='judge' needs a judge function")
    if label not in ("vote", "judge") or vote_over not in ("all", "teacher"):
        raise ValueError(f"distill_pairs: label must be vote or judge, vote_over all or teacher; got {label!r}, "
                         f"{vote_over!r}")
    rng = random.Random(derive_seed(seed, "distill_pairs"))
    pairs: list[PreferencePair] = []
    stats = DistillStats(prompts=len(samples))
    n_good = n_match = 0
    for s, t, st in zip(samples, teacher, student):
        completions = list(t) + list(st)
        if label == "vote":
            answers = [task.parse(c) for c in completions]  # type: ignore[attr-defined]
            _, labels = vote_labels(answers, [True] * len(t) + [vote_over == "all"] * len(st))
        else:
            scores = judge([(instruction_of(s), c) for c in completions])  # type: ignore[misc]
            labels = [sc >= threshold for sc in scores]
        stats.responses += len(completions)
        n_good += sum(labels)
        n_match += sum(ok == safe_check(task.is_correct, c, s) for c, ok in zip(completions, labels))
        prefix = str(s.get("assistant_prefix", ""))
        got = pairs_from_labels(s["prompt"], [prefix + c for c in completions], labels, max_pairs_per_prompt, rng)
        stats.prompts_without_pairs += not got
        pairs += got
    stats.pairs = len(pairs)
    stats.good_fraction = n_good / max(stats.responses, 1)
    stats.pseudo_label_accuracy = n_match / max(stats.responses, 1)
    return pairs, stats


__all__ = ["DistillStats", "JudgeFn", "distill_pairs", "majority_answer", "pairs_from_labels",
           "sample_responses", "vote_labels"]
