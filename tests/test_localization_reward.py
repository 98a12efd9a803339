"""SoRFT localisation rewards and F_β: hand-worked values, answer extraction, hallucination → 0,
and robustness/time-bound properties."""

from __future__ import annotations

import math

import pytest
from conftest import cpu_guard
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrl.rewards.localization import (
    answer_items,
    f_beta,
    fenced_blocks,
    file_localization_reward,
    function_localization_reward,
    line_localization_reward,
    localization_reward_fn,
)

TIME_BOUND_S = 2.0  # documented in llmrl.rewards.localization: linear time, 1 MB well under this


def fb(p: float, r: float, beta: float = 3.0) -> float:
    return (1 + beta**2) * p * r / (beta**2 * p + r)


F_BETA_CASES = [
    ({"a", "b"}, {"a"}, 3.0, 10 * 0.5 / (9 * 0.5 + 1)),  # P=1/2, R=1 → 5/5.5
    ({"a"}, {"a", "b"}, 3.0, 10 * 0.5 / (9 * 1 + 0.5)),  # P=1, R=1/2 → 5/9.5
    ({"a", "b"}, {"a", "b"}, 3.0, 1.0),
    ({"a", "b", "c", "d"}, {"a", "e"}, 3.0, fb(1 / 4, 1 / 2)),  # 2.5/4.75
    ({"a", "b"}, {"a", "c"}, 1.0, 0.5),  # F1 with P=R=1/2
    ({"a", "b"}, {"a"}, 0.0, 0.5),  # β=0 → precision
    ({"x"}, {"a"}, 3.0, 0.0),  # no overlap
    (set(), {"a"}, 3.0, 0.0),  # empty prediction
    ({"a"}, set(), 3.0, 0.0),  # empty gold
]


@pytest.mark.parametrize(("pred", "gold", "beta", "expected"), F_BETA_CASES)
def test_f_beta_table(pred: set[str], gold: set[str], beta: float, expected: float) -> None:
    assert f_beta(pred, gold, beta) == pytest.approx(expected, abs=1e-12)


def test_f_beta_values_and_validation() -> None:
    assert f_beta(["a", "a", "b"], ["a"]) == pytest.approx(5 / 5.5)  # sets: duplicates count once
    assert 5 / 5.5 > f_beta({"a"}, {"a", "b"})  # β = 3 favours recall
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            f_beta({"a"}, {"a"}, bad)


def test_answer_extraction() -> None:
    assert fenced_blocks("a ```py\nx\ny\n``` b ```z``` ```open") == ["x\ny\n", "z"]
    text = "<think>maybe c.py</think>\n<answer>\n```\n- ./a.py\n* `b.py`\n\n1. c.py\n```\n</answer>"
    assert answer_items(text) == ["./a.py", "b.py", "c.py"]
    assert answer_items("<answer>x.py</answer> then <answer>y.py</answer>") == ["y.py"]  # last answer
    assert answer_items("thinking...\n```\nfirst.py\n```\nfinal:\n```text\nsecond.py\n```") == ["second.py"]
    assert answer_items("  a.py  \n\n b.py") == ["a.py", "b.py"]  # whole text as fallback
    assert answer_items("<answer>   </answer>") == []
    assert answer_items(None) == []  # type: ignore[arg-type]


REPO = ["src/a.py", "src/b.py", "src/c.py", "README.md", "tests/test_a.py"]
GOLD_FILES = ["src/a.py"]

FILE_CASES = [
    ("<answer>\nsrc/a.py\n</answer>", 1.0),
    ("<answer>\nsrc/a.py\nsrc/b.py\n</answer>", 10 * 0.5 / (9 * 0.5 + 1)),  # P=1/2, R=1
    ("<answer>\n./src/a.py\n- src/a.py\n</answer>", 1.0),  # normalised duplicates
    ("<answer>\nsrc/b.py\n</answer>", 0.0),  # valid but wrong
    ("<answer>\nsrc/a.py\nsrc/zzz.py\n</answer>", 0.0),  # hallucinated file
    ("<answer>\nsrc/a.py (the bug is here)\n</answer>", 0.0),  # not a bare path: treated as absent
    ("<answer></answer>", 0.0),  # empty
    ("I think it is src/a.py", 0.0),  # whole text: "I think it is src/a.py" is not a repo path
    ("```\nsrc/a.py\nsrc/c.py\nREADME.md\ntests/test_a.py\n```", fb(1 / 4, 1.0)),  # list-everything
]


