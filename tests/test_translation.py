"""sacreBLEU chrF / BLEU, the R1-T1 translation reward, and the toy ``translation`` task."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import sacrebleu
from conftest import cpu_guard
from hypothesis import given, settings
from hypothesis import strategies as st
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

from llmrl.rewards import translation as T
from llmrl.rewards.translation import (
    MAX_CHARS,
    chrf,
    chrf_plus_plus,
    format_score,
    quality_score,
    sentence_bleu,
    translation_reward,
)
from llmrl.tasks import get_task
from llmrl.tasks.translation import LEXICON, TranslationTask, normalise

ROOT = Path(__file__).resolve().parents[1]


def sacre(metric: str, hyp: str, ref: str) -> float:
    """sacreBLEU's own sentence score, the definition the module must reproduce exactly."""
    if metric == "chrf":
        return sacrebleu.sentence_chrf(hyp, [ref]).score
    if metric == "chrf++":
        return sacrebleu.sentence_chrf(hyp, [ref], word_order=2).score
    return sacrebleu.sentence_bleu(hyp, [ref]).score


OURS: dict[str, Callable[[str, str], float]] = {"chrf": chrf, "chrf++": chrf_plus_plus, "bleu": sentence_bleu}


def assert_all_equal(hyp: str, ref: str) -> None:
    for metric, fn in OURS.items():
        assert fn(hyp, ref) == sacre(metric, hyp, ref), (metric, hyp[:80], ref[:80])


def both_paths(test: Callable[[], None]) -> None:
    """Run ``test`` with sacreBLEU's own scoring and with the numpy counting path forced for every input."""
    for threshold in (10**12, 0):
        with mock.patch.object(T, "FAST_PATH_CHARS", threshold):
            test()


REF_LONG = " ".join(f"Sentence {i}: the cat sees the dog, and the bird (no. {i}) sings." for i in range(250))
FIXED = [
    ("", ""),
    ("", "abc"),
    ("abc", ""),
    ("   ", "the cat"),
    ("the cat", "\t\n "),
    ("a", "a"),
    ("a", "b"),
    ("ab", "abc"),
    ("abc", "ab"),
    ("the cat", "thecat"),
    ("the the the", "the cat"),
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("the cat ran", "the cat sat"),
    ("Hello, world!", "Hello , world !"),
    ("3.14 and 1,000", "3 . 14 and 1 , 000"),
    ("e-mail 2-3", "e - mail 2 - 3"),
    ("&quot;hi&quot; &amp; &lt;b&gt;", '"hi" & <b>'),
    ("<skipped>word hyph-\nen", "word hyphen"),
    ("U.S.A. don't (parens)", "U . S . A . don ' t ( parens )"),
    ("«quote» — dash…", "« quote » — dash …"),
    ("猫看见一只大狗", "猫 看见 一只 大狗"),
    ("кошка видит собаку.", "Кошка видит собаку."),
    ("e\u0301", "é"),
    ("nb\u00a0sp zero\u200bwidth", "nb sp zerowidth"),
    ("nul\x00 lone \ud800 surrogate", "nul lone surrogate"),
    ("🐱🐶 👍🏽", "🐱 🐶 👍🏽"),
    ("the cat .", "the cat."),
    (REF_LONG[:10_000] + " but then something else" * 40, REF_LONG),
    ((REF_LONG[:150] + " ") * 80, REF_LONG),
    (REF_LONG, REF_LONG[:200]),
    (REF_LONG, REF_LONG),
    ("x" * 12_000, "x" * 11_000 + " y"),
]


@pytest.mark.parametrize(("hyp", "ref"), FIXED)
def test_equal_to_sacrebleu_fixed(hyp: str, ref: str) -> None:
    both_paths(lambda: assert_all_equal(hyp, ref))


CHUNKS = ["the", "cat", "Cat", " ", " ", "  ", "\t", "\n", ".", ",", "!", "'", '"', "(", ")", "-", "&amp;", "&quot;",
          "<skipped>", "-\n", "3.14", "1,000", "é", "e\u0301", "猫", "狗", "кот", "🐱", "\u00a0", "\ud800", "\x00", "a"]  # fmt: skip
