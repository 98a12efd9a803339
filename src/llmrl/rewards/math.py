r"""Math answer checking (Big-Math style, arXiv:2502.17387): extract the final answer, test equivalence.

Extraction (:func:`extract_answer`), first that applies: the last ``\boxed{...}``/``\fbox{...}`` whose braces
balance (escaped ``\{ \}`` ignored; ``\boxed 5`` works too), else the last non-empty ``<answer>...</answer>``,
else the last number (``-1,234.5``, ``3/4``, ``50%``, ``1.5e-5`` count as one). Linear time: megabyte texts
are fine.

Equivalence (:func:`math_equal`), after normalising LaTeX (``$``, ``\left``/``\right``, spacing, ``\text{}``
and similar wrappers, a leading ``\boxed{...}`` or ``\boxed X``, ``\dfrac``/``\tfrac``, degrees, units like
``cm``/``\text{ dollars}``, ``1,000``; a row break ``\\`` is kept, never read as spacing):

* equal normalised strings (words such as ``Monday`` case-insensitively);
* multiple choice: a gold capital letter (``B``/``(B)``) matches predictions starting with it (``(B) 42``);
* numbers are EXACT rationals (:func:`~llmrl.rewards.math_parse.exact_number`): integers, decimals,
  fractions, mixed numbers (``3\frac12`` = 3.5) and scientific notation, so ``0.50`` = ``1/2`` = ``.5`` =
  ``\frac12`` and ``1E-5`` = ``1e-5`` = ``1\times10^{-5}`` = ``1 \cdot 10^{-5}`` = ``0.00001`` (exponents up
  to ``MAX_EXPONENT``), but
  ``1000001`` != ``1000000``, ``2.000001`` != ``2`` and ``0.3333333`` != ``1/3``. A number, ``e`` or ``E`` and
  an integer (``2e3``, ``1e-5``, nothing else in the answer) is always scientific notation, never Euler's e;
* percent, a deliberate leniency: ``p%`` (``\%``, ``percent``) against a plain number matches ``p`` or
  ``p/100`` (``50%`` = ``50`` = ``0.5``; each compared exactly), since "what percent" golds are written
  both ways; ``p%`` against ``q%`` compares ``p`` and ``q``;
* symbolic (sympy, exact): two constants are equal only when their difference is PROVEN zero (exact
  equality, sympy's assumptions, or ``simplify(a - b) == 0``): ``2\sqrt{2}`` = ``\sqrt{8}``,
  ``\frac{\sqrt{3}}{2}`` = ``\sin(\pi/3)``. A 50-digit evaluation only rejects values that clearly differ,
  so a rational never equals an irrational constant, however many digits it has (``3.14159`` != ``\pi``,
  ``1.41421356`` != ``\sqrt2``). With variables the two sides must agree at sample points (the same
  filter) and have ``simplify(a - b) == 0`` (``x^2+2x+1`` = ``(x+1)^2``). ``e``, ``i``: constants;
* structures: intervals ``(a, b]`` and tuples ``(a, b)`` compare element-wise with identical brackets
  (``(1,2)`` is not ``[1,2]``); sets ``\{1,2\}``/``{1,2}``, bare lists ``1, 2`` and the parts of
  ``A \cup B`` compare as SETS: order is ignored and duplicates collapse (``\{1,1,2\}`` = ``\{2,1\}``; a
  set whose elements all equal ``x`` equals ``x``); ``a \pm b`` is ``a+b, a-b``; ``x = 5`` equals ``5``;
  two equations compare side by side;
* matrices: ``pmatrix``, ``bmatrix``, ``Bmatrix``, ``matrix``, ``smallmatrix`` and ``array`` environments
  are the same matrix (delimiters are presentation); two are equal iff they have the same shape and equal
  entries (rows split on ``\\``, columns on ``&``). A matrix never equals a scalar, tuple or set (the column
  vector ``\begin{pmatrix}1\\2\end{pmatrix}`` is not ``(1, 2)``). ``vmatrix`` is a determinant, NOT a
  matrix: it is evaluated (exactly for number entries up to ``MAX_DET_SIZE`` rows, by cofactor expansion
  up to 4x4 otherwise) and compared as a scalar, so ``\begin{vmatrix}1&2\\3&4\end{vmatrix}`` = ``-2`` and
  never equals ``\begin{pmatrix}1&2\\3&4\end{pmatrix}``. ``Vmatrix`` (a norm) matches identical text only.

Tolerance, opt-in only: ``math_equal(pred, gold, rel_tol=r)`` (``r`` an int, float or Fraction >= 0, a
float read as the decimal it prints, so ``1e-6`` is exactly 1/10**6; None, the default, is exact) also
accepts numbers with ``|a-b| <= r * max(|a|, |b|)`` (each percent reading too), and constants whose
50-digit values satisfy the same (or differ by at most 1e-30); with variables ``simplify`` still decides.
An invalid ``rel_tol`` makes every comparison False (:func:`as_rel_tol` validates one and raises instead).

Safety and time bound: nothing reaches ``eval``/``sympify``; the parser in
:mod:`~llmrl.rewards.math_parse` builds sympy objects itself, refusing exponents over ``MAX_EXPONENT``
(1000), numbers over ``MAX_BITS`` bits and nesting beyond ``MAX_DEPTH``, so no uninterruptible big-integer
operation runs long. Answers over ``MAX_ANSWER_CHARS`` (2000) never match. One call gets
``SYMPY_TIMEOUT_S`` (1 s), enforced by ``SIGALRM`` in the main thread; elsewhere the symbolic stage is
skipped (exact numbers, structures and matrices still work) and a clock check bounds the rest. So
``math_equal`` returns within ``TIME_BOUND_S`` = 1.5 s on any input, ``math_reward`` within that plus a
linear scan (~0.2 s per MB), after the one-time sympy import and warm-up (~0.5 s). Neither raises: any
error means "not equal".
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from llmrl.rewards.logic import extract_last_answer
from llmrl.rewards.math_parse import MAX_BITS, MAX_DEPTH, MAX_EXPONENT, exact_number, load_sympy, parse_sympy

__all__ = ["ABS_TOL_SYMBOLIC", "FILTER_REL", "MAX_ANSWER_CHARS", "MAX_BITS", "MAX_DEPTH", "MAX_DET_SIZE",
           "MAX_EXPONENT", "MAX_ITEMS", "SYMPY_TIMEOUT_S", "TIME_BOUND_S", "as_rel_tol", "extract_answer",
           "extract_boxed", "load_sympy", "math_equal", "math_reward"]

ABS_TOL_SYMBOLIC = 1e-30  # with rel_tol only: constants this close are equal too
FILTER_REL = Fraction(1, 10**25)  # exact mode: constants further apart than this (relative) clearly differ
MAX_ANSWER_CHARS = 2000
MAX_ITEMS = 64
MAX_DET_SIZE = 8
SYMPY_TIMEOUT_S = 1.0
TIME_BOUND_S = 1.5

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BRACE_RE = re.compile(r"\\[{}]|[{}]")
_BARE_RE = re.compile(r"[^\s$]+")
_SPACES = re.compile(" *")
_NUM_RE = re.compile(r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
                     r"(?:[eE][+-]?\d+(?![\d.])|/\d+)?%?")


def extract_boxed(text: str) -> str | None:
    r"""Stripped content of the last ``\boxed{...}``/``\fbox{...}`` with balanced braces (or ``\boxed X``)."""
    starts = [m.end() for m in _BOX_RE.finditer(text)] if isinstance(text, str) else []
    closing, stack = dict[int, int](), list[int]()  # brace matching in one linear pass
    for m in _BRACE_RE.finditer(text, starts[0]) if starts else ():
        if m.group() == "{":
            stack.append(m.start())
        elif m.group() == "}" and stack:
            closing[stack.pop()] = m.start()
    for s in reversed(starts):
        j = _SPACES.match(text, s).end()  # type: ignore[union-attr]
        if text[j : j + 1] == "{" and text[j + 1 : closing.get(j, j + 1)].strip():
            return text[j + 1 : closing[j]].strip()
        bare = _BARE_RE.match(text, j) if s < j and text[j : j + 1] != "{" else None
        if bare:
            return bare.group()
    return None


def extract_answer(completion: str) -> str | None:
    r"""Final answer of a completion: last balanced ``\boxed{}``, else last ``<answer>``, else last number."""
    if not isinstance(completion, str):
        return None
    found = extract_boxed(completion) or extract_last_answer(completion)
    digit = max(completion.rfind(c) for c in "0123456789")
    if found or digit < 0:
        return found or None
    # The last match holds the last digit; a window before it suffices (longer numbers never match).
    matches = list(_NUM_RE.finditer(completion, max(0, digit - 2 * MAX_ANSWER_CHARS)))
    return matches[-1].group() if matches else None


def math_reward(completion: str, gold: str, *, rel_tol: float | Fraction | None = None) -> float:
    """1.0 if the answer extracted from ``completion`` equals ``gold`` (see :func:`math_equal`), else 0.0."""
    answer = extract_answer(completion)  # neither function raises
    return 1.0 if answer is not None and math_equal(answer, gold, rel_tol=rel_tol) else 0.0


def as_rel_tol(rel_tol: float | Fraction | None) -> Fraction | None:
    """``rel_tol`` as an exact Fraction (None stays None: exact comparison); ValueError unless it is None or
    a finite number >= 0."""
    if rel_tol is None:
        return None
    if isinstance(rel_tol, bool) or not isinstance(rel_tol, int | float | Fraction):
        raise ValueError(f"rel_tol must be None or a number >= 0, got {rel_tol!r}")
    if isinstance(rel_tol, float) and not math.isfinite(rel_tol) or rel_tol < 0:
        raise ValueError(f"rel_tol must be None or a finite number >= 0, got {rel_tol!r}")
    return Fraction(repr(rel_tol)) if isinstance(rel_tol, float) else Fraction(rel_tol)  # 1e-6 is 1/10**6


class _Timeout(BaseException):
    """The symbolic stage ran out of time (a BaseException, so that ``except Exception`` won't eat it)."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _Timeout after ``seconds`` (then every 50 ms, in case it is swallowed); main thread only."""
    armed = [True]

    def handler(signum: int, frame: Any) -> None:
        if armed[0]:
            raise _Timeout()

    start, old = time.monotonic(), signal.signal(signal.SIGALRM, handler)
    previous, interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if previous > 0:
            signal.setitimer(signal.ITIMER_REAL, max(previous - (time.monotonic() - start), 1e-3), interval)


_ROW = "\ue000"  # a matrix row break ``\\``, kept apart from spacing commands such as ``\ `` and ``\,``
_LITERAL = [
    ("\\\\", f" {_ROW} "), ("\u2212", "-"), ("\u2013", "-"), ("\u00d7", r" \times "), ("\u22c5", r" \cdot "),
    ("\u00b7", r" \cdot "), ("\u00f7", r" \div "), ("\u03c0", r" \pi "), ("\u221e", r"\infty "),
    ("\u221a", r"\sqrt"), ("\u00b0", r"^\circ"), ("\u222a", r" \cup "), ("\u00a0", " "), ("\u00b2", "^2"),
    ("\u00b3", "^3"), (r"\%", "%"), (r"\$", " "), ("$", " "), ("{,}", ""), (r"\(", " "), (r"\)", " "),
    (r"\[", " "), (r"\]", " "), (r"\dfrac", r"\frac"), (r"\tfrac", r"\frac"), (r"\cfrac", r"\frac"),
    (r"\dbinom", r"\binom"), (r"\tbinom", r"\binom"), (r"\displaystyle", " "), (r"\langle", "("),
    (r"\rangle", ")"), (r"\lvert", "|"), (r"\rvert", "|"), (r"\vert", "|"), (r"\lbrace", r"\{"),
    (r"\rbrace", r"\}"), (r"\!", ""),
]
_SUBS = [
    (re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|bigg|Bigg)(?![a-zA-Z])"), ""),
    (re.compile(r"\\[,;: ]|\\q?quad(?![a-zA-Z])|~"), " "),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])"), " "),
    (re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|textup|textsf|mathrm|mathbf|mathit|mathsf|mbox|"
                r"operatorname)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\s+(?:or|and)\s+"), ","),
    (re.compile(r"\s*\bper\s*cent\b"), "%"),
    (re.compile(r"\binfinity\b|\binf\b|\\infin(?![a-zA-Z])"), r"\\infty "),
]
_UNITS = (r"cm|mm|km|kg|mg|ml|mL|sec|secs|seconds?|mins?|minutes?|hrs?|hours?|days?|weeks?|months?|years?|"
          r"ft|feet|foot|inch|inches|yds?|yards?|miles?|meters?|metres?|centimeters?|kilometers?|grams?|"
          r"kilograms?|pounds?|lbs?|oz|ounces?|dollars?|cents?|euros?|degrees?|deg|radians?|units?|sq|square|"
          r"cubic|mph|kph|km/h|m/s|people|persons?|students?|times")
