"""Format rewards: tables of completions, never-raise properties and linear time on 1 MB inputs."""

from __future__ import annotations

import pytest
from conftest import cpu_guard
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrl.rewards.base import safe_score
from llmrl.rewards.format import (
    overlong_penalty,
    repetition_penalty,
    tag_format,
    tags_in_order,
    think_answer_format,
)

GOOD = "<think>reason</think> <answer>42</answer>"
THINK_ANSWER_TABLE = [
    (GOOD, {}, 1.0),
    ("<think></think><answer></answer>", {}, 1.0),  # empty contents are still the right format
    ("reason</think> <answer>42</answer>", {"assistant_prefix": "<think>"}, 1.0),  # prefix prepended
    ("reason</think> <answer>42</answer>", {}, 0.0),  # ... and needed
    (GOOD, {"assistant_prefix": "<think>"}, 0.0),  # <think> twice once the prefix is added
    ("<answer>42</answer><think>r</think>", {}, 0.0),  # wrong order
    ("<think>r<answer>42</think></answer>", {}, 0.0),  # interleaved
    ("</think><think><answer>1</answer>", {}, 0.0),  # close before open
    ("<think>r</think><answer>1</answer><answer>2</answer>", {}, 0.0),  # answer twice
    ("<think>r</think>", {}, 0.0),  # missing answer
    ("", {}, 0.0),
    (GOOD, {"assistant_prefix": None}, 1.0),  # a non-string prefix counts as empty
]


@pytest.mark.parametrize(("completion", "sample", "expected"), THINK_ANSWER_TABLE)
def test_think_answer_format_table(completion, sample, expected):
    assert think_answer_format()(completion, sample) == expected


def test_think_answer_custom_tags_and_prefix_key():
    fn = think_answer_format(tags=("reasoning", "final", "check"), prefix_key="pre")
    text = "<reasoning>a</reasoning><final>b</final><check>c</check>"
    assert fn(text, {}) == 1.0
    assert fn(text[len("<reasoning>"):], {"pre": "<reasoning>"}) == 1.0
    assert fn("<final>b</final><reasoning>a</reasoning><check>c</check>", {}) == 0.0
    assert fn(GOOD, {}) == 0.0
    no_prefix = think_answer_format(prefix_key=None)
    assert no_prefix("r</think><answer>1</answer>", {"assistant_prefix": "<think>"}) == 0.0
    with pytest.raises(ValueError):
        think_answer_format(tags=())
    with pytest.raises(ValueError):
        think_answer_format(tags=("think", ""))


def test_tags_in_order_rejects_overlap():
    assert tags_in_order("<a><b>", ["<a>", "<b>"])
    assert not tags_in_order("<ab>", ["<ab>", "b>"])  # second tag inside the first one


TAG_TABLE = [
    # completion, exactly_once=True, exactly_once=False
    ("x <answer>1</answer> y", 1.0, 1.0),
    ("<answer>1</answer><answer>2</answer>", 0.0, 1.0),
    ("</answer><answer>", 0.0, 0.0),
    ("</answer><answer>1</answer>", 0.0, 1.0),
    ("<answer>1", 0.0, 0.0),
    ("<answer></answer>", 1.0, 1.0),
    ("no tags", 0.0, 0.0),
]


@pytest.mark.parametrize(("completion", "once", "any_pair"), TAG_TABLE)
def test_tag_format_table(completion, once, any_pair):
    assert tag_format("<answer>", "</answer>")(completion, {}) == once
    assert tag_format("<answer>", "</answer>", exactly_once=False)(completion, {}) == any_pair


def test_tag_format_prefix_and_errors():
    fn = tag_format("<think>", "</think>")
    assert fn("r</think>", {"assistant_prefix": "<think>"}) == 1.0
    assert tag_format("<think>", "</think>", prefix_key=None)("r</think>", {"assistant_prefix": "<think>"}) == 0.0
    with pytest.raises(ValueError):
        tag_format("", "</x>")


