"""math_equal / extract_answer / math_reward: a hand-labelled equivalence table, extraction rules, and
property tests that nothing raises and every call returns within the documented bound."""

from __future__ import annotations

import signal
import threading
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrl.rewards import math as mr
from llmrl.rewards.math import (
    TIME_BOUND_S,
    as_rel_tol,
    extract_answer,
    extract_boxed,
    math_equal,
    math_reward,
)

mr._sympy()  # the one-time sympy import and warm-up are outside the documented bound

TABLE: list[tuple[str, str, bool]] = [  # (prediction, gold, expected)
    # integers, signs, thousands separators
    ("5", "5", True),
    ("05", "5", True),
    ("+5", "5", True),
    ("5.0", "5", True),
    ("5.", "5", True),
    ("-2", "-2", True),
    ("2", "-2", False),
    ("-0", "0", True),
    ("6", "5", False),
    ("1,000", "1000", True),
    ("1000", "1,000", True),
    ("1{,}000", "1000", True),
    ("1,234,567", "1234567", True),
    ("12,345.5", "12345.5", True),
    ("1,000", "1", False),
    ("100", "1000", False),
    ("123456789012345678901234567890", "123456789012345678901234567890", True),
    ("123456789012345678901234567891", "123456789012345678901234567890", False),  # exact: off by one
    ("1000001", "1000000", False),  # exact: no tolerance (this was equal under the old 1e-6 tolerance)
    ("1000002", "1000000", False),
    # decimals and fractions
    ("0.5", "1/2", True),
    ("0.50", "\\frac{1}{2}", True),
    (".5", "0.5", True),
    ("0.5", "\\frac{1}{3}", False),
    ("0.333", "1/3", False),
    ("0.33333", "\\frac13", False),
    ("0.3333333", "\\frac{1}{3}", False),  # exact rationals: a rounded decimal is not 1/3
    ("0.6666667", "2/3", False),
    ("0.67", "2/3", False),
    ("3/4", "\\frac{3}{4}", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("\\tfrac{3}{4}", "3/4", True),
    ("\\frac34", "\\frac{3}{4}", True),
    ("\\frac{6}{8}", "\\frac{3}{4}", True),
    ("-\\frac{1}{2}", "\\frac{-1}{2}", True),
    ("\\frac{-1}{2}", "-0.5", True),
    ("\\frac{1}{2}", "-\\frac{1}{2}", False),
    ("\\frac{4}{3}", "\\frac{3}{4}", False),
    ("1 / 4", "0.25", True),
    ("\\frac{1}{0}", "1", False),
    ("1/0", "1/0", True),  # identical strings are equal whatever they mean
    ("\\frac{2}{4}x", "\\frac{x}{2}", True),
    ("2.5", "\\frac{5}{2}", True),
    ("2.50", "5/2", True),
    ("2.05", "5/2", False),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", True),
    ("\\frac{\\pi}{4}", "\\frac14\\pi", True),
    # percentages
    ("50\\%", "50", True),
    ("50\\%", "0.5", True),
    ("50%", "\\frac{1}{2}", True),
    ("50 percent", "50", True),
    ("50", "50\\%", True),
    ("0.5", "50\\%", True),
    ("12.5\\%", "0.125", True),
    ("50\\%", "50%", True),
    ("50%", "0.5%", False),
    ("5%", "50", False),
    ("50", "0.5", False),
    ("25\\%", "0.3", False),
    # LaTeX wrappers, spacing, \text
    ("$5$", "5", True),
    ("\\(5\\)", "5", True),
    ("\\boxed{5}", "5", True),
    ("\\fbox{5}", "5", True),
    ("{5}", "5", True),
    ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("1\\!000", "1000", True),
    ("1,\\!000", "1000", True),
    ("\\, 7 \\;", "7", True),
    ("\\displaystyle \\frac{1}{2}", "0.5", True),
    ("\\text{5}", "5", True),
    ("\\mathrm{12}", "12", True),
    ("\\textbf{Monday}", "Monday", True),
    ("monday", "Monday", True),
    ("Tuesday", "Monday", False),
    ("\\text{yes}", "Yes", True),
    ("no", "yes", False),
    ("3 \\cdot 4", "12", True),
    ("3 \\times 4", "12", True),
    ("2\\cdot 10^{3}", "2000", True),
    ("12 \\div 4", "3", True),
    # roots, pi, powers
    ("\\sqrt{2}", "\\sqrt2", True),
    ("\\sqrt{2}", "1.414", False),
    ("\\sqrt{2}", "1.41421356", False),  # a rational never equals an irrational constant
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("\\sqrt{8}", "2.83", False),
    ("\\sqrt{12}", "2\\sqrt{3}", True),
    ("\\sqrt{12}", "3\\sqrt{2}", False),
    ("\\sqrt[3]{8}", "2", True),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", True),
    ("\\pi", "3.14", False),
    ("\\pi", "3.14159265", False),
    ("2\\pi", "2 \\pi", True),
    ("2\\pi", "\\pi", False),
    ("\\pi r^2", "r^2 \\pi", True),
    ("49\\pi", "49 \\pi", True),
    ("2^{10}", "1024", True),
    ("2^10", "1024", True),
    ("2**10", "1024", True),
    ("2^{-1}", "0.5", True),
    ("10^{2}", "100", True),
    ("e^{0}", "1", True),
    ("\\log_2 8", "3", True),
    ("\\ln(e^2)", "2", True),
    ("5!", "120", True),
    ("\\binom{5}{2}", "10", True),
    ("\\dbinom{6}{3}", "20", True),
    ("|-3|", "3", True),
    ("\\left|-3\\right|", "3", True),
    ("3+4i", "4i+3", True),
    ("3+4i", "3-4i", False),
    ("\\infty", "\\infty", True),
    ("\\infty", "-\\infty", False),
    # symbolic
    ("x^2+2x+1", "(x+1)^2", True),
    ("(x+1)^2", "x^2+1", False),
    ("x^2-1", "(x-1)(x+1)", True),
    ("2x+3", "3+2x", True),
    ("2x+3", "2x-3", False),
    ("\\frac{x}{2}", "0.5x", True),
    ("a+b", "b+a", True),
    ("ab", "ba", True),
    ("\\sin^2 x + \\cos^2 x", "1", True),
    ("\\sin(x)", "\\cos(x)", False),
    ("\\frac{x^2-1}{x-1}", "x+1", True),
    ("\\alpha + 1", "1 + \\alpha", True),
    ("x_1 + x_2", "x_2 + x_1", True),
    ("x_{1}", "x_1", True),
    ("2n", "n", False),
    ("y = 2x + 1", "2x+1", True),
    ("y=2x+1", "y = 1 + 2x", True),
    ("y=2x+1", "x = 2x + 1", False),
    ("2x+3y=6", "2x + 3y = 6", True),
    # intervals
    ("(1, 2]", "(1,2]", True),
    ("(1,2]", "[1,2]", False),
    ("(1,2)", "[1,2]", False),
    ("[0,\\infty)", "[0, \\infty)", True),
    ("[0,\\infty)", "(0,\\infty)", False),
    ("(-\\infty, 3)", "\\left(-\\infty,3\\right)", True),
    ("(-\\infty, 3]", "(-\\infty, 3)", False),
    ("[\\frac{1}{2}, 1)", "[0.5, 1)", True),
    ("(-\\infty,1)\\cup(2,\\infty)", "(2,\\infty)\\cup(-\\infty,1)", True),
    ("(-\\infty,1)\\cup(2,\\infty)", "(-\\infty,1]\\cup(2,\\infty)", False),
    ("x \\in [1, 2]", "[1,2]", True),
    # tuples and coordinates
    ("(1, 2)", "(1,2)", True),
    ("(2, 1)", "(1,2)", False),
    ("(1, 2, 3)", "(1,2)", False),
    ("(\\frac{1}{2}, 3)", "(0.5, 3)", True),
    ("\\left(3, -\\frac{1}{2}\\right)", "(3,-0.5)", True),
    ("\\langle 1, 2 \\rangle", "(1, 2)", True),
    ("(x, y) = (1, 2)", "(1,2)", True),
    # sets and lists
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("\\{1,2\\}", "\\{1,3\\}", False),
    ("\\{1,2\\}", "\\{1,2,3\\}", False),
    ("2, 1", "\\{1,2\\}", True),
    ("1, 2", "1,2", True),
    ("x = 1, 2", "1, 2", True),
    ("x=-3 \\text{ or } x=2", "2, -3", True),
    ("2 and 3", "3, 2", True),
    ("\\{3\\}", "3", True),
    ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}, 1-\\sqrt{2}", True),
    ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}", False),
    ("\\{1, 1, 2\\}", "\\{1,2,2\\}", True),  # sets: duplicates collapse, both are {1, 2}
    # units and degrees
    ("5 cm", "5", True),
    ("5cm", "5", True),
    ("5 \\text{ cm}^2", "5", True),
    ("5\\text{ dollars}", "5", True),
    ("\\$5", "5", True),
    ("\\$1,000", "1000", True),
    ("30^\\circ", "30", True),
    ("30^{\\circ}", "30", True),
    ("30 degrees", "30", True),
    ("30\u00b0", "30", True),
    ("12 square units", "12", True),
    ("3 hours", "3", True),
    ("4 apples", "4", True),
    ("5 m", "5", True),
    ("5 cm", "6", False),
    ("6 \\mbox{ inches}", "6", True),
    ("8 \\text{ km/h}", "8", True),
    # equations as answers
    ("x = 5", "5", True),
    ("x=5", "x = 5", True),
    ("5", "x = 5", True),
    ("x = -5", "5", False),
    ("\\theta = \\frac{\\pi}{3}", "\\frac{\\pi}{3}", True),
    ("k=\\frac{3}{2}", "1.5", True),
    # multiple choice
    ("(B)", "B", True),
    ("B", "(B)", True),
    ("(B) 42", "B", True),
    ("\\text{(B)}", "B", True),
    ("\\textbf{(C)}", "(C)", True),
    ("B", "C", False),
    ("(A)", "B", False),
    ("42", "(B)", False),
    ("b", "B", False),
    # junk and empties
    ("", "5", False),
    ("5", "", False),
    ("   ", "   ", False),
    ("five", "5", False),
    ("\\frac{1}{2", "0.5", False),
    ("((1)", "1", False),
    ("9^9^9^9", "1", False),
    ("10**10**10", "10**10**10", True),  # identical text: no evaluation needed
    ("10**10**10", "1", False),
    ("2^{10000}", "1", False),
    ("1000000!", "1", False),
    ("\\undefinedcommand{3}", "3", False),
    ("__import__('os').system('true')", "0", False),
    ("x > 3", "x < 3", False),
    # more forms models produce
    ("3\\frac{1}{2}", "3.5", True),  # mixed number
    ("3\\frac12", "\\frac{7}{2}", True),
    ("3\\frac{1}{2}", "1.5", False),
    ("\\pm 1", "\\{-1, 1\\}", True),
    ("f(x) = x^2", "x^2", True),
    ("y = -\\frac{1}{2}x + 3", "-\\frac{x}{2}+3", True),
    ("(-\\infty, -1] \\cup [1, \\infty)", "(-\\infty,-1]\\cup[1,\\infty)", True),
    ("10 \\sqrt 3", "10\\sqrt{3}", True),
    ("\\sqrt{3}/2", "\\frac{\\sqrt3}{2}", True),
    ("\\sqrt{x}", "x^{1/2}", True),
    ("0.1+0.2", "0.3", True),
    ("10^{100}", "1" + "0" * 100, True),
    ("\\frac{100}{3}\\%", "\\frac{1}{3}", True),
    ("\\ln 2", "0.693147", False),
    ("\\ln 2", "0.6931", False),
    ("\\sin(\\pi/6)", "1/2", True),
    ("12 \\text{cm}^{2}", "12", True),
    ("\u2212 7", "-7", True),
    # more negatives
    ("1/3", "0.33", False),
    ("\\frac{1}{2}", "\\frac{1}{2}x", False),
    ("x^2", "x^3", False),
    ("(x+1)^2", "x^2+2x", False),
    ("2\\sqrt{2}", "\\sqrt{2}", False),
    ("\\sqrt{2}", "2", False),
    ("\\pi", "\\pi^2", False),
    ("[1, 2]", "[1, 3]", False),
    ("(1, 2)", "\\{1, 2\\}", False),
    ("\\{1,2\\}", "(1,2)", False),
    ("1, 2", "(1, 2)", False),
    ("5 cm", "50", False),
    ("x = 5", "x = 6", False),
    ("y = 2x", "y = 3x", False),
    ("(C)", "(D)", False),
    ("1000", "1,001", False),
    ("99%", "0.9", False),
    ("0.5%", "0.5", True),
    ("0.5%", "0.05", False),
    ("e", "2.718", False),
    ("i", "-1", False),
    ("3+4i", "5", False),
    ("\\frac{1}{2}", "2", False),
    ("-\\frac{3}{4}", "\\frac{3}{4}", False),
    ("x+y", "x-y", False),
    # issue 10: no tolerance (numbers and constants are exact)
    ("1000001", "1000000", False),
    ("1000000", "1000001", False),
    ("1000000", "1000000.0", True),
    ("2.000001", "2", False),
    ("2", "2.000001", False),
    ("3.14159", "\\pi", False),
    ("\\pi", "3.14159", False),
    ("3.14159265358979323846264338327950288", "\\pi", False),
    ("\\frac{355}{113}", "\\pi", False),
    ("1.4142135623730950488", "\\sqrt{2}", False),
    ("\\frac{\\sqrt{3}}{2}", "\\sin(\\pi/3)", True),
    ("\\sqrt{2}+\\sqrt{3}", "\\sqrt{5+2\\sqrt{6}}", True),
    ("\\sin(\\pi/12)", "\\frac{\\sqrt6-\\sqrt2}{4}", True),
    # issue 10: a row break \\ is not spacing
    ("\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "\\begin{pmatrix}12\\end{pmatrix}", False),
    ("\\begin{pmatrix}12\\end{pmatrix}", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", False),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
    ("\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "\\begin{pmatrix}1 \\\\ 3\\end{pmatrix}", False),
    ("1 \\\\ 2", "12", False),
    # issue 10: scientific notation, read exactly
    ("1E-5", "0.00001", True),
    ("1e-5", "0.00001", True),
    ("1\\times10^{-5}", "0.00001", True),
    ("1 \\cdot 10^{-5}", "0.00001", True),
    ("1E-5", "\\frac{1}{100000}", True),
    ("0.00001", "1e-5", True),
    ("1e-5", "0.0001", False),
    ("2.5e3", "2500", True),
    ("1E5", "100000", True),
    ("1e-5", "1E-6", False),
    ("10^{-5}", "0.00001", True),
    ("-1.5\\times 10^{3}", "-1500", True),
    ("1.5 \\times 10^3", "150", False),
    ("1.5 \\times 10^3", "1500.0001", False),
    ("1e-5", "e-5", False),  # scientific notation, not Euler's e minus 5
    # issue 10: matrices (delimiters are presentation; vmatrix is a determinant)
    ("\\begin{bmatrix}1 & 2\\\\ 3 & 4\\end{bmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{matrix}1 & 2\\\\ 3 & 4\\end{matrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\left(\\begin{array}{cc}1 & 2\\\\ 3 & 4\\end{array}\\right)",
     "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\\\\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{pmatrix}\\frac12&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}0.5&2\\\\3&4\\end{bmatrix}", True),
    ("\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", False),
    ("\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
    ("\\begin{pmatrix}2&1\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", False),
    ("\\begin{vmatrix}1&2\\\\3&4\\end{vmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", False),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{vmatrix}1&2\\\\3&4\\end{vmatrix}", False),
    ("\\begin{vmatrix}1&2\\\\3&4\\end{vmatrix}", "-2", True),
    ("-2", "\\begin{vmatrix}1&2\\\\3&4\\end{vmatrix}", True),
    ("\\begin{vmatrix}1&2\\\\3&4\\end{vmatrix}", "2", False),
    ("\\begin{vmatrix}a&b\\\\c&d\\end{vmatrix}", "ad-bc", True),
    ("\\begin{vmatrix}2&1\\\\4&3\\end{vmatrix}", "\\begin{vmatrix}1&0\\\\0&2\\end{vmatrix}", True),
    ("\\begin{Vmatrix}1&2\\end{Vmatrix}", "\\begin{pmatrix}1&2\\end{pmatrix}", False),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)", False),  # a column vector is not a tuple
    ("(1,2)", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
    ("\\begin{pmatrix}5\\end{pmatrix}", "5", False),
    # issue 10: sets are sets (duplicates collapse)
    ("\\{1,1,2\\}", "\\{1,2\\}", True),
    ("\\{1,2\\}", "\\{1,1,2\\}", True),
    ("\\{1,1,2\\}", "\\{1,2,3\\}", False),
    ("\\{1,1\\}", "1", True),
    ("\\{1,2,2\\}", "\\{1,2\\}", True),
    ("\\{1,1,2\\}", "\\{1,3\\}", False),
    ("\\{2,1,1\\}", "\\{1,2\\}", True),
    ("1, 1, 2", "2, 1", True),
    ("\\{1,2\\}", "\\{1\\}", False),
    ("(1,1,2)", "(1,2)", False),  # tuples keep order and multiplicity
    # issue 10: a bare \boxed X as the answer
    ("\\boxed 7", "7", True),
    ("7", "\\boxed 7", True),
    ("\\boxed 7", "8", False),
    ("\\boxed{7}", "\\boxed 7", True),
    ("\\boxed{1}+\\boxed{2}", "3", False),
]


def test_table_is_large_and_balanced() -> None:
    assert len(TABLE) >= 200
    assert sum(expected for *_, expected in TABLE) >= 60 and sum(not e for *_, e in TABLE) >= 60


@pytest.mark.parametrize(("prediction", "gold", "expected"), TABLE, ids=[f"{i}" for i in range(len(TABLE))])
def test_math_equal_table(prediction: str, gold: str, expected: bool) -> None:
    start = time.perf_counter()
    assert math_equal(prediction, gold) is expected
    assert time.perf_counter() - start < TIME_BOUND_S


# -- extraction ------------------------------------------------------------------------------------------
EXTRACT = [  # (completion, extracted answer)
    ("The answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{1} and finally \\boxed{2}", "2"),
    ("\\boxed{1} then a truncated \\boxed{2", "1"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\boxed{a{b}c}", "a{b}c"),
    ("\\fbox{A} and then \\boxed{B}", "B"),
    ("\\boxed{B} and then \\fbox{A}", "A"),
    ("$\\boxed 5$", "5"),
    ("\\boxed{} 4", "4"),
    ("\\boxed{3} <answer>7</answer>", "3"),
    ("<answer> 7 </answer>", "7"),
    ("<answer>1</answer> <answer>2</answer>", "2"),
    ("<answer></answer> 12", "12"),
    ("x = -3.5 so", "-3.5"),
    ("10-5", "5"),
    ("It costs $1,234.50 in total", "1,234.50"),
    ("3/4 of them", "3/4"),
    ("about 50% off", "50%"),
    ("(-3)", "-3"),
    ("so it is 1.5e-5 overall", "1.5e-5"),
    ("about 2E6 of them", "2E6"),
    ("no numbers here", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_non_strings_and_boxed_only() -> None:
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert extract_boxed(123) is None  # type: ignore[arg-type]
    assert extract_boxed("<answer>5</answer>") is None
    assert extract_boxed("\\boxed{\\boxed{5}}") == "5"


def test_math_reward() -> None:
    assert math_reward("so \\boxed{\\dfrac{1}{2}}", "0.5") == 1.0
    assert math_reward("<answer>x = 3</answer>", "3") == 1.0
    assert math_reward("the total is 1,000 apples", "1000") == 1.0
    assert math_reward("\\boxed{2}", "-2") == 0.0
    assert math_reward("nothing", "0") == 0.0
    assert math_reward(None, "0") == 0.0  # type: ignore[arg-type]
    assert math_equal(5, "5") is False  # type: ignore[arg-type]
    assert math_equal("5", None) is False  # type: ignore[arg-type]


# -- safety: time bound, never raising ------------------------------------------------------------------
FRAGMENTS = ["\\frac{", "}", "{", "\\sqrt", "^", "9", "10", "**", "!", "(", ")", "[", "]", "\\{", "\\}", ",", "x",
             "=", "\\pi", "\\infty", "%", "\\%", "-", "+", "/", "\\boxed{", "<answer>", "</answer>", "\\text{",
             " cm", "e", "i", "|", "\\cup", "\\pm", "\\log_", "\\binom", "0.5", "_", "\\left(", "\\right)", " "]
latex = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join)
answers = st.one_of(st.text(max_size=80), latex, st.sampled_from([g for _, g, _ in TABLE]))


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers, answers)
def test_random_and_adversarial_inputs_never_raise(prediction: str, gold: str) -> None:
    equal, seconds = timed(math_equal, prediction, gold)
    assert isinstance(equal, bool) and seconds < TIME_BOUND_S
    reward, seconds = timed(math_reward, prediction, gold)
    assert reward in (0.0, 1.0) and type(reward) is float and seconds < TIME_BOUND_S
    assert math_equal(prediction, prediction) in (True, False)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(FRAGMENTS + ["1 ", "a", "\\boxed{1}", "<answer>2</answer>"]), st.sampled_from(FRAGMENTS))
def test_megabyte_inputs(unit: str, tail: str) -> None:
    big = unit * (1_000_000 // len(unit)) + tail
    for args in ((big, "1"), ("1", big), (big, big)):
        equal, seconds = timed(math_equal, *args)
        assert equal is False and seconds < 0.1  # over MAX_ANSWER_CHARS: refused before any work
    reward, seconds = timed(math_reward, big, "1")
    assert reward in (0.0, 1.0) and seconds < TIME_BOUND_S + 0.5


HOSTILE = [
    "9^9^9^9", "10**10**10", "2^{10000}", "(2^{1000})^{1000}", "1000000!", "(10^{100})^{999}", "999!" * 400,
    "\\binom{10^{6}}{5}", "2^{1/10^{9}}", "\\sqrt[10^{9}]{2}", "(x+y+z+w)^{1000}", "(x+1)^{1000}-(x+1)^{999}",
    "((x+1)^{30}(y+2)^{30})^{30}", "e^{e^{e^{e^{e^{e^{e}}}}}}", "\\sin(10^{999})", "2^{\\pi^{\\pi^{\\pi}}}",
    "\\sqrt{" * 600 + "2" + "}" * 600, "(" * 999 + "1" + ")" * 999, "-" * 1999 + "1", "1/" * 999 + "1",
    "x^" * 999 + "2", "\\frac{1}{" * 300 + "2" + "}" * 300, "x " * 900, "a" * 2000, "\\{" + "1," * 600 + "1\\}",
    "\\{" + ",".join("\\{" + ",".join("1" * 3 for _ in range(30)) + "\\}" for _ in range(14)) + "\\}",
    "__import__('os').system('echo pwned')", "().__class__.__bases__[0]", "lambda: 1", "x" * 2001,
    "\\begin{pmatrix}" + "1\\\\" * 600 + "\\end{pmatrix}", "\\begin{pmatrix}" + "x&" * 400 + "1\\end{pmatrix}",
    "\\begin{vmatrix}" + "\\\\".join("&".join(f"(x_{i}+y_{j})^{{{i + j + 3}}}" for j in range(4)) for i in range(4))
    + "\\end{vmatrix}",
    "\\begin{vmatrix}" + "\\\\".join("&".join(str(10**20 * i + j) for j in range(8)) for i in range(8))
    + "\\end{vmatrix}",
    "\\{" + ",".join(f"(x+{k})^2" for k in range(64)) + "\\}", "1e1000", "1e-100000", "9.9\\times10^{999}",
]


@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_answers_are_bounded(text: str) -> None:
    for gold in ("1", "x", "(x+1)^{999}", "\\{1,2\\}", text[::-1]):
        for args in ((text, gold), (gold, text)):
            equal, seconds = timed(math_equal, *args)
            assert isinstance(equal, bool) and seconds < TIME_BOUND_S, args
    assert math_equal(text, text) is (len(text) <= mr.MAX_ANSWER_CHARS)


def test_timeout_gives_false_and_restores_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    def never_ending(*args: object) -> None:
        while True:
            pass

    def outer(signum: int, frame: object) -> None:
        raise AssertionError("outer alarm fired early")

    old = signal.signal(signal.SIGALRM, outer)
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        monkeypatch.setattr(mr, "_sym_equal", never_ending)
        equal, seconds = timed(math_equal, "x^2", "y^2")
        assert equal is False and mr.SYMPY_TIMEOUT_S <= seconds < TIME_BOUND_S
        assert signal.getsignal(signal.SIGALRM) is outer
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < remaining <= 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_outside_main_thread_no_symbolic_stage_but_bounded() -> None:
    results: dict[str, object] = {}

    def work() -> None:
        results["numeric"] = math_equal("0.5", "\\frac{1}{2}")
        results["structure"] = math_equal("(1, \\frac{1}{2}]", "(1,0.5]")
        results["symbolic"] = math_equal("2\\sqrt{2}", "\\sqrt{8}")  # needs sympy: skipped here
        results["scientific"] = math_equal("1E-5", "1 \\cdot 10^{-5}")  # exact numbers need no sympy
        results["matrix"] = math_equal("\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}",
                                       "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}")
        results["set"] = math_equal("\\{1,1,2\\}", "\\{2,1\\}")
        results["near"] = math_equal("1000001", "1000000")
        results["hostile"] = timed(math_equal, HOSTILE[-5], HOSTILE[-5][::-1])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert results["numeric"] is True and results["structure"] is True and results["symbolic"] is False
    assert results["scientific"] is True and results["matrix"] is True and results["set"] is True
    assert results["near"] is False
    equal, seconds = results["hostile"]  # type: ignore[misc]
    assert equal is False and seconds < TIME_BOUND_S


# -- the opt-in tolerance --------------------------------------------------------------------------------
TOLERANT = [  # (prediction, gold, rel_tol, expected)
    ("1000001", "1000000", 1e-6, True),
    ("1000001", "1000000", Fraction(1, 10**6), True),
    ("1000002", "1000000", 1e-6, False),
    ("2.000001", "2", 1e-6, True),
    ("0.3333333", "\\frac{1}{3}", 1e-6, True),
    ("0.333", "1/3", 1e-6, False),
    ("3.14159265", "\\pi", 1e-6, True),
    ("3.14", "\\pi", 1e-6, False),
    ("\\sqrt{2}", "1.41421356", 1e-6, True),
    ("\\ln 2", "0.693147", 1e-6, True),
    ("50.00001\\%", "0.5", 1e-6, True),
    ("1000001", "1000000", 0, False),
    ("5", "5", 0, True),
    ("(1000001, 2)", "(1000000, 2)", 1e-6, True),
    ("\\{1000001, 2\\}", "\\{2, 1000000\\}", 1e-6, True),
    ("x + 1.0000001", "x + 1", 1e-6, False),  # with variables the exact simplify test decides
    ("0.35", "1/3", 0.1, True),
]


@pytest.mark.parametrize(("prediction", "gold", "rel_tol", "expected"), TOLERANT)
def test_rel_tol_is_opt_in(prediction: str, gold: str, rel_tol: float | Fraction, expected: bool) -> None:
    assert math_equal(prediction, gold, rel_tol=rel_tol) is expected
    if expected and rel_tol:
        assert math_equal(prediction, gold) is (prediction == gold)  # the default is exact
    assert math_equal(prediction, gold, rel_tol=None) is math_equal(prediction, gold)


def test_rel_tol_validation_and_reward() -> None:
    for bad in (-1e-6, float("nan"), float("inf"), "1e-6", True, [1]):
        assert math_equal("1", "1", rel_tol=bad) is False  # type: ignore[arg-type]  # never raises
        with pytest.raises(ValueError, match="rel_tol"):
            as_rel_tol(bad)  # type: ignore[arg-type]
    assert as_rel_tol(None) is None and as_rel_tol(1e-6) == Fraction(1, 10**6) and as_rel_tol(0) == 0
    assert math_reward("\\boxed{1000001}", "1000000") == 0.0
    assert math_reward("\\boxed{1000001}", "1000000", rel_tol=1e-6) == 1.0


def test_math_task_rel_tol_option() -> None:
    from llmrl.tasks import get_task

    sample = {"task": "math", "prompt": "How many?", "answer": "1000000"}
    exact, tolerant = get_task("math"), get_task("math", rel_tol=1e-6)
    assert exact.rel_tol is None and tolerant.rel_tol == 1e-6
    assert exact.reward_functions()["answer"]("so \\boxed{1000001}", sample) == 0.0
    assert tolerant.reward_functions()["answer"]("so \\boxed{1000001}", sample) == 1.0
    assert tolerant.reward_functions()["answer"]("so \\boxed{1000002}", sample) == 0.0
    assert exact.is_correct("\\boxed{1000000}", sample) and tolerant.is_correct("\\boxed{1000000}", sample)
    for bad in (-1.0, "tight", float("nan")):
        with pytest.raises(ValueError, match="math: rel_tol"):
            get_task("math", rel_tol=bad)
