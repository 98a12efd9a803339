"""Dual-model verbal reflection (Reasoner–Critic, arXiv 2502.19230; PAPERS.md §19; docs/agents.md).

A reasoner writes a rationale and an answer; a critic reads the question and that attempt and writes a targeted
reflection, or ``[STOP]`` when it finds nothing to fix; the reasoner then revises, seeing its previous attempt
and the reflection: y^{t+1} = Reasoner(y^t, Critic(y^t)), until ``[STOP]`` or a round budget.

The critic's training targets come from contrastive pairs of reasoning paths for one question, a chosen
(correct) and a rejected one: the reflection names the first step where the rejected path leaves the chosen one
and gives the chosen step there (:func:`critique`); a path equal to the chosen one gets ``[STOP]``.

Text formats (plain text, one string each; the tiny character-level models read them as is):
- a rationale is steps joined by ``sep`` with the answer after the last ``answer_mark``
  (``"7+8=15,4+3+1=8#85"``: steps ``7+8=15``, ``4+3+1=8``, ``#85``; :func:`reasoning_steps`);
- the critic's prompt is ``question + attempt + "|"`` (:func:`critic_prompt`);
- the reasoner's revision prompt is ``question + attempt + "|" + reflection + "|"`` (:func:`revision_prompt`).
The loop is inference only (both models are SFT-trained), so each round's prompt is built as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmrl.models.loading import encode_prompt
from llmrl.rollout.base import Generator, SamplingParams

STOP = "[STOP]"
DELIM = "|"


def reasoning_steps(text: str, sep: str = ",", answer_mark: str = "#") -> list[str]:
    """The steps of a rationale: ``text`` up to its last ``answer_mark`` split at ``sep``, then the rest from that
    mark on as the last step (``"7+8=15,4+3+1=8#85"`` -> ``["7+8=15", "4+3+1=8", "#85"]``); without a mark, the
    whole text split at ``sep``."""
    mark = text.rfind(answer_mark)
    body, tail = (text, []) if mark < 0 else (text[:mark], [text[mark:]])
    return (body.split(sep) if body else []) + tail


def first_divergence(chosen: Sequence[str], rejected: Sequence[str]) -> int | None:
    """The index of the first step where ``rejected`` differs from ``chosen`` (a missing or extra step counts);
    None when the two paths are the same."""
    for k in range(max(len(chosen), len(rejected))):
        if k >= len(chosen) or k >= len(rejected) or chosen[k] != rejected[k]:
            return k
    return None


def critique(chosen: str, attempt: str, sep: str = ",", answer_mark: str = "#") -> str:
    """The critic's target for ``attempt`` given the chosen (correct) path of the same question: ``[STOP]`` when
    the paths agree step by step, else ``"step{k}:{chosen step k}"`` for the first step k (1-based) where they
    diverge (empty after the colon when the chosen path has no step k: the attempt has one step too many)."""
    c, r = reasoning_steps(chosen, sep, answer_mark), reasoning_steps(attempt, sep, answer_mark)
    k = first_divergence(c, r)
    if k is None:
        return STOP
    return f"step{k + 1}:{c[k] if k < len(c) else ''}"


def is_stop(reflection: str) -> bool:
    """The loop's stopping rule: the critic's reflection (surrounding whitespace ignored) starts with ``[STOP]``."""
    return reflection.strip().startswith(STOP)


def critic_prompt(question: str, attempt: str) -> str:
    """What the critic reads: the question, the reasoner's attempt, then ``|``."""
    return f"{question}{attempt.strip()}{DELIM}"


def revision_prompt(question: str, attempt: str, reflection: str) -> str:
    """What the reasoner reads to revise: the critic's prompt, the reflection, then ``|``."""
    return f"{critic_prompt(question, attempt)}{reflection.strip()}{DELIM}"


@dataclass
class Trace:
    """One question's loop: ``attempts[0]`` is the reasoner's first answer, ``attempts[t]`` its revision after the
    t-th reflection; ``reflections[t]`` the critic's reflection on ``attempts[t]``; ``stopped``: the last
    reflection was ``[STOP]``."""

    question: str
    attempts: list[str] = field(default_factory=list)
    reflections: list[str] = field(default_factory=list)
    stopped: bool = False

    def answer_after(self, rounds: int) -> str:
        """The reasoner's answer after ``rounds`` critic rounds (the last one when the loop stopped earlier)."""
        return self.attempts[min(rounds, len(self.attempts) - 1)]


def _generate(gen: Generator, tokenizer: Any, texts: list[str], params: SamplingParams) -> list[str]:
    if not texts:
        return []
    outs = gen.generate([encode_prompt(tokenizer, t) for t in texts], params)
    return [o[0].text for o in outs]


def reflect(reasoner: Generator, critic: Generator, tokenizer: Any, questions: Sequence[str], *, rounds: int,
            params: SamplingParams, critic_params: SamplingParams | None = None,
            oracle: Sequence[str] | None = None) -> list[Trace]:
    """Run the Reasoner–Critic loop on every question (batched: one ``generate`` call per model per round).

    Round 0: the reasoner answers each question. Then, up to ``rounds`` times, for every question not yet
    stopped: the critic reflects on the latest attempt (``critic_params``, default ``params``); ``[STOP]``
    (:func:`is_stop`) ends that question's loop, any other reflection makes the reasoner revise
    (:func:`revision_prompt`). ``oracle``: the chosen (correct) path of every question; the reflections are then
    :func:`critique` of it instead of the critic's (an upper bound: a perfect critic), and ``critic`` is unused.
    ``n`` of the params must be 1."""
    if rounds < 0:
        raise ValueError(f"reflect: rounds must be >= 0, got {rounds}")
    if params.n != 1 or (critic_params is not None and critic_params.n != 1):
        raise ValueError("reflect: one sample per prompt (params.n = 1)")
    if oracle is not None and len(oracle) != len(questions):
        raise ValueError(f"reflect: {len(oracle)} oracle paths for {len(questions)} questions")
    traces = [Trace(q) for q in questions]
    for t, a in zip(traces, _generate(reasoner, tokenizer, list(questions), params), strict=True):
        t.attempts.append(a)
    for _ in range(rounds):
        live = [i for i, t in enumerate(traces) if not t.stopped]
        if not live:
            break
        if oracle is not None:
            notes = [critique(oracle[i], traces[i].attempts[-1]) for i in live]
        else:
            notes = _generate(critic, tokenizer, [critic_prompt(traces[i].question, traces[i].attempts[-1])
                                                  for i in live], critic_params or params)
        revise = []
        for i, note in zip(live, notes, strict=True):
            traces[i].reflections.append(note)
            traces[i].stopped = is_stop(note)
            if not traces[i].stopped:
                revise.append(i)
        prompts = [revision_prompt(traces[i].question, traces[i].attempts[-1], traces[i].reflections[-1])
                   for i in revise]
        for i, a in zip(revise, _generate(reasoner, tokenizer, prompts, params), strict=True):
            traces[i].attempts.append(a)
    return traces
