"""SWE-RL patch similarity: exactness (cydifflib == difflib, bounded_similarity == ratio() within the work
budget) and the budget's bound on adversarial, low-diversity patches."""

from __future__ import annotations

import difflib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrl.rewards.swe import (
    MAX_SIMILARITY_WORK,
    apply_edits,
    bounded_similarity,
    make_patch,
    mean_similarity,
    parse_search_replace,
    patch_similarity,
    split_think_solution,
    swe_rl_prompt,
    swe_rl_reward,
)
from tests.test_swe_reward import block, ratio, wrap

TIME_BOUND_S = 3.0  # documented in llmrl.rewards.swe: 1 MB completions against small oracles
CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b"
FILES = {"calc.py": CALC}
ORACLE = {"calc.py": CALC.replace("def sub(a, b):\n    return a + b", "def sub(a, b):\n    return a - b")}

# ---- similarity: exact (cydifflib == difflib), and bounded ---------------------------------------
def long_patch_case(lines: int, seed: int) -> tuple[dict[str, str], dict[str, str], str]:
    """A file of ``lines`` assignments; the oracle changes every 7th line; the prediction makes the same
    changes in the first half and different ones after it (so it differs beyond 5,000 characters)."""
    rng = random.Random(seed)
    old = [
        f"v{i}_{rng.randrange(10**6):x} = compute({i}, {rng.random():.6f}, '{rng.randrange(10**4)}')"
        for i in range(lines)
    ]
    oracle, pred = list(old), list(old)
    for i in range(0, lines, 7):
        oracle[i] = old[i].replace("compute(", "compute_v2(")
        pred[i] = oracle[i] if i < lines // 2 else old[i].replace(", '", ", retries=3, '")
    text = "\n".join(old)
    completion = wrap(block("data.py", text, "\n".join(pred)))
    return {"data.py": text}, {"data.py": "\n".join(oracle)}, completion


@pytest.mark.parametrize(("lines", "size"), [(120, 6000), (180, 9000)])
def test_long_patches_are_exact(lines: int, size: int) -> None:
    files, oracle, completion = long_patch_case(lines, lines)
    new = apply_edits(files, parse_search_replace(split_think_solution(completion)[1]))["data.py"]
    pred_patch, oracle_patch = (
        make_patch(files["data.py"], new),
        make_patch(files["data.py"], oracle["data.py"]),
    )
    assert (
        size <= min(len(pred_patch), len(oracle_patch))
        and max(len(pred_patch), len(oracle_patch)) < size + 3000
    )
    expected = difflib.SequenceMatcher(None, pred_patch, oracle_patch, autojunk=False).ratio()
    assert swe_rl_reward(completion, files, oracle) == expected
    # the old 5,000-character prefix rule would not have given this value
    prefix = difflib.SequenceMatcher(None, pred_patch[:5000], oracle_patch[:5000], autojunk=False)
    assert (
        2 * sum(m.size for m in prefix.get_matching_blocks()) / (len(pred_patch) + len(oracle_patch))
        < expected - 0.05
    )


texts = st.text(alphabet="ab\n+ -", max_size=160) | st.text(max_size=60)


@settings(max_examples=300, deadline=None)
@given(texts, texts)
def test_cydifflib_equals_difflib(a: str, b: str) -> None:
    cydifflib = pytest.importorskip("cydifflib")
    theirs = difflib.SequenceMatcher(None, a, b, autojunk=False)
    ours = cydifflib.SequenceMatcher(None, a, b, autojunk=False)
    assert ours.ratio() == theirs.ratio()
    assert [tuple(m) for m in ours.get_matching_blocks()] == [tuple(m) for m in theirs.get_matching_blocks()]
    lines_a, lines_b = a.splitlines(), b.splitlines()
    assert list(cydifflib.unified_diff(lines_a, lines_b, lineterm="")) == list(
        difflib.unified_diff(lines_a, lines_b, lineterm="")
    )


@settings(max_examples=300, deadline=None)
@given(texts, texts, st.sampled_from([None, MAX_SIMILARITY_WORK]))
def test_bounded_similarity_is_the_ratio(a: str, b: str, budget: int | None) -> None:
    result = bounded_similarity(a, b, budget)
    expected = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() if a and b else 0.0
    assert result.exact and result.score == expected