texts = st.one_of(st.lists(st.sampled_from(CHUNKS), max_size=30).map("".join), st.text(max_size=40))


@st.composite
def pairs(draw: st.DrawFn) -> tuple[str, str]:
    hyp = draw(texts)
    kind = draw(st.integers(0, 3))
    if kind == 0:
        ref = draw(texts)
    elif kind == 1:
        ref = hyp
    else:  # overlapping: a slice of the hypothesis plus more text, on either side
        i, j = sorted((draw(st.integers(0, len(hyp))), draw(st.integers(0, len(hyp)))))
        ref = hyp[i:j] + draw(texts) if kind == 2 else draw(texts) + hyp[i:j]
    return (hyp, ref) if draw(st.booleans()) else (ref, hyp)


@settings(max_examples=400, deadline=None)
@given(pair=pairs(), fast=st.booleans())
def test_equal_to_sacrebleu_generated(pair: tuple[str, str], fast: bool) -> None:
    hyp, ref = pair
    with mock.patch.object(T, "FAST_PATH_CHARS", 0 if fast else 10**12):
        assert_all_equal(hyp, ref)


@settings(max_examples=15, deadline=None)
@given(pair=pairs(), reps=st.integers(1, 400), tail=texts)
def test_equal_to_sacrebleu_long_generated(pair: tuple[str, str], reps: int, tail: str) -> None:
    """Inputs past FAST_PATH_CHARS with the default threshold (the numpy path), against sacreBLEU itself."""
    hyp, ref = pair
    hyp = (hyp + " ") * reps + tail
    ref = ref + " " + "the cat sees the dog. " * 200
    assert len(hyp) + len(ref) > T.FAST_PATH_CHARS
    assert_all_equal(hyp, ref)


def test_hand_worked_values() -> None:
    # chrF2, hyp "ab", ref "abc": n=1 P=1, R=2/3; n=2 P=1, R=1/2; n>=3 no hypothesis n-gram (not effective);
    # P = 1, R = 7/12, F2 = 5PR/(4P + R) = 7/11
    assert chrf("ab", "abc") == pytest.approx(700 / 11)
    assert chrf("abc", "ab") == pytest.approx(87.5)  # P and R swapped: 5(7/12)/(4·7/12 + 1)
    assert chrf("the cat", "thecat") == 100.0  # whitespace is removed
    # BLEU, "the cat sat" vs "the cat sat down": p1..p3 = 1, no 4-gram (effective order 3), BP = exp(1 - 4/3)
    assert sentence_bleu("the cat sat", "the cat sat down") == pytest.approx(100 * math.exp(-1 / 3))
    # "the cat ran" vs "the cat sat": p1 = 2/3, p2 = 1/2, p3 has no match: exp smoothing 1/(2·1); order 3
    assert sentence_bleu("the cat ran", "the cat sat") == pytest.approx(
        100 * (2 / 3 * 1 / 2 * 1 / 2) ** (1 / 3)
    )
    # clipping: "the the the" vs "the cat": p1 = 1/3, p2 = 1/(2·2), p3 = 1/(4·1) (1st and 2nd zero), BP = 1
    assert sentence_bleu("the the the", "the cat") == pytest.approx(100 * (1 / 3 / 4 / 4) ** (1 / 3))
    # 13a splits punctuation off words: identical token sequences (whitespace tokenisation would score 0)
    assert sentence_bleu("Hello, world!", "Hello , world !") == pytest.approx(100.0)
    assert sentence_bleu("Hello, world!", "Hello , world !", tokenize="none") == 0.0
    assert sentence_bleu("the cat sat", "the cat sat") == sacre("bleu", "the cat sat", "the cat sat") > 100.0
    for fn in OURS.values():  # sacreBLEU scores every empty or whitespace-only side 0, ("", "") included
        assert fn("", "") == fn("", "abc") == fn("abc", "") == fn(" \t", "abc") == fn("abc", "\n") == 0.0


