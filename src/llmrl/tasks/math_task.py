r"""Math word problems with exact answers (task ``math``), generated or loaded from a JSONL/parquet set.

Generated problems (``path=None``) come from templates, chosen uniformly from ``kinds``:

``linear``       solve ``a x + b = c`` (integer or fractional root)
``fraction_of``  a fraction of a quantity (``3/8 of 48 cookies``)
``percent``      p% of N, a discounted price, "a is what percent of b" (answer in percent, no sign)
``rate``         two pipes filling a tank together; distance at constant speed
``sequence``     sums of arithmetic and geometric sequences, sums of consecutive integers
``geometry``     rectangle/square/triangle/trapezoid areas and perimeters, circle area/circumference (in pi)
``probability``  drawing marbles (one, or two without replacement), dice sums, exactly k heads in n flips

Answers are exact: integers (``"18"``), LaTeX fractions (``"\frac{7}{3}"``, ``"-\frac{1}{2}"``) or
multiples of pi (``"49\pi"``); samples carry ``task``, ``prompt``, ``answer``, ``kind`` and ``solution``
(the worked steps used by :meth:`MathTask.demonstration`).

Loaded problems (``path="data.jsonl"`` or ``"data.parquet"``): one sample per row, the prompt is the
row's ``question_key`` text plus the answer instruction, the gold is the row's ``answer_key`` value (a
string or number; when it contains ``\boxed{...}`` the boxed part is used). JSONL goes through
:func:`llmrl.tasks.io.read_jsonl`; parquet needs pandas with pyarrow. A missing column or key raises
:class:`~llmrl.tasks.io.DataError` naming the file and the column. Rows are split into train/test by
``split_of`` on the prompt, like generated samples, and ``samples`` draws without replacement from the
split in a seeded order (so ``samples(50)`` is a prefix of ``samples(2000)``).

Prompts end with ``"Put your final answer within \boxed{}."`` (``style="boxed"``) or ``"Give your final
answer inside <answer></answer>."`` (``style="tagged"``).

Rewards (range [-0.1, 1.0]):
``answer``  1.0 if the completion's final answer :func:`~llmrl.rewards.math.math_equal` the gold, else
            0.0: exactly by default; the option ``rel_tol`` (e.g. ``1e-6``) also accepts numbers within
            that relative tolerance (see :mod:`llmrl.rewards.math`). The final answer is the last
            ``<answer>`` block for ``tagged`` (falling back to the generic rule), and
            :func:`~llmrl.rewards.math.extract_answer` (last ``\boxed{}``, last ``<answer>``, last number)
            for ``boxed``.
``format``  0.0 if the completion holds a non-empty answer in the requested style (a balanced ``\boxed{}``
            or ``\fbox{}``; an ``<answer>...</answer>`` block), else -0.1.
Each reward call returns within ``llmrl.rewards.math.TIME_BOUND_S`` plus a linear scan of the completion.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from llmrl.rewards.base import RewardFn
from llmrl.rewards.logic import extract_last_answer
from llmrl.rewards.math import as_rel_tol, extract_answer, extract_boxed, math_equal
from llmrl.tasks.base import SPLITS, TASKS, Task, answer_and_format_rewards, split_of
from llmrl.tasks.io import DataError, read_jsonl

if TYPE_CHECKING:
    from llmrl.core.types import Sample

ANSWER_REWARD = 1.0
FORMAT_PENALTY = -0.1
STYLES = ("boxed", "tagged")
INSTRUCTIONS = {
    "boxed": "Put your final answer within \\boxed{}.",
    "tagged": "Give your final answer inside <answer></answer>.",
}
NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
         "Maya", "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yusuf")
ITEMS = ("apples", "marbles", "stickers", "cookies", "pencils", "cards", "coins", "books", "stamps", "shells")
COLOURS = ("red", "blue", "green", "yellow", "white", "black")

Problem = tuple[str, str, str]  # (question, gold answer, worked solution)


def fmt(q: Fraction) -> str:
    """LaTeX for an exact rational: ``"5"``, ``"-3"``, ``"\\frac{7}{3}"``, ``"-\\frac{1}{2}"``."""
    if q.denominator == 1:
        return str(q.numerator)
    return f"{'-' if q < 0 else ''}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"


def _frac(num: int, den: int) -> str:
    """An unreduced LaTeX fraction, as written in a worked step."""
    return f"\\frac{{{num}}}{{{den}}}"


def _eq(raw: str, value: str) -> str:
    """``"raw = value"``, or just ``value`` when they read the same (``\\frac{6}{8} = \\frac{3}{4}``)."""
    return value if raw == value else f"{raw} = {value}"


def _signed(k: int | Fraction, first: bool = False) -> str:
    """``k`` as a term after another one: ``"+ 5"`` / ``"- 5"`` (or ``"5"``/``"-5"`` when first)."""
    if first:
        return str(k)
    return f"+ {k}" if k >= 0 else f"- {-k}"


# -- templates ----------------------------------------------------------------------------------------
def _linear(rng: random.Random) -> Problem:
    var = rng.choice("xyznt")
    root = Fraction(rng.randint(-30, 30), rng.choice((1, 1, 1, 2, 3, 4, 5)))
    a = root.denominator * rng.choice((1, 2, 3, 4, 5, 6, 7, -1, -2, -3))
    b = rng.choice([k for k in range(-40, 41) if k != 0])
    c = int(a * root) + b
    term = f"{ {1: '', -1: '-'}.get(a, str(a)) }{var}"
    question = f"Solve for ${var}$: ${term} {_signed(b)} = {c}$."
    solution = (f"Move the constant: ${term} = {c} {_signed(-b)} = {c - b}$. "
                f"Divide by ${a}$: ${var} = {fmt(Fraction(c - b, a))}$.")
    return question, fmt(root), solution


def _fraction_of(rng: random.Random) -> Problem:
    q = rng.randint(2, 12)
    p = rng.choice([k for k in range(1, q) if math.gcd(k, q) == 1])
    if rng.random() < 0.7:
        n, name, item = q * rng.randint(2, 25), rng.choice(NAMES), rng.choice(ITEMS)
        question = f"{name} has {n} {item} and gives away $\\frac{{{p}}}{{{q}}}$ of them. How many {item} " \
                   f"does {name} give away?"
    else:
        n = rng.randint(2, 99)
        question = f"What is $\\frac{{{p}}}{{{q}}}$ of ${n}$?"
    answer = Fraction(p * n, q)
    return question, fmt(answer), f"${_frac(p, q)} \\times {n} = {_eq(_frac(p * n, q), fmt(answer))}$."


def _percent(rng: random.Random) -> Problem:
    variant = rng.randrange(3)
    if variant == 0:
        p, n = rng.choice((5, 10, 12, 15, 20, 25, 30, 40, 45, 50, 60, 75, 80, 90, 125, 150)), rng.randint(2, 400)
        answer = Fraction(p * n, 100)
        return (f"What is ${p}\\%$ of ${n}$?", fmt(answer),
                f"${p}\\%$ of ${n}$ is $\\frac{{{p}}}{{100}} \\times {n} = {fmt(answer)}$.")
    if variant == 1:
        p, price = rng.choice((10, 15, 20, 25, 30, 40, 50, 60, 75)), rng.randint(4, 300)
        answer = Fraction(price * (100 - p), 100)
        return (f"A jacket costs ${price} dollars and is on sale for ${p}\\%$ off. What is the sale price in "
                f"dollars?", fmt(answer),
                f"The sale price is ${100 - p}\\%$ of the price: $\\frac{{{100 - p}}}{{100}} \\times {price} = "
                f"{fmt(answer)}$.")
    b = rng.randint(2, 200)
    a = rng.randint(1, 2 * b)
    answer = Fraction(100 * a, b)
    return (f"What percent of ${b}$ is ${a}$?", fmt(answer),
            f"$\\frac{{{a}}}{{{b}}} \\times 100 = {fmt(answer)}$, so it is ${fmt(answer)}\\%$.")


def _rate(rng: random.Random) -> Problem:
    if rng.random() < 0.5:
        a, b = rng.sample(range(2, 25), 2)
        answer = Fraction(a * b, a + b)
        return (f"Pipe A fills a tank in ${a}$ hours and pipe B fills it in ${b}$ hours. How many hours do "
                f"they take to fill the tank together?", fmt(answer),
                f"Together they fill $\\frac{{1}}{{{a}}} + \\frac{{1}}{{{b}}} = \\frac{{{a + b}}}{{{a * b}}}$ "
                f"of the tank per hour, so they need ${_eq(_frac(a * b, a + b), fmt(answer))}$ hours.")
    t1, t2 = rng.sample(range(1, 13), 2)
    speed = rng.randint(5, 120)
    d = speed * t1
    answer = Fraction(d * t2, t1)
    return (f"A train travels ${d}$ km in ${t1}$ hours. At the same speed, how many km does it travel in "
            f"${t2}$ hours?", fmt(answer),
            f"Its speed is ${d} / {t1} = {speed}$ km per hour, so in ${t2}$ hours it travels "
            f"${speed} \\times {t2} = {fmt(answer)}$ km.")


def _sequence(rng: random.Random) -> Problem:
    variant = rng.randrange(3)
    if variant == 0:
        a, d, n = rng.randint(-20, 30), rng.choice([k for k in range(-9, 10) if k]), rng.randint(5, 40)
        total = n * (2 * a + (n - 1) * d) // 2
        return (f"What is the sum of the first ${n}$ terms of the arithmetic sequence ${a}, {a + d}, "
                f"{a + 2 * d}, \\ldots$?", str(total),
                f"The last term is ${a} {_signed((n - 1) * d)} = {a + (n - 1) * d}$, so the sum is "
                f"$\\frac{{{n}({a} {_signed(a + (n - 1) * d)})}}{{2}} = {total}$.")
    if variant == 1:
        a, r, n = rng.randint(1, 9), rng.choice((2, 3, -2, Fraction(1, 2), Fraction(1, 3))), rng.randint(3, 8)
        total = Fraction(a) * (1 - Fraction(r) ** n) / (1 - Fraction(r))
        terms = ", ".join(fmt(Fraction(a) * Fraction(r) ** k) for k in range(3))
        return (f"Find the sum of the first ${n}$ terms of the geometric sequence ${terms}, \\ldots$.",
                fmt(total), f"With first term ${a}$ and ratio ${fmt(Fraction(r))}$ the sum is "
                f"${a} \\cdot \\frac{{1 - ({fmt(Fraction(r))})^{{{n}}}}}{{1 - {fmt(Fraction(r))}}} = {fmt(total)}$.")
    m = rng.randint(1, 60)
    n = m + rng.randint(5, 100)
    total = (n - m + 1) * (m + n) // 2
    return (f"What is the sum of all integers from ${m}$ to ${n}$, inclusive?", str(total),
            f"There are ${n - m + 1}$ integers with average $\\frac{{{m} + {n}}}{{2}}$, so the sum is "
            f"$\\frac{{{n - m + 1} \\cdot {m + n}}}{{2}} = {total}$.")


def _geometry(rng: random.Random) -> Problem:
    variant = rng.randrange(6)
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    if variant == 0:
        what = rng.choice(("area", "perimeter"))
        answer = a * b if what == "area" else 2 * (a + b)
        how = f"{a} \\times {b}" if what == "area" else f"2({a} + {b})"
        return (f"A rectangle is ${a}$ cm long and ${b}$ cm wide. What is its {what}?", str(answer),
                f"The {what} is ${how} = {answer}$.")
    if variant == 1:
        return (f"A square has perimeter ${4 * a}$ m. What is its area in square metres?", str(a * a),
                f"Each side is ${4 * a} / 4 = {a}$, so the area is ${a}^2 = {a * a}$.")
    if variant == 2:
        answer = Fraction(a * b, 2)
        return (f"A right triangle has legs of length ${a}$ and ${b}$. What is its area?", fmt(answer),
                f"The area is $\\frac{{{a} \\times {b}}}{{2}} = {fmt(answer)}$.")
    if variant == 3:
        h = rng.randint(2, 30)
        answer = Fraction((a + b) * h, 2)
        return (f"A trapezoid has parallel sides ${a}$ and ${b}$ and height ${h}$. What is its area?",
                fmt(answer), f"The area is $\\frac{{({a} + {b}) \\times {h}}}{{2}} = {fmt(answer)}$.")
    r = rng.randint(1, 40)
    if variant == 4:
        return (f"What is the area of a circle of radius ${r}$? Express your answer in terms of $\\pi$.",
                f"{r * r}\\pi", f"The area is $\\pi r^2 = {r * r}\\pi$.")
    return (f"What is the circumference of a circle of diameter ${2 * r}$? Express your answer in terms of "
            f"$\\pi$.", f"{2 * r}\\pi", f"The circumference is $\\pi d = {2 * r}\\pi$.")


def _probability(rng: random.Random) -> Problem:
    variant = rng.randrange(4)
    if variant in (0, 1):
        c1, c2 = rng.sample(COLOURS, 2)
        r, b = rng.randint(2, 20), rng.randint(1, 20)
        bag = f"A bag contains ${r}$ {c1} and ${b}$ {c2} marbles."
        if variant == 0:
            answer = Fraction(r, r + b)
            return (f"{bag} One marble is drawn at random. What is the probability that it is {c1}?",
                    fmt(answer), f"${r}$ of the ${r + b}$ marbles are {c1}: $\\frac{{{r}}}{{{r + b}}} = {fmt(answer)}$.")
        answer = Fraction(r * (r - 1), (r + b) * (r + b - 1))
        return (f"{bag} Two marbles are drawn at random without replacement. What is the probability that "
                f"both are {c1}?", fmt(answer),
                f"$\\frac{{{r}}}{{{r + b}}} \\cdot \\frac{{{r - 1}}}{{{r + b - 1}}} = {fmt(answer)}$.")
    if variant == 2:
        s = rng.randint(2, 12)
        ways = 6 - abs(s - 7)
        answer = Fraction(ways, 36)
        return (f"Two fair six-sided dice are rolled. What is the probability that the sum is ${s}$?",
                fmt(answer), f"${ways}$ of the $36$ outcomes sum to ${s}$: $\\frac{{{ways}}}{{36}} = {fmt(answer)}$.")
    n = rng.randint(2, 10)
    k = rng.randint(0, n)
    answer = Fraction(math.comb(n, k), 2**n)
    return (f"A fair coin is flipped ${n}$ times. What is the probability of getting exactly ${k}$ heads?",
            fmt(answer), f"$\\binom{{{n}}}{{{k}}} / 2^{{{n}}} = \\frac{{{math.comb(n, k)}}}{{{2**n}}} = {fmt(answer)}$.")


TEMPLATES: dict[str, Callable[[random.Random], Problem]] = {
    "linear": _linear, "fraction_of": _fraction_of, "percent": _percent, "rate": _rate,
    "sequence": _sequence, "geometry": _geometry, "probability": _probability,
}


# -- files ----------------------------------------------------------------------------------------------
def _gold_text(value: Any, where: str) -> str:
    """The gold answer of a row as text (numbers converted; a ``\\boxed{}`` inside is unwrapped)."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy scalars from parquet
    if isinstance(value, bool) or not isinstance(value, str | int | float) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise DataError(f"{where}: the answer must be a string or a finite number, got {value!r}")
    text = str(value).strip()
    text = extract_boxed(text) or text
    if not text:
        raise DataError(f"{where}: empty answer")
    return text