_UNIT_TAIL = re.compile(rf"(?:(?<=[\d}}).])\s*(?:{_UNITS})|\s+(?:m|s|h|g|L|in|mi))(?:\s*\^\s*\{{?[23]\}}?)?\.?\s*$")
_WORD_TAIL = re.compile(r"(?<=[\d}).])\s+(?!(?:pi|sqrt|infty|sin|cos|tan|log|ln|exp)\b)[a-zA-Z]{2,}"
                        r"(?:\s+[a-zA-Z]+)*\.?\s*$")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?")
_LHS_IN = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)\s*\\in\s+|^\\approx\s*|^=\s*")


def _levels(s: str) -> list[int]:  # bracket depth after each character (\{ \} count as braces)
    return list(itertools.accumulate((c in "([{") - (c in ")]}") for c in s))


def _wrapped(s: str) -> bool:
    """True if the bracket opening ``s`` closes at its last character (``(1, 2)`` but not ``(1)+(2)``)."""
    t = s[1:] if s.startswith("\\{") else s
    levels = _levels(t)
    return t[:1] in ("(", "[", "{") and levels[-1] == 0 and min(levels[:-1], default=1) > 0


def _split_top(s: str, sep: str) -> list[str]:
    """Split ``s`` on ``sep`` outside brackets (``=`` is not split inside ``<=``, ``>=``, ``==``, ``!=``)."""
    levels, parts, start, k = _levels(s), [], 0, s.find(sep)
    while k >= 0:
        top = k == 0 or levels[k - 1] == 0
        if top and (sep != "=" or (s[k - 1 : k] not in ("<", ">", "=", "!") and s[k + 1 : k + 2] != "=")):
            parts.append(s[start:k])
            start = k + len(sep)
        k = s.find(sep, k + len(sep))
    return [p.strip() for p in [*parts, s[start:]]]