def test_old_truncation_exploit_scores_below_100() -> None:
    """The old module cut both sides at 10,000 chars: this answer then equalled the reference and scored 100."""
    hyp = REF_LONG[:10_000] + " and an unrelated ending" * 400
    assert len(REF_LONG) > 10_000 and len(hyp) > 10_000
    for metric, fn in OURS.items():
        value = fn(hyp, REF_LONG)
        assert value == sacre(metric, hyp, REF_LONG) and value < 95.0
    reward = translation_reward(f"<think>x</think><answer>{hyp}</answer>", REF_LONG)
    assert reward == pytest.approx(1.0 + chrf(hyp, REF_LONG) / 100) and reward < 1.95
    repeat = (REF_LONG[:300] + " ") * 100  # the start of the reference, over and over
    for metric, fn in OURS.items():
        assert fn(repeat, REF_LONG) == sacre(metric, repeat, REF_LONG) < 80.0


def test_long_inputs_use_the_counting_path() -> None:
    """Past FAST_PATH_CHARS the scores come from exact n-gram counts, not sacreBLEU's Counter-based path."""
    hyp, ref = (REF_LONG[:3000] + " ") * 5, REF_LONG
    expected = {m: sacre(m, hyp, ref) for m in OURS}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("sentence_score called on a long input")

    metrics = [T._chrf_metric(0), T._chrf_metric(2), T._bleu_metric("13a")]
    with (
        mock.patch.multiple(metrics[0], sentence_score=refuse),
        mock.patch.multiple(metrics[1], sentence_score=refuse),
        mock.patch.multiple(metrics[2], sentence_score=refuse),
    ):
        assert {m: fn(hyp, ref) for m, fn in OURS.items()} == expected


def test_tokenisers_are_not_memoised() -> None:
    """sacreBLEU's 13a tokeniser caches 65,536 lines process-wide; our BLEU must not pin model outputs there."""
    before = (Tokenizer13a.__call__.cache_info().currsize, TokenizerRegexp.__call__.cache_info().currsize)
    for i in range(3):
        sentence_bleu(f"a unique hypothesis number {i} {time.perf_counter()}", "a reference")
        sentence_bleu("x" * 5000 + str(i), "x y z")
    after = (Tokenizer13a.__call__.cache_info().currsize, TokenizerRegexp.__call__.cache_info().currsize)
    assert after == before


def test_options_tokenize_and_max_chars() -> None:
    h, r = "Hello, wörld! 漢字 3.14", "Hello , wörld ! 漢 字 3.14"
    for tok in ("13a", "intl", "char", "none", "zh"):
        assert sentence_bleu(h, r, tokenize=tok) == sacrebleu.sentence_bleu(h, [r], tokenize=tok).score
    with pytest.raises(ValueError):
        sentence_bleu(h, r, tokenize="moses")
    with pytest.raises(ValueError):  # a configuration error, whatever the text
        translation_reward("junk", r, metric="bleu", tokenize="moses")
    # over max_chars: 0, the minimum (no truncated comparison); at the limit: scored as usual
    for fn in OURS.values():
        assert fn("abcd", "abcd", max_chars=3) == 0.0
        assert fn("abcd", "abcd", max_chars=4) == pytest.approx(100.0)
        assert fn("abcd", "abcd", max_chars=None) == pytest.approx(100.0)
    assert MAX_CHARS == 1_000_000
    over = "the cat " * (MAX_CHARS // 8) + "x"
    assert len(over) > MAX_CHARS and chrf(over, "the cat") == 0.0
    assert chrf(over, "the cat", max_chars=None) > 0.0
    good = "<think>t</think><answer>the cat sat</answer>"
    assert translation_reward(good, "the cat sat", max_chars=5) == 1.0
    assert translation_reward(good, "the cat sat", metric="chrf++") == 2.0
    # BLEU's 100.00000000000004 is capped at quality 1
    assert translation_reward(good, "the cat sat", metric="bleu") == 2.0
    assert quality_score(good, "the cat sit", "bleu", tokenize="char") == pytest.approx(
        sacrebleu.sentence_bleu("the cat sat", ["the cat sit"], tokenize="char").score / 100
    )


REF = "the big cat sees the dog"


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (f"<think>ok</think><answer>{REF}</answer>", 2.0),  # format +1, chrF 100
        (f"<think>ok</think>\n<answer>  {REF} \n</answer>", 2.0),  # answer stripped
        (f"<answer>{REF}</answer>", -1.0),  # no think block
        (f"<think>a</think><answer>{REF}</answer><answer>{REF}</answer>", -1.0),  # answer twice
        (f"<answer>{REF}</answer><think>a</think>", -1.0),  # wrong order
        (f"<think>a</think><answer>{REF}</answer><think>b</think>", -1.0),  # think twice
        (f"<think>a<answer>{REF}</answer></think>", -1.0),  # answer inside think
        ("<think>a</think><answer>   </answer>", 1.0),  # empty answer: quality 0
        ("", -1.0),
        ("<think>a</think><answer>zzz</answer>", 1.0),  # no shared characters
    ],
)
def test_translation_reward_table(completion: str, expected: float) -> None:
    assert translation_reward(completion, REF) == pytest.approx(expected)
    assert format_score(completion) == (1.0 if expected >= 1.0 else -1.0)