@pytest.mark.parametrize(("completion", "expected"), FILE_CASES)
def test_file_localization_table(completion: str, expected: float) -> None:
    assert file_localization_reward(completion, GOLD_FILES, REPO) == pytest.approx(expected, abs=1e-12)


KNOWN_FUNCS = ["foo", "bar", "Widget", "Widget.render", "Widget.close", "helper"]
GOLD_FUNCS = ["function: foo", "Widget.render"]

FUNC_CASES = [
    ("<answer>\nfunction: foo\nfunction: Widget.render\n</answer>", 1.0),
    ("<answer>\nfoo\nmethod: Widget.render()\n</answer>", 1.0),
    ("<answer>\nfunction: foo\n</answer>", fb(1.0, 0.5)),  # P=1, R=1/2
    ("<answer>\nfunction: foo\nclass: Widget\n</answer>", fb(0.5, 0.5)),  # class ≠ its method
    ("<answer>\nfunction: foo\nfunction: Widget.render\nfunction: bar\nhelper\n</answer>", fb(0.5, 1.0)),
    ("<answer>\nfunction: foo\nfunction: made_up\n</answer>", 0.0),  # hallucinated function
    ("<answer>\nfunction: foo bar\n</answer>", 0.0),  # unparsable item
    ("<answer>\nsrc/a.py\nfunction: foo\n</answer>", fb(1.0, 0.5)),  # header + unqualified known
    ("<answer>\n</answer>", 0.0),
]


@pytest.mark.parametrize(("completion", "expected"), FUNC_CASES)
def test_function_localization_table(completion: str, expected: float) -> None:
    assert function_localization_reward(completion, GOLD_FUNCS, KNOWN_FUNCS) == pytest.approx(
        expected, abs=1e-12
    )


QUALIFIED = ["a.py:foo", "a.py:Widget.render", "b.py:foo", ("b.py", "Response.json")]


def test_function_localization_qualified() -> None:
    gold = ["a.py:foo"]
    assert function_localization_reward("a.py\nfunction: foo", gold, QUALIFIED) == 1.0  # Agentless header
    assert function_localization_reward("function: a.py:foo", gold, QUALIFIED) == 1.0
    assert function_localization_reward("a.py::foo", gold, QUALIFIED) == 1.0
    # unqualified "foo" names both files' foo: P=1/2, R=1
    assert function_localization_reward("function: foo", gold, QUALIFIED) == pytest.approx(fb(0.5, 1.0))
    assert function_localization_reward("b.py\nfunction: Widget.render", gold, QUALIFIED) == 0.0  # wrong file
    # a bare "Response.json" is a known name, not a header
    assert function_localization_reward("Response.json", ["b.py:Response.json"], QUALIFIED) == 1.0
    # unqualified gold resolves against qualified known entries the same way
    assert function_localization_reward("a.py:foo\nb.py:foo", ["foo"], QUALIFIED) == 1.0


VALID_LINES = list(range(10, 21))
GOLD_LINES = [12, 13]

LINE_CASES = [
    ("<answer>\nline: 12\nline: 13\n</answer>", 1.0),
    ("<answer>\n12\n13\n14\n15\n</answer>", fb(0.5, 1.0)),
    ("<answer>\nline 12\n</answer>", fb(1.0, 0.5)),
    ("<answer>\nfunction: foo\nline: 12\nline: 13\n</answer>", 1.0),  # function items are ignored
    ("<answer>\nline: 12\nline: 99\n</answer>", 0.0),  # hallucinated line
    ("<answer>\nline: 12-13\n</answer>", 0.0),  # ranges are not part of the format
    ("<answer>\nfunction: foo\n</answer>", 0.0),  # no line items
    ("<answer>\nline: twelve\n</answer>", 0.0),
]


@pytest.mark.parametrize(("completion", "expected"), LINE_CASES)
def test_line_localization_table(completion: str, expected: float) -> None:
    assert line_localization_reward(completion, GOLD_LINES, VALID_LINES) == pytest.approx(expected, abs=1e-12)


