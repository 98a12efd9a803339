"""Integer arithmetic: ``a op b [op c ...]`` with + - * and standard precedence.

Formats
-------
``style="plain"`` (tiny character-level models trained from scratch):
    prompt ``"23+45="``, completion ``"68"`` (then EOS). Multi-operand prompts look like ``"7+12*3="``
    and follow standard precedence (* before + and -, left to right). Results may be negative
    (``"12-45="`` → ``"-33"``). The completion, stripped of surrounding whitespace, must be an integer.
``style="steps"`` (tiny models with a worked rationale; two operands, ``+`` only):
    prompt ``"47+38="`` as plain, completion ``"7+8=15,4+3+1=8#85"``: one step per column from the right (its
    digits, ``+carry`` when there is one, ``=`` the column sum), steps joined by ``,``, then ``#`` and the result.
    The answer is the integer after the LAST ``#``; well formed iff there is one.
``style="tagged"`` (chat/instruct models):
    prompt ``"What is 23 + 45? Give the final result as an integer inside <answer></answer>."``,
    completion e.g. ``"23 + 45 = 68\\n<answer>68</answer>"``; the LAST ``<answer>...</answer>`` block is
    parsed and its stripped content must be an integer.
``style="chat"`` (instruct models answering in their own words, through their chat template):
    prompt ``"What is 23 + 45?"`` (a user message; with ``system_prompt``, a system message first), completion
    e.g. ``"23 + 45 = 68"`` or ``"The answer is 68."``: the answer is the LAST integer in the completion
    (an optional minus and digits, not inside a longer number or word; a trailing ``.`` or ``,`` is fine). Well formed iff the
    completion has an integer. This is how GSM8K-style evaluations read a chat model's answer.

Rewards
-------
``answer``: 1.0 if the parsed integer equals the result, else 0.0.
``format``: 0.0 if well formed (parsable as above), else -0.1.
Range of the sum: [-0.1, 1.0]. Integers are compared as normalised digit strings (no ``int()`` on model
output), so arbitrarily long completions are cheap.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmrl.rewards.base import RewardFn
from llmrl.rewards.logic import extract_last_answer
from llmrl.tasks.base import TASKS, TEXT, Task, answer_and_format_rewards

if TYPE_CHECKING:
    from llmrl.core.types import Sample

ANSWER_REWARD = 1.0
FORMAT_PENALTY = -0.1
_OPS = ("+", "-", "*")
_STYLES = ("plain", "tagged", "chat", "steps")
STEP_SEP, ANSWER_MARK = ",", "#"  # style steps: between column steps, before the result
_LAST_INT_RE = re.compile(r"(?<![\w.])-?\d+(?![\w]|\.\d)")
MAX_CHAT_CHARS = 100_000  # a chat completion longer than this is read from its last 100k characters
_INT_RE = re.compile(r"-?\d+")


def _normalise_int(text: str) -> str | None:
    """Canonical digit string of an integer literal (``"-007"`` → ``"-7"``, ``"-0"`` → ``"0"``), else None."""
    text = text.strip()
    if not _INT_RE.fullmatch(text):
        return None
    sign = "-" if text[0] == "-" else ""
    digits = text.lstrip("-").lstrip("0") or "0"
    return "0" if digits == "0" else sign + digits


def evaluate(
    operands: Sequence[int],
    ops: Sequence[str],
    add: Callable[[int, int], int] = lambda a, b: a + b,
    sub: Callable[[int, int], int] = lambda a, b: a - b,
    mul: Callable[[int, int], int] = lambda a, b: a * b,
) -> int:
    """Value of ``operands[0] ops[0] operands[1] ...`` with standard precedence, using the given
    binary operations (pass sloppy ones to model a careless teacher)."""
    if len(ops) != len(operands) - 1:
        raise ValueError(
            f"need len(ops) == len(operands) - 1, got {len(ops)} ops for {len(operands)} operands"
        )
    terms: list[int] = [operands[0]]
    signs: list[str] = []
    for op, x in zip(ops, operands[1:]):
        if op == "*":
            terms[-1] = mul(terms[-1], x)
        elif op in ("+", "-"):
            signs.append(op)
            terms.append(x)
        else:
            raise ValueError(f"unknown operator {op!r}")
    acc = terms[0]
    for op, t in zip(signs, terms[1:]):
        acc = add(acc, t) if op == "+" else sub(acc, t)
    return acc


def column_steps(a: int, b: int, carry: bool = True) -> tuple[list[str], int]:
    """Column-wise addition of non-negative ``a`` + ``b`` (style ``steps``): the steps from the rightmost column
    (``"7+8=15"``, ``"4+3+1=8"``) and the result. ``carry=False``: a sloppy adder that forgets every carry-in
    (``"4+3=7"``), writes each column's last digit and the last column's sum in full (47+38 -> 75)."""
    if a < 0 or b < 0:
        raise ValueError(f"column_steps: operands must be non-negative, got {a}, {b}")
    steps, value, c, place = [], 0, 0, 1
    while True:
        x, y = a % 10, b % 10
        s = x + y + (c if carry else 0)
        steps.append(f"{x}+{y}" + (f"+{c}" if carry and c else "") + f"={s}")
        a, b = a // 10, b // 10
        if not (a or b):
            return steps, value + s * place
        value, c, place = value + (s % 10) * place, s // 10, place * 10


def steps_completion(a: int, b: int, carry: bool = True) -> str:
    """The style-steps completion of ``a + b``: ``"7+8=15,4+3+1=8#85"`` (``carry=False``: the sloppy one)."""
    steps, total = column_steps(a, b, carry)
    return STEP_SEP.join(steps) + ANSWER_MARK + str(total)


def _digitwise(a: int, b: int, combine: Callable[[int, int], int]) -> int:
    """Combine the decimal digits of non-negative ``a`` and ``b`` position by position (no carries)."""
    out, place = 0, 1
    while a or b:
        out += combine(a % 10, b % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return out


def sloppy_add(a: int, b: int) -> int:
    """Addition that drops every carry (digit-wise sum mod 10); signs handled like a person would."""
    if a >= 0 and b >= 0:
        return _digitwise(a, b, lambda x, y: (x + y) % 10)
    if a < 0 and b < 0:
        return -_digitwise(-a, -b, lambda x, y: (x + y) % 10)
    return sloppy_sub(a, -b)


def sloppy_sub(a: int, b: int) -> int:
    """Subtraction that forgets to borrow: digit-wise |difference|, with the sign of the true result."""
    if b < 0:
        return sloppy_add(a, -b)
    if a < 0:
        return -sloppy_add(-a, b)
    magnitude = _digitwise(a, b, lambda x, y: abs(x - y))
    return -magnitude if a < b else magnitude


def sloppy_mul(a: int, b: int, rng: random.Random) -> int:
    """Multiplication off by one in the last digit (magnitude ±1, chosen by ``rng``; 0 becomes 1)."""
    p = a * b
    magnitude = abs(p) + rng.choice((-1, 1))
    if abs(p) == 0:
        magnitude = 1
    return -magnitude if p < 0 else magnitude


@TASKS.register("arithmetic")
class ArithmeticTask(Task):
    """Integer arithmetic over random operands with up to ``digits`` digits.

    Options: ``digits`` (max digits per operand; operands are uniform in [0, 10**digits)),
    ``ops`` (operators to draw from), ``num_operands`` (>= 2), ``style`` ("plain", "tagged" or "chat"),
    ``system_prompt`` (style chat: a system message before the question; None = the chat template's default).
    """

    name = "arithmetic"
    wrong_demonstration_fields = {"operands": list[int], "ops": list[str]}

    def __init__(
        self,
        *,
        digits: int = 2,
        ops: Sequence[str] = _OPS,
        num_operands: int = 2,
        style: str = "plain",
        system_prompt: str | None = None,
    ) -> None:
        if not isinstance(digits, int) or not 1 <= digits <= 18:
            raise ValueError(f"arithmetic: digits must be an int in 1..18, got {digits!r}")
        ops = tuple(ops)
        if not ops or any(op not in _OPS for op in ops):
            raise ValueError(f"arithmetic: ops must be a non-empty subset of {_OPS}, got {ops!r}")
        if not isinstance(num_operands, int) or num_operands < 2:
            raise ValueError(f"arithmetic: num_operands must be an int >= 2, got {num_operands!r}")
        if style not in _STYLES:
            raise ValueError(f"arithmetic: style must be one of {_STYLES}, got {style!r}")
        if style == "steps" and (ops != ("+",) or num_operands != 2):
            raise ValueError(f"arithmetic: style 'steps' needs ops ['+'] and num_operands 2, got {list(ops)}, "
                             f"{num_operands}")
        self.digits = digits
        self.ops = ops
        self.num_operands = num_operands
        if system_prompt is not None and (style != "chat" or not isinstance(system_prompt, str)):
            raise ValueError("arithmetic: system_prompt (a string) goes with style='chat'")
        self.style = style
        self.system_prompt = system_prompt
        if style in ("tagged", "chat", "steps"):  # the demonstration writes the expression (steps) out
            self.demonstration_fields = {"answer": TEXT, "operands": list[int], "ops": list[str]}

    # -- generation -------------------------------------------------------------------------------
    def _expression(self, operands: Sequence[int], ops: Sequence[str]) -> str:
        sep = "" if self.style in ("plain", "steps") else " "
        parts = [str(operands[0])]
        for op, x in zip(ops, operands[1:]):
            parts += [op, str(x)]
        return sep.join(parts)

    def make_sample(self, rng: random.Random) -> Sample:
        """Operands uniform in [0, 10**digits), operators uniform over ``ops``."""
        operands = [rng.randrange(10**self.digits) for _ in range(self.num_operands)]
        ops = [rng.choice(self.ops) for _ in range(self.num_operands - 1)]
        expr = self._expression(operands, ops)
        prompt: str | list[dict[str, str]]
        if self.style in ("plain", "steps"):
            prompt = f"{expr}="
        elif self.style == "chat":
            prompt = f"What is {expr}?"
            if self.system_prompt is not None:
                prompt = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}]
        else:
            prompt = f"What is {expr}? Give the final result as an integer inside <answer></answer>."
        return {
            "task": self.name,
            "prompt": prompt,
            "answer": str(evaluate(operands, ops)),
            "operands": operands,
            "ops": ops,
        }

    # -- parsing and rewards ----------------------------------------------------------------------
    def parse(self, completion: str) -> str | None:
        """The completion's integer answer as a canonical digit string, or None if malformed."""
        if not isinstance(completion, str):
            return None
        if self.style == "chat":
            found = _LAST_INT_RE.findall(completion[-MAX_CHAT_CHARS:])
            return _normalise_int(found[-1]) if found else None
        if self.style == "steps":
            mark = completion.rfind(ANSWER_MARK)
            return None if mark < 0 else _normalise_int(completion[mark + 1 :])
        text = completion if self.style == "plain" else extract_last_answer(completion)
        return None if text is None else _normalise_int(text)

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return self.parse(completion) is not None

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        got = self.parse(completion)
        return got is not None and got == _normalise_int(str(sample["answer"]))

    def reward_functions(self) -> dict[str, RewardFn]:
        """``answer``: 1.0 if correct else 0.0; ``format``: 0.0 if well formed else -0.1."""
        return answer_and_format_rewards(self, ANSWER_REWARD, FORMAT_PENALTY)

    # -- demonstrations ---------------------------------------------------------------------------
    def _write(self, sample: Mapping[str, Any], value: str) -> str:
        if self.style == "plain":
            return value
        expr = self._expression(sample["operands"], sample["ops"])
        if self.style == "chat":
            return f"{expr} = {value}"
        return f"{expr} = {value}\n<answer>{value}</answer>"

    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """A correct completion: ``"68"`` (plain), ``"23 + 45 = 68\\n<answer>68</answer>"`` (tagged) or
        ``"23 + 45 = 68"`` (chat); style steps: ``"3+5=8,2+4=6#68"`` (:func:`steps_completion`)."""
        if self.style == "steps":
            return steps_completion(*sample["operands"])
        return self._write(sample, str(sample["answer"]))

    def wrong_demonstration(self, sample: Mapping[str, Any], rng: random.Random) -> str:
        """A plausibly wrong completion in the same format, from a sloppy teacher: '+' drops carries,
        '-' forgets to borrow, '*' is off by one in the last digit; precedence is still respected.
        The result may coincide with the right answer (e.g. no carry was needed); it is returned anyway.
        Style steps: the column steps with every carry-in forgotten (``steps_completion(..., carry=False)``)."""
        if self.style == "steps":
            return steps_completion(*sample["operands"], carry=False)
        value = evaluate(
            sample["operands"],
            sample["ops"],
            add=sloppy_add,
            sub=sloppy_sub,
            mul=lambda a, b: sloppy_mul(a, b, rng),
        )
        return self._write(sample, str(value))