def test_translation_reward_options_and_bad_input() -> None:
    good = f"<think>x</think><answer>{REF}</answer>"
    assert translation_reward(good, REF, metric="bleu") == 2.0
    assert translation_reward(good, REF, format_weight=0.5) == pytest.approx(1.5)
    assert translation_reward("nope", REF, format_weight=0.5) == pytest.approx(-0.5)
    partial = "<think>x</think><answer>the big cat</answer>"
    assert translation_reward(partial, REF) == pytest.approx(1.0 + sacre("chrf", "the big cat", REF) / 100)
    assert translation_reward(partial, REF, metric="bleu") == pytest.approx(
        1.0 + sacre("bleu", "the big cat", REF) / 100
    )
    for junk in (None, 3, b"<think>x</think><answer>the</answer>", ["a"], 1.5):
        assert translation_reward(junk, REF) == -1.0  # type: ignore[arg-type]
        assert translation_reward(good, junk) == 1.0  # type: ignore[arg-type]
        for fn in OURS.values():  # non-strings are treated as ""
            assert fn(junk, REF) == fn(REF, junk) == 0.0  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        translation_reward(good, REF, metric="comet")


def test_translation_reward_never_raises_and_is_fast() -> None:
    import random

    rng = random.Random(1)
    alphabet = "ab <>/thinkswer\n\x00é.,&;"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(80)))
        for metric in ("chrf", "chrf++", "bleu"):
            v = translation_reward(text, text[::-1], metric=metric)
            assert -1.0 <= v <= 2.0
    big_answer = " ".join(rng.choice(["the", "cat", "dog", "sees", "."]) for _ in range(250_000))[:1_000_000]
    cases = [
        "<think>" + "x" * 1_000_000 + "</think><answer>the cat</answer>",
        "<think>t</think><answer>" + big_answer + "</answer>",
        "<think>t</think><answer>" + "".join(chr(0x4E00 + i % 20000) for i in range(1_000_000)) + "</answer>",
        "<think>t</think><answer>" + "!?" * 500_000 + "</answer>",
        "<answer>" * 200_000,
        "a" * 1_000_000,
    ]
    for completion in cases:
        for metric in ("chrf", "bleu"):
            with cpu_guard(2.0, f"translation_reward ({metric}) on 1 MB"):
                v = translation_reward(completion, big_answer, metric=metric)
            assert -1.0 <= v <= 2.0


