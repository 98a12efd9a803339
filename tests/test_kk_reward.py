"""Knights & Knaves reward (Logic-RL): hand-computed values, parsing helpers, robustness."""

from __future__ import annotations

import random
import re

import pytest
from conftest import cpu_guard

from llmrl.rewards import kk_reward
from llmrl.rewards.logic import (
    extract_last_answer,
    kk_format_ok,
    kk_parse_answer,
    kk_reward_components,
)

SOL = {"Zoey": "knight", "Oliver": "knave"}
GOOD = "(1) Zoey is a knight\n(2) Oliver is a knave"
BAD = "(1) Zoey is a knave\n(2) Oliver is a knight"


def wrap(answer: str, think: str = "reasoning") -> str:
    return f"<think> {think} </think>\n<answer> {answer} </answer>"


# (text, expected format score, expected answer score)
CASES = [
    (wrap(GOOD), 1.0, 2.0),  # right answer, good format: 3
    (wrap(BAD), 1.0, -1.5),  # wrong answer, good format: -0.5
    (wrap("(1) Zoey is a knight\n(2) Oliver is a knight"), 1.0, -1.5),  # one role wrong
    (f"<think> r <answer> {GOOD} </answer>", -1.0, -2.0),  # missing </think>: -3
    (f"<answer> {GOOD} </answer> <think> r </think>", -1.0, -2.0),  # tags out of order
    (f"<think> <think> r </think> <answer> {GOOD} </answer>", -1.0, -2.0),  # <think> twice
    (f"<think> r </think> <answer> x </answer> <answer> {GOOD} </answer>", -1.0, -2.0),  # two answers
    ("<think> r </think> <answer>   </answer>", 1.0, -2.0),  # empty answer with good tags: -1
    ("<think> r </think> no answer at all", -1.0, -2.0),  # missing answer tags
    (wrap(GOOD + " (not a knight)"), 1.0, -2.0),  # 3 mentions for 2 people: unparsable
    (wrap("(1) Zoey is a knight"), 1.0, -2.0),  # too few mentions
    (wrap("(1) Zoey is a knight\n(2) Oliv is a knave"), 1.0, -2.0),  # a name lacks a match
    (wrap("(1) ZoeyX is a knight\n(2) Oliver is a knave"), 1.0, -2.0),  # \bName\b word boundary
    (wrap("(1) Zoey was a knight\n(2) Oliver is a knave"), 1.0, -2.0),  # "was" does not match
    (wrap("zoey IS A Knight, OLIVER   is\na knave"), 1.0, 2.0),  # case-insensitive, any whitespace
    (wrap("Oliver is a knave and Zoey is a knight"), 1.0, 2.0),  # order does not matter
    # Role suffixes (Logic-RL's pattern ends in \b(knight|knave)\b): the mention still counts (substring
    # count 2 == 2 people) but "knights"/"knightly"/"knave_" is not a role, so Zoey has no match: -2.
    (wrap("Zoey is a knights; Oliver is a knave"), 1.0, -2.0),
    (wrap("Zoey is a knightly person; Oliver is a knave"), 1.0, -2.0),
    (wrap("Zoey is a knight; Oliver is a knave_"), 1.0, -2.0),
    (wrap("Zoey is a knight. Oliver is a knave."), 1.0, 2.0),  # punctuation after the role is a boundary
    (wrap("Zoey is a knight, Oliver is a knave!"), 1.0, 2.0),
    (wrap("Zoey is a knight; Oliver is a knaves"), 1.0, -2.0),
    # A suffixed first mention does not block a later well-formed one... but the count then exceeds 2.
    (wrap("Zoey is a knights, Zoey is a knight; Oliver is a knave"), 1.0, -2.0),
    # Out-of-order tags: the format fails, and the answer is not scored (Logic-RL: -1 + -2).
    (f"</think> r <think> <answer> {GOOD} </answer>", -1.0, -2.0),
    (f"<think> r </think> </answer> {GOOD} <answer>", -1.0, -2.0),
    ("", -1.0, -2.0),
]


@pytest.mark.parametrize(("text", "fmt", "ans"), CASES)
def test_kk_reward_table(text: str, fmt: float, ans: float) -> None:
    assert kk_reward_components(text, SOL) == {"format": fmt, "answer": ans}
    assert kk_reward(text, SOL) == fmt + ans


def test_kk_reward_headline_values() -> None:
    assert kk_reward(wrap(GOOD), SOL) == 3.0
    assert kk_reward(wrap(BAD), SOL) == -0.5
    assert kk_reward(f"<think> r <answer> {GOOD} </answer>", SOL) == -3.0
    assert kk_reward("<think> r </think><answer></answer>", SOL) == -1.0


def test_kk_reward_never_raises_on_junk() -> None:
    for junk in [None, 123, "\x00" * 10, "</answer><answer>", "<think></think><answer>(1) </answer>"]:
        value = kk_reward(junk, SOL)  # type: ignore[arg-type]
        assert -3.0 <= value <= 3.0


def test_kk_reward_is_linear_time_on_one_megabyte() -> None:
    texts = [
        "<answer>" * 125_000,
        "<think>" + " " * 1_000_000 + "</think><answer> Zoey" + " " * 1_000_000 + "x knight knave </answer>",
        wrap("Zoey is a knight " * 60_000),
        "<answer></answer>" * 60_000,
    ]
    with cpu_guard(2.0, "4 x 1 MB kk_reward"):
        for t in texts:
            kk_reward(t, SOL)


def test_format_ok() -> None:
    assert kk_format_ok("<think></think><answer></answer>")
    assert kk_format_ok("x <think> a </think> b <answer> c </answer> d")
    assert not kk_format_ok("<think></think><answer>")
    assert not kk_format_ok("<think></think></answer><answer>")
    assert not kk_format_ok("</think><think><answer></answer>")


def test_parse_answer() -> None:
    assert kk_parse_answer(GOOD, ["Zoey", "Oliver"]) == SOL
    assert kk_parse_answer(GOOD, ["Zoey"]) is None  # 2 mentions for 1 name
    assert kk_parse_answer("", ["Zoey"]) is None
    assert kk_parse_answer("Mary-Ann is a knave", ["Mary-Ann"]) == {"Mary-Ann": "knave"}


def _regex_last(text: str) -> str | None:
    matches = list(re.finditer(r"<answer>(.*?)</answer>", text, re.DOTALL))
    return matches[-1].group(1).strip() if matches else None


def test_extract_last_answer_matches_regex_semantics() -> None:
    assert extract_last_answer("<answer>a</answer> <answer> b </answer>") == "b"
    assert extract_last_answer("<answer>a<answer>b</answer>") == "a<answer>b"
    assert extract_last_answer("<answer>a</answer><answer>b") == "a"
    assert extract_last_answer("no tags") is None
    rng = random.Random(0)
    pieces = ["<answer>", "</answer>", "x", " ", "\n", "<answer", "answer>", "</"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert extract_last_answer(text) == _regex_last(text), text