def _clean(s: str) -> str:
    """Normalised answer text (whitespace collapsed, wrappers/units/delimiters removed)."""
    for old, new in _LITERAL:
        s = s.replace(old, new)
    for _ in range(3):
        for pattern, repl in _SUBS:
            s = pattern.sub(repl, s)
        s = " ".join(s.split())
        box = _BOX_RE.match(s)
        rest = s[box.end() :].strip() if box else ""
        if rest and (_wrapped(rest) or not rest.startswith("{")):  # \boxed{7} and \boxed 7
            s = rest
        if s.startswith("{") and _wrapped(s):
            s = s[1:-1].strip()
        s = _LHS_IN.sub("", s).rstrip(". ")
        for _unit in range(4):
            s = _WORD_TAIL.sub("", _UNIT_TAIL.sub("", s)).strip()
        if _THOUSANDS.fullmatch(s):
            s = s.replace(",", "")
    return s


_compact = functools.partial(re.compile(r"\s+").sub, "")  # text without any whitespace


_MC_GOLD = re.compile(r"\(([A-Z])\)|([A-Z])")
_MC_PRED = re.compile(r"\(?([A-Z])\)?(?=$|[\s.:,)])")
_WORDS = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")
_MATRIX = re.compile(r"\\begin\s*\{\s*(p|b|B|v|V|small|)matrix\s*\}(.*)\\end\s*\{\s*\1matrix\s*\}"
                     r"|\\begin\s*\{\s*array\s*\}\s*\{[^{}]*\}(.*)\\end\s*\{\s*array\s*\}", re.DOTALL)