@settings(max_examples=100, deadline=None)
@given(texts, texts, st.integers(0, 5000))
def test_over_budget_is_a_lower_bound(a: str, b: str, budget: int) -> None:
    result = bounded_similarity(a, b, budget)
    exact = bounded_similarity(a, b, None)
    assert 0.0 <= result.score <= exact.score <= 1.0
    if result.exact:
        assert result.work == exact.work and result.score == exact.score
    else:
        assert result.work <= budget


def test_work_bound_switches_to_the_lower_bound() -> None:
    """Timing-free: low-diversity text needs ~N³ work (N lines); the budget stops it, real patches fit."""
    a, b = "+a\n" * 120, "+b\n" * 120
    exact = bounded_similarity(a, b, None)
    assert exact.exact and exact.score == ratio(a, b) and exact.work > 10**6
    capped = bounded_similarity(a, b, 10**5)
    assert not capped.exact and capped.work <= 10**5 and 0.0 < capped.score < exact.score
    # 1 MB against 6 KB: over the default budget at the first step, so nothing is matched
    big = bounded_similarity("+a\n" * 333_333, "+b\n" * 2000)
    assert not big.exact and big.work <= MAX_SIMILARITY_WORK and big.score == 0.0
    # identical patches score 1.0 at no cost; either side empty scores 0
    assert bounded_similarity(a, a, 0) == (1.0, 0, True)
    assert patch_similarity("", "x") == patch_similarity("x", "", max_similarity_work=0) == 0.0
    # a 9 KB realistic pair fits with room to spare
    files, oracle, completion = long_patch_case(180, 1)
    new = apply_edits(files, parse_search_replace(split_think_solution(completion)[1]))["data.py"]
    pair = bounded_similarity(
        make_patch(files["data.py"], new), make_patch(files["data.py"], oracle["data.py"])
    )
    assert pair.exact and pair.work < MAX_SIMILARITY_WORK // 20


def test_mean_similarity_shares_the_budget() -> None:
    pred, oracle = {"a.py": "+a\n" * 40, "b.py": "+x\n+y\n"}, {"a.py": "+b\n+a\n" * 20, "b.py": "+y\n"}
    first = bounded_similarity(pred["a.py"], oracle["a.py"], None)
    second = bounded_similarity(pred["b.py"], oracle["b.py"], None)
    full = mean_similarity(pred, oracle, max_similarity_work=None)
    assert full == (first.score + second.score) / 2 or full == (second.score + first.score) / 2
    assert mean_similarity(pred, oracle, max_similarity_work=first.work + second.work) == full
    # paths take the budget in sorted order: a.py uses it all, b.py gets none and scores 0
    assert mean_similarity(pred, oracle, max_similarity_work=first.work) == first.score / 2


path_texts = st.dictionaries(
    st.sampled_from(["a.py", "b.py", "c/d.py", "e.md", "f.txt", "g"]), texts, min_size=1
)


@settings(max_examples=200, deadline=None)
@given(path_texts, path_texts)
def test_mean_is_summed_in_the_reference_order(pred: dict[str, str], oracle: dict[str, str]) -> None:
    paths = set(oracle.keys()).union(set(pred.keys()))  # the reference's set, and so its summation order
    scores = {p: ratio(pred[p], oracle[p]) if pred.get(p) and oracle.get(p) else 0.0 for p in paths}
    assert mean_similarity(pred, oracle) == sum(scores[p] for p in paths) / len(paths)


def test_prompt_layout() -> None:
    system, user = swe_rl_prompt("sub() is wrong", {"calc.py": CALC, "b.py": "x = 1"})
    assert system["role"] == "system" and "<think>" in system["content"] and "<solution>" in system["content"]
    text = user["content"]
    assert user["role"] == "user" and "--- BEGIN ISSUE ---\nsub() is wrong\n--- END ISSUE ---" in text
    assert text.count("--- BEGIN FILE ---") == text.count("--- END FILE ---") == 2
    assert "### calc.py\n" + CALC in text and "### b.py\nx = 1" in text
    assert "<<<<<<< SEARCH" in text and ">>>>>>> REPLACE" in text