@pytest.mark.parametrize(("length", "expected"), [
    (0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (100, -1.0), (150, -1.0),
])
def test_overlong_penalty_characters(length, expected):
    fn = overlong_penalty(max_len=100, buffer=20)
    assert fn("x" * length, {}) == pytest.approx(expected)
    assert overlong_penalty(100, 20, factor=2.0)("x" * length, {}) == pytest.approx(2 * expected)


class WordTokenizer:
    """HF-style encode: one id per whitespace word."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [len(w) for w in text.split()] + ([0] if add_special_tokens else [])


class PlainEncoder:
    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))


class BrokenEncoder:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        raise RuntimeError("boom")


def test_overlong_penalty_tokens():
    text = "word " * 15  # 15 tokens, 75 characters
    assert overlong_penalty(20, 10, tokenizer=WordTokenizer())(text, {}) == pytest.approx(-0.5)  # no special
    assert overlong_penalty(20, 10, tokenizer=PlainEncoder())(text, {}) == pytest.approx(-0.5)
    assert overlong_penalty(20, 10)(text, {}) == -1.0  # characters
    assert overlong_penalty(20, 10, tokenizer=BrokenEncoder())(text, {}) == 0.0
    for bad in [(0, 1), (10, 0), (10, 11)]:
        with pytest.raises(ValueError):
            overlong_penalty(*bad)
    with pytest.raises(ValueError):
        overlong_penalty(10, 5, factor=-1.0)


@pytest.mark.parametrize(("text", "n", "expected"), [
    ("a b c d", 3, 0.0),  # 2 trigrams, both distinct
    ("a a a a", 3, -(1 - 1 / 2)),  # (a a a) twice
    ("a a a a", 1, -(1 - 1 / 4)),
    ("a b a b a b", 2, -(1 - 2 / 5)),  # ab, ba, ab, ba, ab
    ("a  b\n\ta b", 2, -(1 - 2 / 3)),  # whitespace-normalised: a b, b a, a b → 2 of 3 distinct
    ("a b", 3, 0.0),  # shorter than n
    ("", 1, 0.0),
])
def test_repetition_penalty_table(text, n, expected):
    assert repetition_penalty(n=n)(text, {}) == pytest.approx(expected)
    assert repetition_penalty(n=n, coef=0.5)(text, {}) == pytest.approx(0.5 * expected)


def test_repetition_penalty_rejects_bad_n():
    with pytest.raises(ValueError):
        repetition_penalty(n=0)


ALL = [think_answer_format(), tag_format("<answer>", "</answer>"), tag_format("<a>", "</a>", exactly_once=False),
       overlong_penalty(1000, 100), repetition_penalty(), repetition_penalty(n=1)]
TAGGY = st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "<", ">", "/", "a", " ",
                                  "\n", "think", "é"]), max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=300), TAGGY.map(lambda xs: "".join(xs))),
       st.one_of(st.none(), st.text(max_size=20), st.integers()))
def test_format_rewards_never_raise(completion, prefix):
    sample = {} if prefix is None else {"assistant_prefix": prefix}
    for fn in ALL:
        value = fn(completion, sample)
        assert isinstance(value, float)
    assert think_answer_format()(completion, sample) in (0.0, 1.0)
    assert tag_format("<answer>", "</answer>")(completion, sample) in (0.0, 1.0)
    assert -1.0 <= overlong_penalty(100, 50)(completion, sample) <= 0.0
    assert -1.0 < repetition_penalty()(completion, sample) <= 0.0


@pytest.mark.parametrize("bad", [None, 123, b"<think>", ["<think>"]])
def test_non_string_completions_score_as_empty(bad):
    for fn in ALL:
        value, err = safe_score(fn, bad, {"assistant_prefix": "<think>"})
        assert err is None and value == fn("", {"assistant_prefix": "<think>"})


TIME_BOUND_S = 2.0  # per call on a 1 MB text; documented in llmrl.rewards.format (typically < 0.2 s)
MB = 1 << 20
BIG_TEXTS = {
    "tags": ("<think></think><answer>" * (MB // 23 + 1))[:MB],
    "open_tags": ("<answer>" * (MB // 8 + 1))[:MB],
    "repeated_words": ("a " * (MB // 2 + 1))[:MB],
    "distinct_words": " ".join(str(i) for i in range(200_000))[:MB],
    "no_space": "x" * MB,
}


@pytest.mark.parametrize("name", sorted(BIG_TEXTS))
def test_one_megabyte_inputs_are_fast(name):
    text = BIG_TEXTS[name]
    for fn in ALL:
        with cpu_guard(TIME_BOUND_S, f"{fn.__name__} on {name}"):
            value = fn(text, {"assistant_prefix": "<think>"})
        assert isinstance(value, float)


def test_safe_score_refuses_strings_and_survives_sys_exit() -> None:
    import sys

    from llmrl.rewards.base import combine_rewards, safe_check, safe_score

    assert safe_score(lambda c, s: "7.5", "x", {}) == (None, "returned str '7.5', not a number")
    assert safe_score(lambda c, s: b"1", "x", {})[0] is None
    value, err = safe_score(lambda c, s: sys.exit(3), "x", {})
    assert value is None and err == "SystemExit: 3"
    assert safe_check(lambda c, s: sys.exit(0), "x", {}) is False
    assert safe_score(lambda c, s: True, "x", {}) == (1.0, None)  # a verdict is still a number
    out = combine_rewards({"ok": lambda c, s: 2.0, "bad": lambda c, s: "7.5"}, "x", {}, failure_value=-1.0)
    assert out.total == 1.0 and out.components == {"ok": 2.0, "bad": -1.0} and len(out.failures) == 1


def test_keyboard_interrupt_still_stops_a_reward() -> None:
    import pytest

    from llmrl.rewards.base import safe_score

    def interrupted(c, s):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        safe_score(interrupted, "x", {})