_HLINE = re.compile(r"\\hline(?![a-zA-Z])")
_DEADLINE = threading.local()
_POINTS = ((0.3183, 0.5772, 0.7071, 0.2718, 0.4142), (0.6931, 0.1234, 0.8862, 0.5403, 0.3679))


@dataclass(frozen=True)
class _Mode:
    """How one call compares: ``symbolic`` (sympy allowed: main thread) and ``tol`` (None: exact)."""

    symbolic: bool
    tol: Fraction | None


def _within(x: Fraction, y: Fraction, tol: Fraction | None) -> bool:
    return x == y or (tol is not None and abs(x - y) <= tol * max(abs(x), abs(y)))


def _numbers_close(sp: Any, a: Any, b: Any, rel: Fraction) -> bool | None:
    """Whether constant expressions agree within ``rel`` at 50 digits (None if one is not a number)."""
    va, vb = sp.N(a, 50), sp.N(b, 50)
    if not (va.is_number and vb.is_number) or va.has(sp.nan, sp.zoo) or vb.has(sp.nan, sp.zoo):
        return None
    diff = abs(sp.N(a - b, 50))
    return bool(diff <= sp.Rational(rel.numerator, rel.denominator) * max(abs(va), abs(vb))
                or diff <= ABS_TOL_SYMBOLIC)


