r"""ACCEPTED disagreements between ``llmrl.rewards.math.math_equal`` and math-verify, by class.

Checked in on purpose: the differential test (tests/test_math_oracle.py) and the benchmark
(benchmarks/fidelity_math.py) call :func:`classify` on every pair where the two checkers disagree; a pair
no class explains fails the test. Each class names the direction it explains (``ours``/``theirs`` are the
verdicts of math_equal and math-verify) and tests the pair itself, so a class cannot swallow unrelated
disagreements. math-verify is called as ``verify(parse(f"${gold}$"), parse(f"${pred}$"))`` with its
defaults (float_rounding=6, numeric_precision=15, strict=True).

This module imports neither llmrl nor math-verify at import time (the benchmark loads it by path).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

ACCEPTED: dict[str, str] = {
    "float_rounding": (
        "math-verify rounds floats to 6 decimal places (float_rounding=6) and compares expressions at 15 "
        "digits, so a decimal close to the gold counts as equal (0.333333 = 1/3, 3.141593 = pi, "
        "9.2e-10 = 9.1e-10); we compare exactly (a tolerance is opt-in: rel_tol)."
    ),
    "lowercase_e_notation": (
        "math-verify reads a lowercase e as Euler's number (1e-5 is e - 5, 6e0 is 0); we read "
        "<number>e<integer> as scientific notation, exactly like 1E-5."
    ),
    "unbraced_negative_exponent": (
        "math-verify stops at an unbraced negative exponent (2.7*10^-4 is read as 2.7); "
        "we read 10^-4 as 10^{-4}."
    ),
    "percent": (
        "deliberate: p% against a plain number matches p or p/100 for us; math-verify does so only for some "
        "forms (not for a negative p: -5\\% is parsed as -1*5*(1/100))."
    ),
    "empty_interval": (
        "math-verify does not keep an interval that is empty or reversed: (a, a] or [b, a) with b > a "
        "becomes the empty set (so any two such are equal) and [b, a] or (b, a) a tuple whose brackets "
        "are then ignored; we compare the brackets and the two ends as written."
    ),
    "closed_infinite_end": (
        "math-verify reads a closed bracket at infinity as open ((a, \\infty] = (a, \\infty): sympy "
        "intervals never contain infinity); we compare the brackets as written."
    ),
    "binary_float_mantissa": (
        "math-verify stores a decimal as a binary float (9.7 is 9.69999999999999929), so 9.7\\times10^{2} "
        "misses 970 at its 15-digit comparison; we read decimals exactly."
    ),
    "long_tuple_brackets": (
        "math-verify reads (a, b, c) and [a, b, c] as the same tuple; brackets matter to us for sequences of "
        "any length."
    ),
}

_LOWER_E = re.compile(r"(?<![a-zA-Z\\])\d*\.?\d+e[+-]?\d")
_UNBRACED_NEG = re.compile(r"\^\s*-\s*\d")
_FLOAT = re.compile(r"\d\.\d|\d[eE][+-]?\d")
_SEQ = re.compile(r"^\s*([(\[])(.*)([)\]])\s*$", re.DOTALL)


def _parsed(text: str) -> Any:
    """math-verify's parse of one answer (the first, sympy, element) or None."""
    from math_verify import parse

    out = parse(f"${text}$")
    return out[0] if out and not isinstance(out[0], str) else None


def _values(expr: Any) -> list[complex] | None:
    """Numeric values of a parsed answer, flattened (sets sorted), or None if it has none."""
    import sympy

    try:
        if isinstance(expr, sympy.MatrixBase):
            items = list(expr)
        elif isinstance(expr, sympy.FiniteSet):
            items = sorted(expr.args, key=lambda x: complex(sympy.N(x)).real)
        elif isinstance(expr, sympy.Tuple | tuple):
            items = list(expr)
        elif isinstance(expr, sympy.Interval):
            items = [expr.start, expr.end]
        else:
            items = [expr]
        values = [complex(sympy.N(x, 30)) for x in items]
    except (TypeError, ValueError, AttributeError):
        return None
    return values


def _close(pred: str, gold: str, tol: float = 1e-6) -> bool:
    """Both answers parse (by math-verify) to numbers within ``tol`` (absolute, or relative when larger):
    1e-6 is math-verify's 6-decimal rounding, 1e-12 only binary floating-point error."""
    a, b = _values(_parsed(pred)), _values(_parsed(gold))
    if a is None or b is None or len(a) != len(b):
        return False
    return all(abs(x - y) <= tol * max(1.0, abs(x), abs(y)) for x, y in zip(a, b))


