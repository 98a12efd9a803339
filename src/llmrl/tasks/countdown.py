"""Countdown: combine the given numbers with + - * / (each exactly once) to reach a target.

Formats
-------
``style="plain"`` (tiny character-level models):
    prompt ``"3 5 7>22:"`` — the numbers separated by single spaces, ``>``, the target, ``:``;
    completion ``"3*5+7"`` — an equation without spaces (spaces are tolerated), optionally followed by
    ``=22``.
``style="tagged"`` (chat/instruct models):
    prompt ``"Using the numbers [3, 5, 7], create an equation that equals 22. ..."`` asking for the
    equation inside <answer></answer>; completion e.g. ``"3 * 5 + 7 = 22\\n<answer>3 * 5 + 7</answer>"``;
    the LAST ``<answer>...</answer>`` block is parsed.

Verifier: the equation is parsed with :mod:`ast` (never evaluated by Python): only non-negative integer
literals, binary + - * /, unary minus and parentheses are allowed; it is evaluated with exact fractions.
It is correct iff the multiset of literals equals the given numbers and the value equals the target
(within 1e-6; exact here). Equations longer than ``MAX_EQUATION_CHARS`` characters or nested deeper than
``MAX_DEPTH`` are malformed, so megabyte-long completions are rejected in microseconds.

Rewards (as in TinyZero, but as two components that add up):
``answer``: 1.0 if correct else 0.0; ``format``: 0.1 if an equation is parseable (well formed) else 0.0.
So a correct answer scores 1.1, a parseable wrong one 0.1 and anything else 0.0 (TinyZero's single
score gives 1.0 / 0.1 / 0.0).
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from llmrl.rewards.base import RewardFn
from llmrl.rewards.logic import extract_last_answer
from llmrl.tasks.base import TASKS, Task

if TYPE_CHECKING:
    from llmrl.core.types import Sample

ANSWER_REWARD = 1.0
FORMAT_REWARD = 0.1
MAX_EQUATION_CHARS = 1000
MAX_DEPTH = 64
_STYLES = ("plain", "tagged")
_CHARS_RE = re.compile(r"[0-9+\-*/()\s]+")
_RHS_RE = re.compile(r"\s*-?\d{1,30}\s*")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class _Malformed(Exception):
    """The equation uses something outside the allowed grammar."""


@dataclass(frozen=True)
class Equation:
    """A parsed equation: its integer literals (in order), value (None if it divides by zero) and the
    optional right-hand side integer written after ``=``."""

    numbers: tuple[int, ...]
    value: Fraction | None
    rhs: int | None = None


def _walk(node: ast.AST, numbers: list[int], depth: int) -> Fraction | None:
    """Exact value of an allowed expression node (None = division by zero); raises _Malformed."""
    if depth > MAX_DEPTH:
        raise _Malformed("nested too deeply")
    if isinstance(node, ast.Constant):
        if type(node.value) is not int or node.value < 0:
            raise _Malformed(f"literal {node.value!r} is not a non-negative integer")
        numbers.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _walk(node.operand, numbers, depth + 1)
        return None if inner is None else -inner
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
        left = _walk(node.left, numbers, depth + 1)
        right = _walk(node.right, numbers, depth + 1)
        if left is None or right is None:
            return None
        op = _AST_OPS[type(node.op)]
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        return None if right == 0 else left / right
    raise _Malformed(f"{type(node).__name__} is not allowed")


def parse_equation(text: str) -> Equation | None:
    """Parse ``"expr"`` or ``"expr = integer"``; None if malformed. Never raises, never calls eval.

    The value is computed only from the literals in the text, so callers should check the literals
    against the allowed numbers (which bounds the magnitude) before trusting it; with at most
    ``MAX_EQUATION_CHARS`` characters the work is bounded either way (literals have < 1000 digits,
    and there is no exponentiation).
    """
    if not isinstance(text, str) or len(text) > MAX_EQUATION_CHARS:
        return None
    lhs, sep, rhs_text = text.partition("=")
    rhs: int | None = None
    if sep:
        if not _RHS_RE.fullmatch(rhs_text):
            return None
        rhs = int(rhs_text)
    if not _CHARS_RE.fullmatch(lhs):
        return None
    try:
        tree = ast.parse(lhs.strip(), mode="eval")
        numbers: list[int] = []
        value = _walk(tree.body, numbers, 0)
    except (_Malformed, SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None
    return Equation(numbers=tuple(numbers), value=value, rhs=rhs)


def check_equation(text: str, numbers: Sequence[int], target: int) -> bool:
    """True iff ``text`` is a well-formed equation using each of ``numbers`` exactly once whose value is
    ``target`` (and whose optional ``= rhs`` is the target too)."""
    eq = parse_equation(text)
    if eq is None or eq.value is None:
        return False
    if Counter(eq.numbers) != Counter(int(n) for n in numbers):
        return False
    if eq.rhs is not None and eq.rhs != target:
        return False
    return abs(eq.value - Fraction(target)) <= Fraction(1, 10**6)


def _combine(
    op: str, left: tuple[int, str, int], right: tuple[int, str, int], sep: str
) -> tuple[int, str, int]:
    """Join two (value, text, precedence) items with minimal parentheses."""
    lv, lt, lp = left
    rv, rt, rp = right
    p = _PREC[op]
    if lp < p:
        lt = f"({lt})"
    if rp < p or (rp == p and op in "-/"):
        rt = f"({rt})"
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv}[op] if op != "/" else lv // rv
    return value, f"{lt}{sep}{op}{sep}{rt}", p


@TASKS.register("countdown")
class CountdownTask(Task):
    """Reach ``target`` (1..max_target) from ``num_numbers`` numbers in 1..max_number.

    Targets are always reachable: each sample is built from a random expression that uses every
    number exactly once (division only when exact), and that expression is the gold ``answer``.
    """

    name = "countdown"
    required_fields = {"numbers": list[int], "target": int}  # the verifier checks the equation, not `answer`

    def __init__(
        self,
        *,
        num_numbers: int = 3,
        max_number: int = 20,
        max_target: int = 100,
        style: str = "plain",
    ) -> None:
        if not isinstance(num_numbers, int) or not 2 <= num_numbers <= 8:
            raise ValueError(f"countdown: num_numbers must be an int in 2..8, got {num_numbers!r}")
        if not isinstance(max_number, int) or max_number < 1:
            raise ValueError(f"countdown: max_number must be an int >= 1, got {max_number!r}")
        if not isinstance(max_target, int) or max_target < 1:
            raise ValueError(f"countdown: max_target must be an int >= 1, got {max_target!r}")
        if style not in _STYLES:
            raise ValueError(f"countdown: style must be one of {_STYLES}, got {style!r}")
        self.num_numbers = num_numbers
        self.max_number = max_number
        self.max_target = max_target
        self.style = style

    # -- generation -------------------------------------------------------------------------------
    def _random_expression(self, numbers: Sequence[int], rng: random.Random) -> tuple[int, str]:
        """Combine random pairs with random operators until one expression is left."""
        sep = " " if self.style == "tagged" else ""
        items = [(n, str(n), 3) for n in numbers]
        while len(items) > 1:
            i, j = rng.sample(range(len(items)), 2)
            left, right = items[i], items[j]
            ops = ["+", "-", "*"]
            if right[0] != 0 and left[0] % right[0] == 0:
                ops.append("/")
            merged = _combine(rng.choice(ops), left, right, sep)
            items = [it for k, it in enumerate(items) if k not in (i, j)] + [merged]
        return items[0][0], items[0][1]

    def make_sample(self, rng: random.Random) -> Sample:
        """Draw numbers (with replacement) and a random expression; retry until 1 <= value <= max_target."""
        for _ in range(10_000):
            numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
            target, expr = self._random_expression(numbers, rng)
            if 1 <= target <= self.max_target:
                break
        else:
            raise RuntimeError(
                f"countdown: no target in 1..{self.max_target} after 10000 draws; raise max_target"
            )
        if self.style == "plain":
            prompt = f"{' '.join(map(str, numbers))}>{target}:"
        else:
            prompt = (
                f"Using the numbers {numbers}, create an equation that equals {target}. You can use "
                "+, -, * and / and parentheses, and each number must be used exactly once. Show your "
                "work, then give only the equation (without '= target') inside <answer></answer>, "
                "for example <answer>(1 + 2) / 3</answer>."
            )
        return {"task": self.name, "prompt": prompt, "answer": expr, "numbers": numbers, "target": target}

    # -- parsing and rewards ----------------------------------------------------------------------
    def _equation_text(self, completion: str) -> str | None:
        if not isinstance(completion, str):
            return None
        if self.style == "plain":
            return completion.strip()
        return extract_last_answer(completion)

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        """An equation can be extracted and parsed (whatever numbers it uses)."""
        text = self._equation_text(completion)
        return text is not None and parse_equation(text) is not None

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        text = self._equation_text(completion)
        return text is not None and check_equation(text, sample["numbers"], int(sample["target"]))

    def reward_functions(self) -> dict[str, RewardFn]:
        """``answer``: 1.0 if correct else 0.0; ``format``: 0.1 if an equation parses else 0.0."""

        def answer(completion: str, sample: Mapping[str, Any]) -> float:
            return ANSWER_REWARD if self.is_correct(completion, sample) else 0.0

        def format_(completion: str, sample: Mapping[str, Any]) -> float:
            return FORMAT_REWARD if self.is_well_formed(completion, sample) else 0.0

        return {"answer": answer, "format": format_}

    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """``"3*5+7"`` (plain) or ``"3 * 5 + 7 = 22\\n<answer>3 * 5 + 7</answer>"`` (tagged)."""
        if self.style == "plain":
            return str(sample["answer"])
        return f"{sample['answer']} = {sample['target']}\n<answer>{sample['answer']}</answer>"