def test_line_localization_file_qualified() -> None:
    valid = ["a.py:10", "a.py:11", ("b.py", 10), ("b.py", 30)]
    gold = [("a.py", 11)]
    assert line_localization_reward("a.py:11", gold, valid) == 1.0
    assert line_localization_reward("a.py\nline: 11\nline: 10", gold, valid) == pytest.approx(fb(0.5, 1.0))
    assert line_localization_reward("b.py\nline: 11", gold, valid) == 0.0  # b.py has no line 11 shown
    assert line_localization_reward("line: 10", [("b.py", 10)], valid) == pytest.approx(fb(0.5, 1.0))
    assert line_localization_reward("c.py:10", gold, valid) == 0.0


def test_sample_adapter() -> None:
    sample = {"level": "file", "gold": GOLD_FILES, "candidates": REPO}
    assert localization_reward_fn("src/a.py", sample) == 1.0
    assert localization_reward_fn("src/a.py\nsrc/b.py", {**sample, "beta": 1.0}) == pytest.approx(2 / 3)
    assert localization_reward_fn("12", {"level": "line", "gold": [12], "candidates": [12]}) == 1.0
    assert localization_reward_fn("x", {"level": "nope"}) is None


# ---- robustness ----------------------------------------------------------------------------------
TOKENS = [
    "<answer>",
    "</answer>",
    "```",
    "\n",
    "function:",
    "class:",
    "line:",
    "src/a.py",
    "a.py:",
    "foo",
    "Widget.render",
    "12",
    " ",
    "-",
    "*",
    "1.",
    "`",
    ":",
    "::",
    "()",
    "./",
    "x",
]
token_text = st.lists(st.sampled_from(TOKENS), max_size=50).map("".join)


def all_rewards(completion: str) -> list[float]:
    return [
        file_localization_reward(completion, GOLD_FILES, REPO),
        function_localization_reward(completion, GOLD_FUNCS, KNOWN_FUNCS),
        function_localization_reward(completion, ["a.py:foo"], QUALIFIED),
        line_localization_reward(completion, GOLD_LINES, VALID_LINES),
        line_localization_reward(completion, ["a.py:10"], ["a.py:10", "a.py:12", "b.py:12"]),
    ]


def ok(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


@settings(max_examples=300, deadline=None)
@given(st.one_of(token_text, st.text(max_size=300)))
def test_never_raises_and_in_range(completion: str) -> None:
    assert all(ok(value) for value in all_rewards(completion))


@settings(max_examples=100, deadline=None)
@given(st.sets(st.sampled_from("abcdefgh")), st.sets(st.sampled_from("abcdefgh")), st.floats(0, 10))
def test_f_beta_properties(pred: set[str], gold: set[str], beta: float) -> None:
    value = f_beta(pred, gold, beta)
    assert ok(value)
    if pred and pred == gold:
        assert value == pytest.approx(1.0)
    if pred and gold and pred <= gold:  # no false positives: P = 1, F_β = (1+β²)R/(β²+R)
        r = len(pred) / len(gold)
        assert value == pytest.approx((1 + beta**2) * r / (beta**2 + r))


@settings(max_examples=5, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=20).map("".join))
def test_one_megabyte_within_bound(seed: str) -> None:
    completion = seed * (1_000_000 // len(seed) + 1)
    with cpu_guard(TIME_BOUND_S, "all localization rewards on 1 MB"):
        values = all_rewards(completion)
    assert all(ok(value) for value in values)


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>\n" + "\n".join(f"line: {10 + i % 11}" for i in range(150_000)) + "\n</answer>",
        "\n".join(f"function: {name}" for name in KNOWN_FUNCS) * 25_000,
        "src/a.py\n" * 120_000,
    ],
    ids=["many-valid-lines", "many-valid-functions", "many-valid-files"],
)
def test_one_megabyte_valid_items_within_bound(completion: str) -> None:
    assert len(completion) >= 900_000
    with cpu_guard(TIME_BOUND_S, "all localization rewards on 1 MB"):
        values = all_rewards(completion)
    assert all(ok(value) for value in values)