_PLAIN = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*")
_TIMES_TEN = re.compile(
    r"\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*(?:\\times|\\cdot|\*)\s*10\s*\^\s*\{?([+-]?\d+)\}?\s*"
)


def _exact(text: str) -> Any:
    """The exact value of an answer: decimals and scientific notation read as rationals here, anything
    else as math-verify parses it provided that holds no float; None otherwise."""
    import sympy

    m, t = _PLAIN.fullmatch(text), _TIMES_TEN.fullmatch(text)
    if m or t:
        value = Fraction(m[1]) if m else Fraction(t[1]) * Fraction(10) ** int(t[2])  # type: ignore[index]
        return sympy.Rational(value.numerator, value.denominator)
    expr = _parsed(text)
    return expr if isinstance(expr, sympy.Expr) and not expr.atoms(sympy.Float) else None


def _exactly_equal(pred: str, gold: str) -> bool | None:
    """Whether two scalar answers are exactly equal (None when that cannot be settled here)."""
    import sympy

    a, b = _exact(pred), _exact(gold)
    if a is None or b is None:
        return None
    try:
        if sympy.simplify(a - b) == 0:
            return True
        return False if (a - b).is_zero is False else None
    except (TypeError, ValueError):
        return None


def _sequence(text: str) -> tuple[str, str, int] | None:
    """(opening, closing, item count) of a bracketed comma list, or None."""
    m = _SEQ.match(text)
    return (m[1], m[3], m[2].count(",") + 1) if m and "," in m[2] else None


def _ends(text: str) -> tuple[float, float] | None:
    """The numeric ends of a two-element bracketed pair, or None."""
    seq = _sequence(text)
    ends = text.strip()[1:-1].split(",") if seq and seq[2] == 2 else []
    values = [_values(_parsed(end)) for end in ends]
    if len(values) != 2 or any(v is None or len(v) != 1 or v[0].imag for v in values):
        return None
    return values[0][0].real, values[1][0].real  # type: ignore[index]


def _empty_interval(text: str) -> bool:
    """A bracketed pair that, read as an interval, is empty: left end above the right, or equal ends with
    an open bracket."""
    ends, t = _ends(text), text.strip()
    return ends is not None and (ends[0] > ends[1] or (ends[0] == ends[1] and t[0] + t[-1] != "[]"))


def _infinite_end_only(pred: str, gold: str) -> bool:
    """Two pairs with the same inside whose brackets differ only next to an infinite end."""
    p, g = pred.strip(), gold.strip()
    if _compact(p[1:-1]) != _compact(g[1:-1]) or _sequence(p) is None or _sequence(g) is None:
        return False
    left, right = _compact(p[1:-1]).split(",", 1)[0], _compact(p[1:-1]).rsplit(",", 1)[-1]
    return (p[0] == g[0] or left == "-\\infty") and (p[-1] == g[-1] or right == "\\infty")


def _compact(text: str) -> str:
    return "".join(text.split())


def classify(pred: str, gold: str, ours: bool, theirs: bool) -> str | None:
    """The ACCEPTED class that explains this disagreement, or None (an unexplained disagreement)."""
    if ours == theirs:
        return None
    both = pred + " " + gold
    if ours and _LOWER_E.search(both):
        return "lowercase_e_notation"
    if _UNBRACED_NEG.search(both):
        return "unbraced_negative_exponent"
    if ours and (pred.rstrip().endswith("%") != gold.rstrip().endswith("%")):
        return "percent"
    exact = _exactly_equal(pred, gold) if _FLOAT.search(both) else None
    if theirs and exact is False and _close(pred, gold):
        return "float_rounding"  # the values really differ, by less than math-verify's rounding
    if ours and exact is True:
        return "binary_float_mantissa"
    if theirs and _empty_interval(pred) and _empty_interval(gold):
        return "empty_interval"
    if theirs and _infinite_end_only(pred, gold):
        return "closed_infinite_end"
    sp, sg = _sequence(pred), _sequence(gold)
    if (
        theirs
        and sp
        and sg
        and sp[2] == sg[2] >= 3
        and _close(pred, gold)
        and {sp[0] + sp[1], sg[0] + sg[1]} == {"()", "[]"}
    ):
        return "long_tuple_brackets"
    return None
