"""Knights & Knaves logic puzzles with a unique solution (Logic-RL: Xie et al., 2025, arXiv:2502.14768).

Every inhabitant is a knight (always truthful) or a knave (always lies) and makes one statement: an
expression tree over the leaves ``telling-truth(i)`` ("X is a knight") and ``lying(i)`` ("X is a
knave") with the operators not, and, or (width 2), ``->`` ("if A then B") and ``<=>`` ("A if and only
if B"). Sampling with depth budget 2: draw d in 0..5; d == 0 or budget 1 → leaf; 1 → not; 2/3 → and/or;
4/5 → ->/<=>; children get budget − 1; children of one operator are distinct; nobody says "I am lying".
A puzzle is kept only when exactly one of the 2^n role assignments satisfies
AND_i (i is a knight <=> statement_i) (up to 1000 tries per sample).

Sample fields: ``prompt`` = [system, user] chat messages; ``assistant_prefix`` = ``"<think>"`` (the
assistant turn is pre-filled with it); ``answer`` = ``"(1) Zoey is a knight\\n(2) Oliver is a knave..."``;
``solution`` = ``{name: "knight" | "knave"}`` in puzzle order; ``names``; ``statements`` (the trees as
nested JSON lists, e.g. ``["and", ["telling-truth", 1], ["lying", 2]]``); ``n_people``.

Rewards (``llmrl.rewards.logic``), applied to ``assistant_prefix + completion``: ``format`` +1 / −1 and
``answer`` +2 / −1.5 / −2; total in [−3, 3]. A completion therefore continues after ``<think>``, e.g.
``" ... reasoning ... </think>\\n<answer> (1) Zoey is a knight\\n(2) ... </answer>"``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from llmrl.rewards.base import RewardFn
from llmrl.rewards.logic import KK_ANSWER_RIGHT, kk_format_ok, kk_reward_components
from llmrl.tasks.base import TASKS, TEXT, Task

if TYPE_CHECKING:
    from llmrl.core.types import Sample

DEPTH = 2
WIDTH = 2
MAX_TRIES = 1000
MIN_PEOPLE, MAX_PEOPLE = 2, 8
ASSISTANT_PREFIX = "<think>"

NAMES = (
    "Zoey", "Oliver", "Emma", "Liam", "Ava", "Noah", "Mia", "Lucas", "Sofia", "Ethan",
    "Chloe", "Mason", "Lily", "Logan", "Grace", "Jack", "Harper", "Owen", "Aria", "Henry",
    "Ella", "James", "Nora", "Samuel", "Ruby", "Leo", "Stella", "Daniel", "Hazel", "David",
    "Violet", "Jacob", "Aurora", "Michael", "Evelyn", "William", "Scarlett", "Benjamin", "Abigail",
    "Elijah", "Victoria", "Isaac", "Penelope", "Gabriel", "Layla", "Matthew", "Riley", "Sebastian",
    "Luna", "Joseph",
)  # fmt: skip

# {s}: the statement starting lower-case; {S}: the same starting upper-case (quoted speech).
TEMPLATES = (
    "{name} said that {s}.",
    "{name} told you that {s}.",
    "{name} claims that {s}.",
    "{name} stated that {s}.",
    "{name} mentioned that {s}.",
    '{name} said, "{S}."',
    '{name} remarked, "{S}."',
    '{name} noted, "{S}."',
    '"{S}," {name} declared.',
    '"{S}," {name} insisted.',
    'According to {name}, "{S}."',
    'In {name}\'s words: "{S}."',
    'As {name} put it, "{S}."',
    '{name} asserted: "{S}."',
)

SYSTEM_PROMPT = (
    "You are a helpful assistant. The assistant first thinks about the reasoning process and then "
    "gives the user the answer. The reasoning process and the answer are enclosed within <think> "
    "</think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here "
    "</think> <answer> answer here </answer>. Now the user asks you to solve a logical reasoning "
    "problem. After thinking, when you finally reach a conclusion, clearly state the identity of each "
    "character within <answer> </answer> tags, i.e., <answer> (1) Zoey is a knight\n(2) ... </answer>."
)

PREAMBLE = (
    "A very special island is inhabited only by knights and knaves. Knights always tell the truth, "
    "and knaves always lie. You meet {n} inhabitants: {names}."
)
CLOSING = "So who is a knight and who is a knave?"

Expr = tuple  # ("telling-truth", i) | ("lying", i) | ("not", e) | (op, e1, e2, ...)
_LEAVES = ("telling-truth", "lying")


# -- generation ---------------------------------------------------------------------------------------
def sample_statement(
    rng: random.Random, speaker: int, n_people: int, depth: int = DEPTH, width: int = WIDTH
) -> Expr:
    """One random statement by ``speaker`` following the Logic-RL sampling rule."""
    d = rng.randint(0, 5)
    if d == 0 or depth <= 1:
        while True:
            leaf = (rng.choice(_LEAVES), rng.randrange(n_people))
            if leaf != ("lying", speaker):  # nobody says "I am lying"
                return leaf
    if d == 1:
        return ("not", sample_statement(rng, speaker, n_people, depth - 1, width))
    if d in (2, 3):
        op, count = ("and", "or")[d - 2], rng.randint(2, width)
    else:
        op, count = ("->", "<=>")[d - 4], 2
    children: list[Expr] = []
    while len(children) < count:  # distinct sub-statements
        child = sample_statement(rng, speaker, n_people, depth - 1, width)
        if child not in children:
            children.append(child)
    return (op, *children)


@cache
def _knight_masks(n_people: int) -> tuple[int, ...]:
    """Bit a of mask i is set iff person i is a knight in assignment a (bit i of a)."""
    return tuple(sum(1 << a for a in range(1 << n_people) if (a >> i) & 1) for i in range(n_people))


def truth_mask(expr: Sequence[Any], n_people: int) -> int:
    """Bitmask over all 2^n assignments: bit a is set iff ``expr`` is true in assignment a."""
    full = (1 << (1 << n_people)) - 1
    op = expr[0]
    if op == "telling-truth":
        return _knight_masks(n_people)[expr[1]]
    if op == "lying":
        return full & ~_knight_masks(n_people)[expr[1]]
    parts = [truth_mask(child, n_people) for child in expr[1:]]
    if op == "not":
        return full & ~parts[0]
    if op == "and":
        out = full
        for p in parts:
            out &= p
        return out
    if op == "or":
        out = 0
        for p in parts:
            out |= p
        return out
    if op == "->":
        return full & (~parts[0] | parts[1])
    if op == "<=>":
        return full & ~(parts[0] ^ parts[1])
    raise ValueError(f"unknown operator {op!r}")


def solve(statements: Sequence[Sequence[Any]]) -> list[tuple[bool, ...]]:
    """All role assignments (True = knight, in person order) consistent with the statements."""
    n = len(statements)
    full = (1 << (1 << n)) - 1
    consistent = full
    for i, stmt in enumerate(statements):
        consistent &= full & ~(_knight_masks(n)[i] ^ truth_mask(stmt, n))
    return [tuple(bool((a >> i) & 1) for i in range(n)) for a in range(1 << n) if (consistent >> a) & 1]


# -- text -----------------------------------------------------------------------------------------------
def _is_simple(expr: Sequence[Any]) -> bool:
    return expr[0] in _LEAVES or (expr[0] == "not" and expr[1][0] in _LEAVES)


def render(expr: Sequence[Any], names: Sequence[str]) -> str:
    """English text of a statement, starting lower-case unless it starts with a name."""
    op = expr[0]
    if op in _LEAVES:
        return f"{names[expr[1]]} is a {'knight' if op == 'telling-truth' else 'knave'}"
    if op == "not" and expr[1][0] in _LEAVES:
        inner = expr[1]
        return f"{names[inner[1]]} is not a {'knight' if inner[0] == 'telling-truth' else 'knave'}"
    parts = [render(c, names) if _is_simple(c) else f"({render(c, names)})" for c in expr[1:]]
    if op == "not":
        return f"it is not the case that {parts[0]}"
    if op in ("and", "or"):
        return f", {op} ".join(parts) if len(parts) > 2 else f" {op} ".join(parts)
    if op == "->":
        return f"if {parts[0]} then {parts[1]}"
    if op == "<=>":
        return f"{parts[0]} if and only if {parts[1]}"
    raise ValueError(f"unknown operator {op!r}")


def _join_names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def answer_text(names: Sequence[str], roles: Sequence[str]) -> str:
    """``"(1) Zoey is a knight\\n(2) Oliver is a knave"``."""
    return "\n".join(f"({i}) {name} is a {role}" for i, (name, role) in enumerate(zip(names, roles), start=1))


def _to_json(expr: Sequence[Any]) -> list[Any]:
    return [expr[0], expr[1]] if expr[0] in _LEAVES else [expr[0], *(_to_json(c) for c in expr[1:])]


@TASKS.register("knights_knaves")
class KnightsKnavesTask(Task):
    """Knights & Knaves puzzles with ``n_people`` inhabitants (an int, or an inclusive (lo, hi) range
    drawn uniformly per sample; 2..8 allowed)."""

    name = "knights_knaves"
    required_fields = {"solution": dict[str, str]}  # name -> "knight" / "knave"; the reward never reads `answer`
    demonstration_fields = {"answer": TEXT, "solution": dict[str, str]}

    def __init__(self, *, n_people: int | Sequence[int] = (3, 7)) -> None:
        if isinstance(n_people, int) and not isinstance(n_people, bool):
            lo = hi = n_people
        elif (
            isinstance(n_people, Sequence)
            and len(n_people) == 2
            and all(isinstance(x, int) for x in n_people)
        ):
            lo, hi = int(n_people[0]), int(n_people[1])
        else:
            raise ValueError(f"knights_knaves: n_people must be an int or a (lo, hi) pair, got {n_people!r}")
        if not MIN_PEOPLE <= lo <= hi <= MAX_PEOPLE:
            raise ValueError(
                f"knights_knaves: n_people must lie in {MIN_PEOPLE}..{MAX_PEOPLE} with lo <= hi, got {n_people!r}"
            )
        self.n_range = (lo, hi)

    def make_sample(self, rng: random.Random) -> Sample:
        """A puzzle with exactly one solution, as chat messages plus gold fields."""
        n = rng.randint(*self.n_range)
        for _ in range(MAX_TRIES):
            statements = [sample_statement(rng, i, n) for i in range(n)]
            found = solve(statements)
            if len(found) == 1:
                break
        else:  # pragma: no cover - practically unreachable for n <= 8
            raise RuntimeError(f"knights_knaves: no uniquely solvable {n}-person puzzle in {MAX_TRIES} tries")
        names = rng.sample(NAMES, n)
        roles = ["knight" if k else "knave" for k in found[0]]
        lines = []
        for i, stmt in enumerate(statements):
            s = render(stmt, names)
            lines.append(rng.choice(TEMPLATES).format(name=names[i], s=s, S=s[0].upper() + s[1:]))
        puzzle = " ".join([PREAMBLE.format(n=n, names=_join_names(names)), *lines, CLOSING])
        return {
            "task": self.name,
            "prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": puzzle}],
            "assistant_prefix": ASSISTANT_PREFIX,
            "answer": answer_text(names, roles),
            "solution": dict(zip(names, roles)),
            "names": names,
            "statements": [_to_json(s) for s in statements],
            "n_people": n,
        }

    # -- rewards ----------------------------------------------------------------------------------------
    @staticmethod
    def _full_text(completion: str, sample: Mapping[str, Any]) -> str:
        prefix = sample.get("assistant_prefix") or ""
        return f"{prefix}{completion}" if isinstance(completion, str) else str(prefix)

    def components(self, completion: str, sample: Mapping[str, Any]) -> dict[str, float]:
        """``{"format": ..., "answer": ...}`` of ``assistant_prefix + completion``."""
        return kk_reward_components(self._full_text(completion, sample), sample["solution"])

    def reward_functions(self) -> dict[str, RewardFn]:
        """``format``: +1 / −1; ``answer``: +2 right, −1.5 wrong, −2 missing/unparsable/bad format."""

        def format_(completion: str, sample: Mapping[str, Any]) -> float:
            return self.components(completion, sample)["format"]

        def answer(completion: str, sample: Mapping[str, Any]) -> float:
            return self.components(completion, sample)["answer"]

        return {"format": format_, "answer": answer}

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return kk_format_ok(self._full_text(completion, sample))

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return self.components(completion, sample)["answer"] == KK_ANSWER_RIGHT

    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """A completion continuing after ``<think>`` that scores 3: brief reasoning, then the answer."""
        reasons = [
            f"If {name} is a {role}, {name}'s statement must be {'true' if role == 'knight' else 'false'}, "
            "and it is."
            for name, role in sample["solution"].items()
        ]
        reasoning = " ".join(
            ["Checking every assignment of knights and knaves, exactly one fits all statements.", *reasons]
        )
        return f" {reasoning} </think>\n<answer> {sample['answer']} </answer>"
