r"""Exact parsing for :mod:`llmrl.rewards.math`: numbers to Fractions, answer maths to sympy objects.

:func:`exact_number` reads integers, decimals, integer fractions (``3/4``, ``\frac{3}{4}``, ``\frac34``),
mixed numbers (``3\frac12``) and scientific notation (``1E-5``, ``2.5e3``, ``1\times10^{-5}``,
``1 \cdot 10^{-5}``, ``10^{-5}``; exponents up to ``MAX_EXPONENT`` in size) as exact rationals; anything
else gives None. :func:`parse_sympy` is a small recursive-descent parser that builds sympy objects itself
(nothing reaches ``eval``/``sympify``), refusing exponents over ``MAX_EXPONENT``, numbers over ``MAX_BITS``
bits and nesting beyond ``MAX_DEPTH``, so that no uninterruptible big-integer operation runs long.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction
from typing import Any

MAX_EXPONENT = 1000
MAX_BITS = 200_000
MAX_DEPTH = 60


@functools.cache
def load_sympy() -> Any:
    """The sympy module, imported and warmed up on first use: never under an alarm, since an interrupted
    import would leave half-initialised modules behind."""
    import sympy

    sympy.simplify(sympy.sqrt(8) * sympy.Symbol("x") ** 2 - sympy.N(sympy.pi, 50) + sympy.factorial(3))
    return sympy


# -- exact numbers --------------------------------------------------------------------------------------
_MANTISSA = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_DECIMAL = re.compile(_MANTISSA)
_SCI_E = re.compile(rf"({_MANTISSA})[eE]([+-]?\d+)")
_SCI_TEN = re.compile(rf"(?:({_MANTISSA})\s*(?:\\times|\\cdot|\*)\s*)?([+-]?)\s*10\s*\^\s*"
                      r"(?:\{\s*([+-]?\d+)\s*\}|([+-]?\d+))")
_FRACTION = re.compile(r"(-?)\s*(\d+(?=\s*\\frac))?\s*(?:\\frac\s*(?:\{\s*([+-]?\d+)\s*\}\s*\{\s*([+-]?\d+)\s*\}"
                       r"|(\d)\s*(\d))|([+-]?\d+)\s*/\s*([+-]?\d+))")


def _scaled(mantissa: str | None, exponent: str) -> Fraction | None:
    """``mantissa * 10**exponent`` exactly, or None when the exponent exceeds MAX_EXPONENT in size."""
    power = int(exponent)
    if abs(power) > MAX_EXPONENT:
        return None
    return Fraction(mantissa or 1) * Fraction(10) ** power


def exact_number(s: str) -> Fraction | None:
    """Exact value of a plain number (see the module docstring), or None for anything else."""
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    m = _SCI_E.fullmatch(s)
    if m:
        return _scaled(m[1], m[2])
    m = _SCI_TEN.fullmatch(s)
    if m:
        value = _scaled(m[1], m[3] or m[4])
        return None if value is None else -value if m[2] == "-" else value
    m = _FRACTION.fullmatch(s)
    den = int(m[4] or m[6] or m[8]) if m else 0
    if not m or not den or (m[2] and min(int(m[3] or m[5]), den) < 0):
        return None
    return (-1 if m[1] else 1) * (int(m[2] or 0) + Fraction(int(m[3] or m[5] or m[7]), den))


# -- sympy expressions ----------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|\\([a-zA-Z]+)|(sqrt|pi|infty|ln|log|exp|sin|cos|tan)(?![a-zA-Z])"
                    r"|([a-zA-Z](?:_\{\w+\}|_\w)?)|(\*\*|[-+*/^()\[\]{}|!_]))")
_FUNCS = {"sin": "sin", "cos": "cos", "tan": "tan", "sec": "sec", "csc": "csc", "cot": "cot", "arcsin": "asin",
          "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "log": "log",
          "ln": "log", "exp": "exp"}
_GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
          "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "phi", "varphi", "chi", "psi", "omega")
_MULOPS = {("op", "*"), ("op", "/"), ("cmd", "times"), ("cmd", "cdot"), ("cmd", "div")}
_OPEN = {"(": ")", "[": "]", "{": "}", "|": "|"}


class _Parser:
    """Recursive-descent parser of LaTeX/plain answer maths to sympy; ValueError on anything it refuses."""

    def __init__(self, text: str) -> None:
        self.sp, self.toks, self.i, self.depth, pos, end = load_sympy(), [], 0, 0, 0, len(text.rstrip())
        while pos < end:
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ValueError(f"unexpected {text[pos:pos + 10]!r}")
            pos, value = m.end(), m.group(m.lastindex or 0)
            self.toks.append((("num", "cmd", "cmd", "let", "op")[(m.lastindex or 1) - 1], value.replace("**", "^")))

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self) -> tuple[str, str]:
        tok, self.i = self.peek(), self.i + 1
        return tok

    def accept(self, op: str, required: bool = False) -> bool:
        found = self.peek() == ("op", op)
        if required and not found:
            raise ValueError(f"expected {op!r}")
        self.i += found
        return found

    def expr(self) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ValueError("too deep")
        e = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            e = e + self.term() if self.take()[1] == "+" else e - self.term()
        self.depth -= 1
        return e

    def term(self) -> Any:
        e = self.unary()
        while True:
            tok = self.peek()
            if tok in _MULOPS:
                self.take()
                e = e / self.unary() if tok[1] in ("/", "div") else e * self.unary()
            elif tok[0] in ("let", "cmd") or tok in (("op", "("), ("op", "["), ("op", "{")):
                e = e * self.power()  # implicit multiplication (never before a bare number)
            else:
                return _check(e)

    def unary(self) -> Any:
        sign = 1
        while self.peek() in (("op", "-"), ("op", "+")):
            sign *= -1 if self.take()[1] == "-" else 1
        return sign * self.power()

    def power(self) -> Any:
        e = self.primary()
        while self.accept("!"):
            if e.is_number and not (e.is_Integer and 0 <= e <= MAX_EXPONENT):
                raise ValueError("factorial too large")
            e = self.sp.factorial(e)
        return _pow(e, self.arg() if self.peek() == ("op", "{") else self.unary()) if self.accept("^") else e

    def arg(self) -> Any:
        """A ``{...}`` group or a single character (``\\frac34``, ``\\sqrt2``)."""
        kind, text = self.peek()
        if kind == "num" and len(text) > 1 and text.isdigit():
            self.toks[self.i] = ("num", text[1:])
            return self.sp.Integer(int(text[0]))
        return self.primary()

    def primary(self) -> Any:
        sp, (kind, text) = self.sp, self.take()
        if kind == "num":
            return sp.Rational(Fraction(text).numerator, Fraction(text).denominator)
        if kind == "let" or (kind == "cmd" and text in _GREEK):  # x, x_1, x_{12}, \theta
            name = text.replace("{", "").replace("}", "")
            return {"e": sp.E, "i": sp.I}.get(name) or sp.Symbol(name)
        if kind == "op" and text in _OPEN:
            e = self.expr()
            self.accept(_OPEN[text], True)
            return sp.Abs(e) if text == "|" else e
        if kind == "cmd" and text == "frac":
            return _check(self.arg() / self.arg())
        if kind == "cmd" and text == "binom":
            n, k = self.arg(), self.arg()
            if n.is_number and abs(n) > 10 * MAX_EXPONENT:
                raise ValueError("binomial too large")
            return sp.binomial(n, k)
        if kind == "cmd" and text == "sqrt":
            index = self.expr() if self.accept("[") else None
            if index is not None:
                self.accept("]", True)
            return _pow(self.arg(), 1 / (sp.Integer(2) if index is None else index))
        if kind == "cmd" and text in ("pi", "infty"):
            return sp.pi if text == "pi" else sp.oo
        if kind == "cmd" and text in _FUNCS:
            base = self.arg() if text == "log" and self.accept("_") else None
            exponent = self.arg() if self.accept("^") else None
            x = self.arg() if self.peek() == ("op", "{") else self.power()
            e = sp.log(x, base) if base is not None else getattr(sp, _FUNCS[text])(x)
            return e if exponent is None else _pow(e, exponent)
        raise ValueError(f"unexpected {text!r}")


def _check(e: Any) -> Any:  # refuse oversized exact numbers
    if e.is_Rational and max(e.p.bit_length(), e.q.bit_length()) > MAX_BITS:
        raise ValueError("number too large")
    return e


def _pow(base: Any, exp: Any) -> Any:
    """``base ** exp``, refusing exponents over MAX_EXPONENT and numeric powers over MAX_BITS bits."""
    sp = load_sympy()
    if exp.is_number:
        size = abs(sp.N(exp, 15))
        if not size.is_finite or size > MAX_EXPONENT or (exp.is_Rational and exp.q > MAX_EXPONENT):
            raise ValueError("exponent too large")
        if base.is_number and base != 0:
            coeff = base.as_coeff_Mul()[0]
            bits = max(coeff.p.bit_length(), coeff.q.bit_length()) if coeff.is_Rational else 0
            if float(size) * (bits + abs(math.log2(float(abs(sp.N(base, 15)))))) > MAX_BITS:
                raise ValueError("power too large")
    return _check(sp.Pow(base, exp))


def parse_sympy(text: str) -> Any | None:
    """The exact sympy value of ``text``, or None if it does not parse (or is undefined, like 1/0)."""
    try:
        parser = _Parser(text)
        e = parser.expr()
        return None if parser.peek()[0] != "end" or e.has(parser.sp.zoo, parser.sp.nan) else e
    except (RecursionError, ValueError, TypeError, ZeroDivisionError, AttributeError, OverflowError):
        return None
