"""Self-rewarding correction (arXiv 2502.19613; PAPERS.md §10): answer, judge the answer, revise after ``wrong``.

One episode alternates two kinds of policy turn: an **answer** (a1, a2, ...) and a **verdict** on the answer just
given, a self-evaluation ending in ``[VERIFY] correct`` or ``[VERIFY] wrong``. After an answer the environment
asks for the verdict (``verify_prompt``); after ``[VERIFY] wrong`` it asks for a revision (``revise_prompt``);
``[VERIFY] correct``, a verdict naming neither, or ``[VERIFY] wrong`` on the ``max_attempts``-th answer ends
the episode. The rollout's ``max_turns`` may end it sooner.

The task scores the **last answer** (:meth:`SelfCorrectionEnvironment.scored_text`), not the last turn (a
verdict): the paper's rule reward, 1 if the final answer is right. ``correction_bonus`` adds the paper's
hacked variant: +bonus when the first answer is wrong and the final one right, paid as telescoping per-answer
rewards (answer k>=2 gets bonus·(w·c_k − w·c_{k−1}), w = first answer wrong, c = answer correct), so the
episode's total is bonus·w·c_last wherever it stops.

Every step's ``info["metrics"]`` holds the episode's self-correction numbers so far (the evaluation averages the
last step's; ``None`` = not applicable to this episode): ``first_accuracy``, ``final_accuracy``,
``verdict_accuracy`` (the first verdict matches the truth of a1; no verdict counts as a miss),
``verdict_accuracy_on_correct`` / ``verdict_accuracy_on_wrong`` (the same, on correct / wrong a1 only),
``wrong_to_correct`` / ``correct_to_wrong`` (a1 vs the final answer) and ``attempts``.
"""

from __future__ import annotations

from typing import Any

from llmrl.core.types import Sample
from llmrl.rollout.multiturn import Observation, StepResult

CORRECT = "[VERIFY] correct"
WRONG = "[VERIFY] wrong"


def parse_verdict(text: str, correct: str = CORRECT, wrong: str = WRONG) -> bool | None:
    """True for a ``correct`` verdict, False for ``wrong`` (whichever occurs last in ``text``), None for neither."""
    i, j = text.rfind(correct), text.rfind(wrong)
    if i < 0 and j < 0:
        return None
    return i > j


class SelfCorrectionEnvironment:
    """The ``self_correction`` environment (see the module docstring). ``task``: anything with
    ``is_correct(completion, sample) -> bool`` (the ground-truth verifier)."""

    def __init__(self, task: Any, *, verify_prompt: str = "\nPerform a self-evaluation of the answer above; end "
                 f"with '{CORRECT}' or '{WRONG}'.\n", revise_prompt: str = "\nThe answer is wrong. Correct it.\n",
                 correct: str = CORRECT, wrong: str = WRONG, max_attempts: int | None = None,
                 correction_bonus: float = 0.0) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"self_correction: max_attempts must be >= 1, got {max_attempts}")
        if not correct or not wrong or correct in wrong or wrong in correct:
            raise ValueError(f"self_correction: the verdicts must be non-empty and neither inside the other, got "
                             f"{correct!r} / {wrong!r}")
        self.is_correct = task.is_correct
        self.verify_prompt, self.revise_prompt = verify_prompt, revise_prompt
        self.correct, self.wrong = correct, wrong
        self.max_attempts, self.bonus = max_attempts, float(correction_bonus)
        self.reset({})

    def reset(self, sample: Sample) -> Observation:
        self.sample = sample
        self.answers: list[str] = []
        self.results: list[bool] = []  # ground truth of each answer
        self.verdicts: list[bool | None] = []  # the verdict on each judged answer
        return sample.get("prompt", "")

    @property
    def expects_verdict(self) -> bool:
        """The next policy turn is a verdict (an answer was given and not judged yet)."""
        return len(self.verdicts) < len(self.answers)

    def step(self, action: str) -> StepResult:
        if not self.expects_verdict:  # an answer
            ok = bool(self.is_correct(action, self.sample))
            self.answers.append(action)
            self.results.append(ok)
            reward = 0.0
            if len(self.results) > 1 and not self.results[0]:  # telescoping wrong→correct bonus
                reward = self.bonus * (float(ok) - float(self.results[-2]))
            return StepResult(observations=self.verify_prompt, reward=reward,
                              info={"turn": "answer", "correct": ok, "metrics": self.metrics()})
        verdict = parse_verdict(action, self.correct, self.wrong)
        self.verdicts.append(verdict)
        last = self.max_attempts is not None and len(self.answers) >= self.max_attempts
        done = verdict is not False or last
        return StepResult(observations=self.revise_prompt, done=done,
                          info={"turn": "verdict", "verdict": verdict, "verdict_correct": verdict is self.results[-1],
                                "metrics": self.metrics()})

    def scored_text(self) -> str:
        """What the task's reward scores: the last answer (the paper's final answer)."""
        return self.answers[-1] if self.answers else ""

    def metrics(self) -> dict[str, float | None]:
        """The episode's self-correction metrics so far (module docstring)."""
        if not self.results:
            return {}
        first, final = self.results[0], self.results[-1]
        v = float(bool(self.verdicts) and self.verdicts[0] is first)
        return {"first_accuracy": float(first), "final_accuracy": float(final), "verdict_accuracy": v,
                "verdict_accuracy_on_correct": v if first else None,
                "verdict_accuracy_on_wrong": None if first else v,
                "wrong_to_correct": float(not first and final), "correct_to_wrong": float(first and not final),
                "attempts": float(len(self.answers))}