def load_problems(path: str, question_key: str = "problem", answer_key: str = "answer") -> list[tuple[str, str]]:
    """``(question, gold answer)`` for every row of a JSONL or parquet (``.parquet``/``.pq``) file."""
    if str(path).lower().endswith((".parquet", ".pq")):
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"math task: reading {path} needs pandas and pyarrow installed") from exc
        frame = pd.read_parquet(path)
        missing = [k for k in (question_key, answer_key) if k not in frame.columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(repr(k) for k in missing)}; "
                            f"columns: {', '.join(repr(str(c)) for c in frame.columns) or 'none'}")
        rows = frame[[question_key, answer_key]].to_dict("records")
    else:
        rows = read_jsonl(path, required=(question_key, answer_key))
    out = []
    for i, row in enumerate(rows, start=1):
        question = row[question_key]
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{path}: row {i}: {question_key!r} must be a non-empty string, got {question!r}")
        out.append((question.strip(), _gold_text(row[answer_key], f"{path}: row {i}: {answer_key!r}")))
    if not out:
        raise DataError(f"{path}: no rows")
    return out


# -- task -----------------------------------------------------------------------------------------------
@TASKS.register("math")
class MathTask(Task):
    """Verifiable math problems; options ``kinds``, ``style``, ``path``, ``question_key``, ``answer_key``,
    ``rel_tol`` (see the module docstring)."""

    name = "math"

    def __init__(
        self,
        *,
        kinds: Sequence[str] = tuple(TEMPLATES),
        style: str = "boxed",
        path: str | os.PathLike[str] | None = None,
        question_key: str = "problem",
        answer_key: str = "answer",
        rel_tol: float | None = None,
    ) -> None:
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        if not kinds or any(k not in TEMPLATES for k in kinds):
            raise ValueError(f"math: kinds must be a non-empty subset of {tuple(TEMPLATES)}, got {kinds!r}")
        if style not in STYLES:
            raise ValueError(f"math: style must be one of {STYLES}, got {style!r}")
        for key_name, key in (("question_key", question_key), ("answer_key", answer_key)):
            if not isinstance(key, str) or not key:
                raise ValueError(f"math: {key_name} must be a non-empty string, got {key!r}")
        try:
            self._tolerance = as_rel_tol(rel_tol)  # exact Fraction (None: exact comparison)
        except ValueError as exc:
            raise ValueError(f"math: {exc}") from None
        self.rel_tol = rel_tol
        self.kinds, self.style, self.path = kinds, style, None if path is None else os.fspath(path)
        self.question_key, self.answer_key = question_key, answer_key
        self.pool: list[Sample] | None = None
        if self.path is not None:
            seen: dict[str, Sample] = {}
            for question, gold in load_problems(self.path, question_key, answer_key):
                prompt = self._prompt(question)
                seen.setdefault(prompt, {"task": self.name, "prompt": prompt, "answer": gold})
            self.pool = list(seen.values())

    def _prompt(self, question: str) -> str:
        return f"{question}\n\n{INSTRUCTIONS[self.style]}"

    # -- samples ------------------------------------------------------------------------------------
    def make_sample(self, rng: random.Random) -> Sample:
        """A generated problem of a kind drawn uniformly from ``kinds`` (or a random row of the file)."""
        if self.pool is not None:
            return dict(rng.choice(self.pool))
        kind = rng.choice(self.kinds)
        question, answer, solution = TEMPLATES[kind](rng)
        return {"task": self.name, "prompt": self._prompt(question), "answer": answer, "kind": kind,
                "solution": solution}

    def samples(self, n: int, split: str = "train", seed: int = 0, max_tries: int | None = None) -> list[Sample]:
        """Generated: as :meth:`Task.samples`. From a file: ``n`` distinct rows of ``split`` in a seeded order."""
        if self.pool is None:
            return super().samples(n, split, seed, max_tries)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rows = [s for s in self.pool if split_of(s["prompt"], self.test_fraction) == split]
        if n > len(rows):
            raise RuntimeError(f"task 'math': {self.path} has only {len(rows)} distinct {split} problems, "
                               f"{n} requested")
        random.Random(f"{self.name}/{split}/{seed}").shuffle(rows)
        return [dict(s) for s in rows[:n]]

    # -- parsing and rewards ------------------------------------------------------------------------
    def final_answer(self, completion: str) -> str | None:
        """The answer graded: last ``<answer>`` first for ``tagged``, else :func:`extract_answer`."""
        if not isinstance(completion, str):
            return None
        if self.style == "tagged":
            return extract_last_answer(completion) or extract_answer(completion)
        return extract_answer(completion)

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        if not isinstance(completion, str):
            return False
        found = extract_boxed(completion) if self.style == "boxed" else extract_last_answer(completion)
        return bool(found)

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        answer = self.final_answer(completion)
        return answer is not None and math_equal(answer, str(sample["answer"]), rel_tol=self._tolerance)

    def reward_functions(self) -> dict[str, RewardFn]:
        """``answer``: 1.0 if correct else 0.0; ``format``: 0.0 if well formed else -0.1."""
        return answer_and_format_rewards(self, ANSWER_REWARD, FORMAT_PENALTY)

    # -- demonstrations -----------------------------------------------------------------------------
    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """The worked solution (generated samples) followed by the boxed or tagged gold answer."""
        gold = str(sample["answer"])
        final = f"\\boxed{{{gold}}}" if self.style == "boxed" else f"<answer>{gold}</answer>"
        solution = sample.get("solution") or "Working through the problem gives the result."
        return f"{solution}\nThe final answer is {final}" + ("." if self.style == "boxed" else "")