def _proved_zero(sp: Any, d: Any) -> bool:
    """True only if the exact expression ``d`` is shown to be 0 (assumptions or ``simplify``)."""
    if d == 0:
        return True
    known = d.is_zero
    return bool(known) if known is not None else bool(sp.simplify(d) == 0)


def _sym_equal(a: Any, b: Any, tol: Fraction | None) -> bool:
    """Exact sympy values: equal iff ``a - b`` is proven 0 (numeric checks only reject), or within tol."""
    sp = load_sympy()
    if a == b:
        return True
    if any(x.has(sp.oo, -sp.oo, sp.zoo, sp.nan) for x in (a, b)):
        return False
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        close = _numbers_close(sp, a, b, FILTER_REL if tol is None else tol)
        if close is False or (close and tol is not None):
            return bool(close)
        return _proved_zero(sp, a - b)
    for point in _POINTS:
        values = {x: sp.Rational(str(point[k % len(point)] + k // len(point))) for k, x in enumerate(symbols)}
        if _numbers_close(sp, a.subs(values), b.subs(values), FILTER_REL if tol is None else tol) is False:
            return False
    return bool(sp.simplify(a - b) == 0)


def _scalar_equal(a: str, b: str, mode: _Mode) -> bool:
    pa, pb = a.endswith("%"), b.endswith("%")
    a, b = a.rstrip("%").strip(), b.rstrip("%").strip()
    # p% against a plain number stands for p or p/100 (deliberate, see the module docstring)
    ua, ub = [(1, Fraction(1, 100)) if p and not q else (1,) for p, q in ((pa, pb), (pb, pa))]
    if not a or not b:
        return False
    if (pa == pb and _compact(a) == _compact(b)) or (_WORDS.fullmatch(a) and a.lower() == b.lower()):
        return True
    fa, fb = exact_number(a), exact_number(b)
    if fa is not None and fb is not None:
        return any(_within(fa * u, fb * v, mode.tol) for u in ua for v in ub)
    if not mode.symbolic:
        return False
    sp = load_sympy()  # an exact number keeps its meaning (1e-5 is never Euler's e minus 5)
    ea, eb = (parse_sympy(x) if f is None else sp.Rational(f.numerator, f.denominator)
              for x, f in ((a, fa), (b, fb)))
    if ea is None or eb is None:
        return False
    return any(_sym_equal(ea * u, eb * v, mode.tol) for u in ua for v in ub)


def _structure(s: str) -> tuple[str, str, list[str]] | None:
    """``(kind, brackets, items)`` for a set, bracketed sequence or bare list; None for a scalar."""
    if s.startswith("\\{") and s.endswith("\\}") and _wrapped(s):
        return "set", "{}", _split_top(s[2:-2], ",")
    if _wrapped(s):
        items = _split_top(s[1:-1], ",")
        return (("set" if s[0] == "{" else "seq"), s[0] + s[-1], items) if len(items) >= 2 else None
    if s.count(r"\pm") == 1:
        return "list", "", [s.replace(r"\pm", "+"), s.replace(r"\pm", "-")]
    items = _split_top(s, ",")
    return ("list", "", items) if len(items) >= 2 else None


def _same_set(xs: list[str], ys: list[str], mode: _Mode, depth: int) -> bool:
    """Set equality: every x equals some y and every y is equalled by some x (duplicates collapse)."""
    if not xs or not ys or max(len(xs), len(ys)) > MAX_ITEMS:
        return False
    hit = [False] * len(ys)
    for x in xs:  # a match for each x, trying the ys not matched yet first
        order = sorted(range(len(ys)), key=hit.__getitem__)
        k = next((k for k in order if _equal(x, ys[k], mode, depth + 1)), None)
        if k is None:
            return False
        hit[k] = True
    return all(hit[k] or any(_equal(x, y, mode, depth + 1) for x in xs) for k, y in enumerate(ys))


def _determinant(rows: list[list[str]]) -> str | None:
    """A determinant as text: its exact value for number entries, else the cofactor expansion (<= 4x4)."""
    n = len(rows)
    numbers = [[exact_number(_clean(x)) for x in row] for row in rows]
    if all(x is not None for row in numbers for x in row) and n <= MAX_DET_SIZE:
        m, det = [list(row) for row in numbers], Fraction(1)
        for c in range(n):  # Gaussian elimination over the rationals
            p = next((r for r in range(c, n) if m[r][c] != 0), None)
            if p is None:
                return "0"
            if p != c:
                m[c], m[p], det = m[p], m[c], -det
            det *= m[c][c]  # type: ignore[operator]
            for r in range(c + 1, n):
                f = m[r][c] / m[c][c]  # type: ignore[operator]
                m[r][c:] = [x - f * y for x, y in zip(m[r][c:], m[c][c:])]  # type: ignore[operator]
        return str(det)
    if n > 4:
        return None
    terms = []
    for perm in itertools.permutations(range(n)):
        odd = sum(perm[i] > perm[j] for i in range(n) for j in range(i + 1, n)) % 2
        terms.append(("-" if odd else "+") + "".join(f"({rows[i][perm[i]]})" for i in range(n)))
    return "(" + "".join(terms) + ")"


def _matrix(s: str) -> list[list[str]] | str | None:
    """A matrix environment's entries (rows of equal length), a determinant's value as text (``vmatrix``),
    ``[]`` for one that never equals anything but itself, or None when ``s`` is not a matrix."""
    if s[:1] in "([" and _wrapped(s) and _MATRIX.fullmatch(s[1:-1].strip()):
        s = s[1:-1].strip()  # \left( \begin{array}{cc} ... \end{array} \right)
    m = _MATRIX.fullmatch(s)
    if m is None:
        return None
    body = _HLINE.sub(" ", m[2] if m[3] is None else m[3])
    if "\\begin" in body or "\\end" in body or m[1] == "V":
        return []
    rows = [[x.strip() for x in _split_top(row, "&")] for row in _split_top(body, _ROW)]
    if rows and rows[-1] == [""] and len(rows) > 1:
        rows.pop()  # a trailing row break
    if len({len(row) for row in rows}) != 1 or any(not x for row in rows for x in row):
        return []
    if m[1] == "v":
        det = _determinant(rows) if len(rows) == len(rows[0]) else None
        return [] if det is None else det
    return rows


def _equal(a: str, b: str, mode: _Mode, depth: int = 0) -> bool:
    """Equivalence of prediction ``a`` and gold ``b`` (see the module docstring)."""
    if time.monotonic() > _DEADLINE.at:  # the alarm's stand-in outside the main thread
        raise _Timeout()
    a, b = _clean(a), _clean(b)
    if not a or not b or depth > 6:
        return False
    if _compact(a) == _compact(b):
        return True
    gold_letter = _MC_GOLD.fullmatch(b)
    if gold_letter:
        pred_letter = _MC_PRED.match(a)
        return pred_letter is not None and pred_letter[1] == (gold_letter[1] or gold_letter[2])
    ma, mb = _matrix(a), _matrix(b)
    if isinstance(ma, str) or isinstance(mb, str):  # a determinant: compare its value
        return _equal(ma if isinstance(ma, str) else a, mb if isinstance(mb, str) else b, mode, depth + 1)
    if ma is not None or mb is not None:  # a matrix equals only a matrix of the same shape and entries
        if not (ma and mb and len(ma) == len(mb) and len(ma[0]) == len(mb[0]) <= MAX_ITEMS // len(ma)):
            return False
        return all(_equal(x, y, mode, depth + 1) for p, q in zip(ma, mb) for x, y in zip(p, q))
    ua, ub = _split_top(a, r"\cup"), _split_top(b, r"\cup")
    if len(ua) > 1 or len(ub) > 1:
        return _same_set(ua, ub, mode, depth)
    sa, sb = _structure(a), _structure(b)
    ea, eb = _split_top(a, "="), _split_top(b, "=")
    if (sa is None or sb is None) and (len(ea) > 1 or len(eb) > 1):
        if len(eb) == 1 or len(ea) == 1:  # "x = 5" against "5": compare the right-hand sides
            return _equal(ea[-1], eb[-1], mode, depth + 1)
        return len(ea) == len(eb) and all(_equal(x, y, mode, depth + 1) for x, y in zip(ea, eb))
    if sa is None or sb is None:  # a scalar, or a set/list against a scalar
        one = sa or sb
        if one is None:
            return _scalar_equal(a, b, mode)
        if one[0] == "seq":
            return False
        return _same_set(one[2], [b], mode, depth) if sa else _same_set([a], one[2], mode, depth)
    if sa[0] == "seq" or sb[0] == "seq":
        return sa[:2] == sb[:2] and len(sa[2]) == len(sb[2]) and all(
            _equal(x, y, mode, depth + 1) for x, y in zip(sa[2], sb[2]))
    return _same_set(sa[2], sb[2], mode, depth)


def math_equal(prediction: str, gold: str, *, rel_tol: float | Fraction | None = None) -> bool:
    """True iff the answer ``prediction`` is mathematically equivalent to ``gold`` (module docstring):
    exactly by default, or within the relative tolerance ``rel_tol`` when one is given.

    Never raises (an invalid ``rel_tol`` gives False); returns within ``TIME_BOUND_S`` (after the one-time
    sympy import)."""
    try:
        mode = _Mode(False, as_rel_tol(rel_tol))
        if not (isinstance(prediction, str) and isinstance(gold, str)) or max(
                len(prediction), len(gold)) > MAX_ANSWER_CHARS:
            return False
        symbolic = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        if symbolic:
            load_sympy()  # the one-time import and warm-up happen before the clock starts
            mode = _Mode(True, mode.tol)
        _DEADLINE.at = time.monotonic() + SYMPY_TIMEOUT_S
        with _time_limit(SYMPY_TIMEOUT_S) if symbolic else nullcontext():
            return _equal(prediction, gold, mode)
    except (Exception, _Timeout):
        return False


_sympy = load_sympy  # the old private name (tests warm sympy up through it)
