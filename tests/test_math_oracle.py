r"""Differential tests: ``math_equal`` against math-verify on Hypothesis-generated answer pairs.

Every disagreement must belong to one of the ACCEPTED classes checked in at
tests/data/math_verify_disagreements.py (each with its reason); an unlisted one fails the test. math-verify
is called as documented, ``verify(parse(gold), parse(pred))``, with its defaults (``float_rounding=6``,
``numeric_precision=15``, ``strict=True``, 5 s timeouts by ``signal.alarm``, fine in pytest's main
thread), each answer wrapped in ``$...$`` so its extractor reads the whole answer. The defaults are the
fairest comparison: they are what the field runs; where they round, we are exact on purpose and the
difference is an accepted class ("float_rounding").
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrl.rewards import math as mr
from llmrl.rewards.math import math_equal

math_verify = pytest.importorskip("math_verify")
logging.getLogger("math_verify").setLevel(logging.ERROR)
mr.load_sympy()

DATA = Path(__file__).resolve().parent / "data" / "math_verify_disagreements.py"


def _load() -> ModuleType:
    name = "math_verify_disagreements"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DATA)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


accepted = _load()


def theirs(pred: str, gold: str) -> bool:
    return bool(math_verify.verify(math_verify.parse(f"${gold}$"), math_verify.parse(f"${pred}$")))


def check(pred: str, gold: str) -> None:
    ours, other = math_equal(pred, gold), theirs(pred, gold)
    if ours != other:
        name = accepted.classify(pred, gold, ours, other)
        assert name in accepted.ACCEPTED, (
            f"unexplained: {pred!r} vs gold {gold!r}: ours {ours}, math-verify {other}"
        )


# -- strategies ---------------------------------------------------------------------------------------------
def dec(q: Fraction, places: int) -> str:
    """``q`` rounded half-up to ``places`` decimals."""
    scaled = abs(q) * 10**places
    n = int(scaled) + (scaled - int(scaled) >= Fraction(1, 2))
    text = str(n).rjust(places + 1, "0")
    return ("-" if q < 0 and n else "") + (text[:-places] + "." + text[-places:] if places else text)


def frac(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    return f"{'-' if q < 0 else ''}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"


big_ints = st.one_of(
    st.integers(-1000, 1000), st.integers(-(10**30), 10**30), st.integers(10**6 - 3, 10**6 + 3)
)


@st.composite
def integer_pairs(draw: st.DrawFn) -> tuple[str, str]:
    g = draw(big_ints)
    pred = draw(
        st.sampled_from(
            [
                str(g),
                str(g + 1),
                str(g - 1),
                str(-g),
                f"{g}{draw(st.integers(0, 9))}",
                f"{g:,}",
                f"{g}.0",
                f" {g} ",
                f"\\boxed {g}",
                f"\\boxed{{{g}}}",
                f"{g}.000001",
                f"{g}E0",
                f"{g}e1",
                str(g)[:-1] or "0",
            ]
        )
    )
    return pred, str(g)


@st.composite
def rational_pairs(draw: st.DrawFn) -> tuple[str, str]:
    q = Fraction(
        draw(st.integers(-(10**6), 10**6)), draw(st.sampled_from([1, 2, 3, 4, 7, 8, 9, 12, 25, 1000]))
    )
    places = draw(st.integers(0, 9))
    gold = draw(st.sampled_from([dec(q, places), frac(q), f"{q.numerator}/{q.denominator}"]))
    pred = draw(
        st.sampled_from(
            [
                dec(q, places),
                dec(q, places) + "0",
                dec(q, places + 1),
                dec(q, 6),
                dec(q, 7),
                dec(q, 15),
                frac(q),
                frac(q + 1),
                frac(-q),
                dec(q + Fraction(1, 10**6), 9),
                f"\\dfrac{{{q.numerator}}}{{{q.denominator}}}",
                f"{dec(q, places)}\\%",
            ]
        )
    )
    return pred, gold


@st.composite
def scientific_pairs(draw: st.DrawFn) -> tuple[str, str]:
    m = Fraction(draw(st.integers(10, 99)), 10) * draw(st.sampled_from([1, -1]))
    k = draw(st.integers(-12, 12))
    value = m * Fraction(10) ** k

    def forms(mm: Fraction, kk: int) -> list[str]:
        t = dec(mm, 1)
        return [f"{t}E{kk}", f"{t}e{kk}", f"{t}\\times10^{{{kk}}}", f"{t} \\cdot 10^{{{kk}}}", f"{t}*10^{kk}"]

    plain = str(value.numerator) if value.denominator == 1 else dec(value, max(0, 1 - k))
    gold = draw(st.sampled_from([plain, *forms(m, k)]))
    pred = draw(st.sampled_from([plain, *forms(m, k), *forms(m, k + 1), *forms(m + Fraction(1, 10), k)]))
    return pred, gold


@st.composite
def symbolic_pairs(draw: st.DrawFn) -> tuple[str, str]:
    a, b, c = draw(st.integers(1, 9)), draw(st.sampled_from([2, 3, 5, 6, 7])), draw(st.integers(2, 9))
    gold, value, same = draw(
        st.sampled_from(
            [
                (f"{a}\\sqrt{{{b}}}", a * b**0.5, [f"\\sqrt{{{a * a * b}}}", f"{a} \\sqrt {b}"]),
                (
                    f"\\frac{{{a}\\sqrt{{{b}}}}}{{{c}}}",
                    a * b**0.5 / c,
                    [f"\\frac{{{a}}}{{{c}}}\\sqrt{{{b}}}"],
                ),
                (f"{a}\\pi", a * 3.141592653589793, [f"{a} \\pi", f"\\pi \\cdot {a}"]),
                (f"\\frac{{{a}\\pi}}{{{c}}}", a * 3.141592653589793 / c, [f"\\frac{{{a}}}{{{c}}}\\pi"]),
            ]
        )
    )
    digits = draw(st.integers(2, 15))
    pred = draw(
        st.sampled_from([*same, f"{value:.{digits}f}", f"{value:.6f}", gold.replace(str(a), str(a + 1), 1)])
    )
    return pred, gold


element = st.one_of(
    st.integers(-9, 20).map(str),
    st.builds(lambda p, q: frac(Fraction(p, q)), st.integers(1, 8), st.integers(2, 8)),
)


@st.composite
def collection_pairs(draw: st.DrawFn) -> tuple[str, str]:
    xs = list(dict.fromkeys(draw(st.lists(element, min_size=1, max_size=4))))
    ys = list(xs)
    op = draw(st.sampled_from(["same", "shuffle", "duplicate", "drop", "add", "change", "reverse"]))
    if op == "shuffle":
        ys = draw(st.permutations(ys))
    elif op == "duplicate":
        ys.insert(draw(st.integers(0, len(ys))), draw(st.sampled_from(ys)))
    elif op == "drop" and len(ys) > 1:
        ys.pop(draw(st.integers(0, len(ys) - 1)))
    elif op == "add":
        ys.append(str(draw(st.integers(30, 40))))
    elif op == "change":
        ys[draw(st.integers(0, len(ys) - 1))] = str(draw(st.integers(40, 50)))
    elif op == "reverse":
        ys.reverse()
    sep = draw(st.sampled_from([",", ", ", " , "]))
    shape = draw(st.sampled_from(["set", "set", "tuple", "interval"]))
    if shape == "set":
        return "\\{" + sep.join(ys) + "\\}", "\\{" + ",".join(xs) + "\\}"
    if shape == "interval" and len(xs) == 2 == len(ys):
        brackets = draw(st.sampled_from(["()", "[]", "(]", "[)"]))
        gold_brackets = draw(st.sampled_from([brackets, brackets, "()", "[]"]))
        if draw(st.booleans()):
            xs[1] = ys[1] = "\\infty"
        return brackets[0] + sep.join(ys) + brackets[1], gold_brackets[0] + ",".join(xs) + gold_brackets[1]
    brackets = draw(st.sampled_from(["()", "[]"]))
    return "(" + sep.join(ys) + ")", brackets[0] + ",".join(xs) + brackets[1]


@st.composite
def matrix_pairs(draw: st.DrawFn) -> tuple[str, str]:
    h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rows = draw(st.lists(st.lists(element, min_size=w, max_size=w), min_size=h, max_size=h))
    other = [list(r) for r in rows]
    op = draw(st.sampled_from(["same", "same", "change", "transpose", "merge_rows"]))
    if op == "change":
        other[draw(st.integers(0, h - 1))][draw(st.integers(0, w - 1))] = str(draw(st.integers(21, 30)))
    elif op == "transpose":
        other = [list(c) for c in zip(*rows)]
    elif op == "merge_rows" and h > 1:
        other = [sum(other, [])]  # a row break eaten

    def tex(kind: str, m: list[list[str]], spaced: bool) -> str:
        sep, br = (" & ", " \\\\ ") if spaced else ("&", "\\\\")
        return f"\\begin{{{kind}}}" + br.join(sep.join(r) for r in m) + f"\\end{{{kind}}}"

    kinds = st.sampled_from(["pmatrix", "bmatrix", "matrix"])
    return tex(draw(kinds), other, draw(st.booleans())), tex(draw(kinds), rows, draw(st.booleans()))


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(integer_pairs())
def test_integers_agree_or_accepted(pair: tuple[str, str]) -> None:
    check(*pair)


@SETTINGS
@given(rational_pairs())
def test_decimals_and_fractions_agree_or_accepted(pair: tuple[str, str]) -> None:
    check(*pair)


@SETTINGS
@given(scientific_pairs())
def test_scientific_notation_agrees_or_accepted(pair: tuple[str, str]) -> None:
    check(*pair)


@SETTINGS
@given(symbolic_pairs())
def test_symbolic_constants_agree_or_accepted(pair: tuple[str, str]) -> None:
    check(*pair)


@SETTINGS
@given(collection_pairs())
def test_sets_tuples_intervals_agree_or_accepted(pair: tuple[str, str]) -> None:
    check(*pair)


@SETTINGS
@given(matrix_pairs())
def test_matrices_agree_or_accepted(pair: tuple[str, str]) -> None:
    check(*pair)


# -- the accepted list itself --------------------------------------------------------------------------------
EXAMPLES = [  # (pred, gold, ours, math-verify, class): one real instance of every accepted class
    ("0.333333", "\\frac{1}{3}", False, True, "float_rounding"),
    ("3.141593", "\\pi", False, True, "float_rounding"),
    ("1e-5", "0.00001", True, False, "lowercase_e_notation"),
    ("2.7*10^-4", "0.00027", True, False, "unbraced_negative_exponent"),
    ("-5\\%", "-5", True, False, "percent"),
    ("[4,\\frac{7}{4})", "[3,\\frac{7}{4})", False, True, "empty_interval"),
    ("(11, 1)", "[11,1]", False, True, "empty_interval"),
    ("(\\frac{5}{8}, \\infty]", "(\\frac{5}{8},\\infty)", False, True, "closed_infinite_end"),
    ("9.7\\times10^{2}", "970", True, False, "binary_float_mantissa"),
    ("(-1,0,\\frac{4}{3})", "[-1,0,\\frac{4}{3}]", False, True, "long_tuple_brackets"),
]


def test_every_accepted_class_has_a_real_instance() -> None:
    assert {name for *_, name in EXAMPLES} == set(accepted.ACCEPTED)
    assert all(isinstance(reason, str) and len(reason) > 40 for reason in accepted.ACCEPTED.values())
    for pred, gold, ours, other, name in EXAMPLES:
        assert (math_equal(pred, gold), theirs(pred, gold)) == (ours, other), (pred, gold)
        assert accepted.classify(pred, gold, ours, other) == name, (pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold", "ours", "other"),
    [
        ("1000001", "1000000", True, False),  # the old 1e-6 tolerance: no class may excuse it
        ("\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "\\begin{pmatrix}12\\end{pmatrix}", True, False),
        ("1E-5", "0.00001", False, True),
        ("\\{1,1,2\\}", "\\{1,2\\}", False, True),
        ("\\boxed 7", "7", False, True),
        ("\\begin{bmatrix}1&2\\end{bmatrix}", "\\begin{pmatrix}1&2\\end{pmatrix}", False, True),
        ("2.000001", "2", True, False),
    ],
)
def test_the_old_bugs_are_not_accepted(pred: str, gold: str, ours: bool, other: bool) -> None:
    """The check can fail: the disagreements of the old math_equal (issue 10) belong to no accepted class."""
    assert theirs(pred, gold) is other
    assert accepted.classify(pred, gold, ours, other) is None
    assert math_equal(pred, gold) is other  # and the new math_equal agrees with math-verify on them