def test_benchmark_cases_agree_with_sacrebleu() -> None:
    """The fidelity benchmark's own cases (random multilingual + adversarial): no disagreement."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "fidelity_translation", ROOT / "benchmarks/fidelity_translation.py"
        )
        assert spec is not None and spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    pairs_ = bench.cases(60, 3)
    assert len(pairs_) > 60 and ("", "") in pairs_ and any(len(h) > 10_000 for h, _ in pairs_)
    result = bench.disagreements(T, pairs_)
    assert result["pairs"] == len(pairs_)
    assert (result["chrf"], result["chrf++"], result["bleu"]) == (0, 0, 0), result["examples"]


# -- task -----------------------------------------------------------------------------------------


def test_task_registered_and_lexicon_fixed() -> None:
    assert isinstance(get_task("translation", style="tagged", max_words=4), TranslationTask)
    assert len(set(LEXICON.values())) == len(LEXICON) == 40
    # the lexicon does not depend on sample seeds
    a = TranslationTask().samples(5, seed=1)
    assert LEXICON == dict(LEXICON) and a[0]["source"].split()[-1] in LEXICON.values()
    with pytest.raises(ValueError):
        TranslationTask(style="chat")
    with pytest.raises(ValueError):
        TranslationTask(max_words=2)


@pytest.mark.parametrize("style", ["plain", "tagged"])
def test_task_samples(style: str) -> None:
    task = TranslationTask(style=style, max_words=5, glossary=True)
    train = task.samples(60, "train", seed=3)
    assert train == task.samples(60, "train", seed=3)  # deterministic
    test = task.samples(20, "test", seed=3)
    assert not {s["prompt"] for s in train} & {s["prompt"] for s in test}
    for s in train + test:
        assert s["task"] == "translation"
        assert {"prompt", "answer", "source"} <= set(s)
        assert len(s["source"].split()) <= 5
        assert json.loads(json.dumps(s)) == s
        demo = task.demonstration(s)
        assert task.is_correct(demo, s) and task.is_well_formed(demo, s)
        scores = {k: fn(demo, s) for k, fn in task.reward_functions().items()}
        loaded = json.loads(json.dumps(s))
        assert scores == {k: fn(demo, loaded) for k, fn in task.reward_functions().items()}
        if style == "plain":
            assert s["prompt"] == f"{s['source']} ="
            assert scores == {"chrf": pytest.approx(1.0)}
        else:
            assert scores == {"format": 1.0, "quality": pytest.approx(1.0)}
            assert sum(scores.values()) == pytest.approx(translation_reward(demo, s["answer"]))


def test_task_grammar_and_verifier() -> None:
    parts = {
        "subject": "cat",
        "subject_plural": True,
        "subject_adj": "big",
        "object": "dog",
        "object_plural": False,
        "object_adj": None,
        "verb": "chase",
        "negated": True,
    }
    from llmrl.tasks.translation import to_english, to_source

    assert to_english(parts) == "the big cats do not chase the dog"
    src = to_source(parts).split()
    assert src == [LEXICON["cat"] + "li", LEXICON["big"], LEXICON["dog"], "nu", LEXICON["chase"]]
    parts.update(subject_plural=False, negated=False)
    assert to_english(parts) == "the big cat chases the dog"

    plain, tagged = TranslationTask(), TranslationTask(style="tagged")
    s = {"answer": "the cat sees the dog"}
    assert plain.is_correct("  the  cat sees\nthe dog ", s)
    assert not plain.is_correct("the cat sees the dogs", s)
    assert not plain.is_well_formed("   ", s) and plain.reward_functions()["chrf"]("", s) == 0.0
    assert tagged.is_correct("<think>.</think><answer>the cat sees the dog</answer>", s)
    assert not tagged.is_well_formed("the cat sees the dog", s)
    rf = tagged.reward_functions()
    assert rf["format"]("junk", s) == -1.0 and rf["quality"]("junk", s) == 0.0
    assert normalise(" a \t b ") == "a b"
    for junk in ("x" * 1_000_000, None, "<answer>" * 1000):
        for task in (plain, tagged):
            with cpu_guard(2.0, "translation task on junk"):
                assert not task.is_correct(junk, s)  # type: ignore[arg-type]
                for fn in task.reward_functions().values():
                    fn(junk, s)  # type: ignore[arg-type]
