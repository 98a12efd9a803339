r"""How often ``math_equal`` disagrees with math-verify (the field's standard checker), and why.

``cases(n, seed)`` makes ``n`` fresh (prediction, gold) pairs from ``random.Random(seed)``: random golds
(integers small and huge, decimals, fractions, mixed numbers, scientific notation, negatives, roots, pi,
sets, tuples, intervals, matrices, percentages) each with a prediction that is either an equivalent
rewrite (spacing, ``\dfrac``, reordered or duplicated set elements, ``bmatrix`` for ``pmatrix``, ...) or a
mutation (off by one, an extra digit, a rounded decimal, a swapped tuple, ...), plus a fixed list of
adversarial pairs. ``disagreements(math_equal_fn, cases)`` runs both checkers on every pair and counts the
disagreements, each classified by the checked-in list of ACCEPTED classes
(``tests/data/math_verify_disagreements.py``) or reported as unexplained. ``math_equal_fn`` is any
``(prediction, gold) -> bool``, so old and new versions of the library can be compared on the same cases;
nothing from llmrl is imported here except inside :func:`main`.

math-verify is called as in its documentation, ``verify(parse(gold), parse(pred))`` with its defaults
(``float_rounding=6``, ``numeric_precision=15``, ``strict=True``, 5 s timeouts), each answer wrapped as
``$...$`` so that its LaTeX extractor sees a whole answer rather than picking a number out of it.

Run: ``python benchmarks/fidelity_math.py [--n 2000] [--seed 0] [--json]``: prints the counts and the
worst time of ``math_equal``/``math_reward`` on 1 MB adversarial inputs.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

from fidelity_common import BEFORE, module_at, use_source_tree

ROOT = Path(__file__).resolve().parents[1]
ACCEPTED_PATH = ROOT / "tests" / "data" / "math_verify_disagreements.py"


def load_accepted() -> ModuleType:
    """The checked-in accepted-disagreement list (``ACCEPTED`` and ``classify``), loaded by path."""
    name = "math_verify_disagreements"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ACCEPTED_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@functools.cache  # before and after are scored on the same cases
def math_verify_equal(prediction: str, gold: str) -> bool:
    """math-verify's verdict: ``verify(parse(gold), parse(prediction))`` with its defaults."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return bool(verify(parse(f"${gold}$"), parse(f"${prediction}$")))


# -- random cases -----------------------------------------------------------------------------------------
def _int(rng: random.Random) -> int:
    digits = rng.choice((1, 1, 2, 3, 4, 6, 7, 9, 12, 20, 30))
    return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits) * rng.choice((1, 1, 1, -1))


def _dec(q: Fraction, places: int) -> str:
    """``q`` rounded half-up to ``places`` decimals, as text."""
    scaled = abs(q) * 10**places
    n = int(scaled) + (scaled - int(scaled) >= Fraction(1, 2))
    text = str(n).rjust(places + 1, "0")
    body = text[:-places] + "." + text[-places:] if places else text
    return ("-" if q < 0 and n else "") + body


def _frac(q: Fraction, style: int = 0) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    sign, p = ("-" if q < 0 else ""), abs(q.numerator)
    return [
        f"{sign}\\frac{{{p}}}{{{q.denominator}}}",
        f"{sign}{p}/{q.denominator}",
        f"\\frac{{{q.numerator}}}{{{q.denominator}}}",
        f"{sign}\\dfrac{{{p}}}{{{q.denominator}}}",
    ][style % 4]


def _integer_case(rng: random.Random) -> tuple[str, str]:
    g = _int(rng)
    mutations = [
        str(g),
        str(g + 1),
        str(g - 1),
        str(-g),
        str(g) + rng.choice("0123456789"),
        f"{g:,}",
        f"{g}.0",
        f"{g}.00",
        f" {g} ",
        f"{g + rng.choice((1, -1)) * 10 ** rng.randrange(0, 8)}",
        str(g)[:-1] or "0",
        f"{g}\\%",
        f"\\boxed {g}",
        f"\\boxed{{{g}}}",
        f"{g}e0",
        f"{g}E1",
    ]
    return rng.choice(mutations), str(g)


def _decimal_case(rng: random.Random) -> tuple[str, str]:
    q = Fraction(rng.randrange(1, 10**6), rng.choice((2, 3, 4, 7, 8, 9, 11, 12, 16, 25, 1000))) * rng.choice(
        (1, -1)
    )
    places = rng.randrange(1, 9)
    gold = rng.choice((_dec(q, places), _frac(q, rng.randrange(4))))
    pred = rng.choice(
        (
            _dec(q, places),
            _dec(q, places) + "0",
            _dec(q, places + rng.randrange(1, 4)),
            _dec(q, max(places - 1, 0)),
            _frac(q, rng.randrange(4)),
            _dec(q + Fraction(1, 10**places), places),
            _dec(q, 6),
            _dec(q, 7),
            _dec(q, 12),
            _dec(q * (1 + Fraction(1, 10**7)), 9),
        )
    )
    return pred, gold


def _sci_forms(m: str, k: int) -> list[str]:
    return [
        f"{m}E{k}",
        f"{m}e{k}",
        f"{m}\\times10^{{{k}}}",
        f"{m} \\times 10^{{{k}}}",
        f"{m} \\cdot 10^{{{k}}}",
        f"{m}*10^{k}",
    ]


def _sci_case(rng: random.Random) -> tuple[str, str]:
    mantissa = Fraction(rng.randrange(10, 100), 10) * rng.choice((1, 1, -1))
    k = rng.randrange(-12, 13)
    m = _dec(mantissa, 1)
    value = mantissa * Fraction(10) ** k
    plain = str(value.numerator) if value.denominator == 1 else _dec(value, max(0, -k + 1))
    gold = rng.choice([plain, *_sci_forms(m, k)])
    wrong = rng.choice(
        [*_sci_forms(m, k + rng.choice((1, -1))), *_sci_forms(_dec(mantissa + Fraction(1, 10), 1), k)]
    )
    return rng.choice([rng.choice(_sci_forms(m, k)), plain, wrong]), gold


def _symbolic_case(rng: random.Random) -> tuple[str, str]:
    a, b, c = rng.randrange(1, 10), rng.choice((2, 3, 5, 6, 7)), rng.randrange(2, 9)
    kind = rng.randrange(4)
    if kind == 0:  # a sqrt(b)
        value = a * b**0.5
        gold, same = (
            f"{a}\\sqrt{{{b}}}",
            [f"\\sqrt{{{a * a * b}}}", f"{a} \\sqrt {b}", f"\\sqrt{{{b}}} \\cdot {a}"],
        )
    elif kind == 1:  # a sqrt(b) / c
        value = a * b**0.5 / c
        gold, same = (
            f"\\frac{{{a}\\sqrt{{{b}}}}}{{{c}}}",
            [f"\\frac{{{a}}}{{{c}}}\\sqrt{{{b}}}", f"\\frac{{\\sqrt{{{a * a * b}}}}}{{{c}}}"],
        )
    elif kind == 2:  # a pi / c
        value = a * 3.141592653589793 / c
        gold, same = f"\\frac{{{a}\\pi}}{{{c}}}", [f"\\frac{{{a}}}{{{c}}}\\pi", f"{a}\\pi/{c}"]
    else:  # a pi
        value = a * 3.141592653589793
        gold, same = f"{a}\\pi", [f"{a} \\pi", f"\\pi \\cdot {a}", f"{a}\\cdot\\pi"]
    wrong = [
        gold.replace(str(a), str(a + 1), 1),
        f"{value:.{rng.randrange(2, 12)}f}",
        f"{value:.6f}",
        f"{value:.15f}",
        f"{value:.3f}",
    ]
    return rng.choice(same + wrong), gold


def _elements(rng: random.Random, k: int) -> list[str]:
    return [
        rng.choice((str(rng.randrange(-9, 20)), _frac(Fraction(rng.randrange(1, 9), rng.randrange(2, 9)), 0)))
        for _ in range(k)
    ]


def _set_case(rng: random.Random) -> tuple[str, str]:
    xs = list(dict.fromkeys(_elements(rng, rng.randrange(2, 5))))
    ys = list(xs)
    op = rng.randrange(6)
    if op == 0:
        rng.shuffle(ys)
    elif op == 1:
        ys.insert(rng.randrange(len(ys) + 1), rng.choice(ys))
    elif op == 2 and len(ys) > 1:
        ys.pop(rng.randrange(len(ys)))
    elif op == 3:
        ys.append(str(rng.randrange(30, 40)))
    elif op == 4:
        ys[rng.randrange(len(ys))] = str(rng.randrange(40, 50))
    sep = rng.choice((",", ", ", " , "))
    return "\\{" + sep.join(ys) + "\\}", "\\{" + ",".join(xs) + "\\}"


def _tuple_case(rng: random.Random) -> tuple[str, str]:
    xs = _elements(rng, rng.randrange(2, 4))
    ys = list(xs)
    op = rng.randrange(4)
    if op == 0:
        ys.reverse()
    elif op == 1:
        ys[0] = str(Fraction(ys[0].replace("\\frac{", "").replace("}{", "/").replace("}", "")) + 1)
    kinds = [("(", ")"), ("(", ")"), ("[", "]")] + ([("(", "]"), ("[", ")")] if len(xs) == 2 else [])
    brackets = rng.choice(kinds)  # half-open brackets only for intervals (two ends)
    gold_brackets = brackets if rng.random() < 0.8 else rng.choice(kinds)
    if len(xs) == 2 and rng.random() < 0.3:
        xs[1] = ys[1] = "\\infty"
    return brackets[0] + rng.choice((",", ", ")).join(ys) + brackets[1], gold_brackets[0] + ",".join(
        xs
    ) + gold_brackets[1]


def _matrix(kind: str, rows: list[list[str]], spaced: bool) -> str:
    sep, row = (" & ", " \\\\ ") if spaced else ("&", "\\\\")
    return f"\\begin{{{kind}}}" + row.join(sep.join(r) for r in rows) + f"\\end{{{kind}}}"


def _matrix_case(rng: random.Random) -> tuple[str, str]:
    h, w = rng.randrange(1, 4), rng.randrange(1, 4)
    rows = [[str(rng.randrange(-9, 10)) for _ in range(w)] for _ in range(h)]
    other = [list(r) for r in rows]
    op = rng.randrange(6)
    if op == 0:
        other[rng.randrange(h)][rng.randrange(w)] = str(rng.randrange(10, 20))
    elif op == 1:
        other = [list(c) for c in zip(*rows)]
    elif op == 2 and w > 1:  # a row break eaten: 1 \\ 2 -> 12
        other = [["".join(r)] for r in rows]
    kinds = ("pmatrix", "bmatrix", "pmatrix", "matrix")
    return _matrix(rng.choice(kinds), other, rng.random() < 0.5), _matrix(
        rng.choice(kinds), rows, rng.random() < 0.5
    )


def _percent_case(rng: random.Random) -> tuple[str, str]:
    p = rng.randrange(1, 100)
    return rng.choice((f"{p}\\%", f"{p}%", str(p), _dec(Fraction(p, 100), 2), f"{p + 1}\\%")), rng.choice(
        (str(p), f"{p}\\%", _dec(Fraction(p, 100), 2))
    )


ADVERSARIAL: list[tuple[str, str]] = [
    ("1000001", "1000000"),
    ("1000000", "999999"),
    ("10000001", "10000000"),
    ("2.000001", "2"),
    ("2.0000001", "2"),
    ("3.14159", "\\pi"),
    ("3.1415926", "\\pi"),
    ("1.414214", "\\sqrt{2}"),
    ("0.3333333", "\\frac{1}{3}"),
    ("0.333333", "\\frac{1}{3}"),
    ("0.67", "\\frac{2}{3}"),
    ("123456789012345678901234567891", "123456789012345678901234567890"),
    ("\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "\\begin{pmatrix}12\\end{pmatrix}"),
    ("\\begin{bmatrix}1 & 2\\\\ 3 & 4\\end{bmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
    ("\\begin{vmatrix}1 & 2\\\\ 3 & 4\\end{vmatrix}", "-2"),
    ("\\begin{vmatrix}1 & 2\\\\ 3 & 4\\end{vmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
    ("1E-5", "0.00001"),
    ("1e-5", "0.00001"),
    ("1\\times10^{-5}", "0.00001"),
    ("1 \\cdot 10^{-5}", "0.00001"),
    ("\\{1,1,2\\}", "\\{1,2\\}"),
    ("\\{1,2,2\\}", "\\{1,1,2\\}"),
    ("\\boxed 7", "7"),
    ("\\boxed{7}", "7"),
    ("\\frac{\\sqrt{3}}{2}", "\\sin(\\pi/3)"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("-0", "0"),
    ("1,000", "1000"),
]

_MAKERS: list[Callable[[random.Random], tuple[str, str]]] = [
    _integer_case,
    _integer_case,
    _decimal_case,
    _decimal_case,
    _sci_case,
    _symbolic_case,
    _symbolic_case,
    _set_case,
    _set_case,
    _tuple_case,
    _matrix_case,
    _matrix_case,
    _percent_case,
]


def cases(n: int, seed: int) -> list[tuple[str, str]]:
    """``max(n, len(ADVERSARIAL))`` (prediction, gold) pairs: the adversarial list, then random ones."""
    rng = random.Random(seed)
    out = list(ADVERSARIAL)
    while len(out) < n:
        out.append(rng.choice(_MAKERS)(rng))
    return out


# -- comparison -------------------------------------------------------------------------------------------
def disagreements(math_equal_fn: Callable[[str, str], bool], cases: list[tuple[str, str]]) -> dict[str, Any]:
    """Both checkers on every case: ``{"cases", "agree", "disagree", "accepted": {class: count},
    "unexplained": count, "unexplained_examples": [(pred, gold, ours, math_verify), ...]}``."""
    accepted = load_accepted()
    by_class: Counter[str] = Counter()
    unexplained: list[tuple[str, str, bool, bool]] = []
    agree = 0
    for pred, gold in cases:
        ours, theirs = bool(math_equal_fn(pred, gold)), math_verify_equal(pred, gold)
        if ours == theirs:
            agree += 1
            continue
        name = accepted.classify(pred, gold, ours, theirs)
        if name is None:
            unexplained.append((pred, gold, ours, theirs))
        else:
            by_class[name] += 1
    return {
        "cases": len(cases),
        "agree": agree,
        "disagree": len(cases) - agree,
        "accepted": dict(sorted(by_class.items())),
        "unexplained": len(unexplained),
        "unexplained_examples": unexplained[:20],
    }


def _tex_matrix(kind: str, n: int, entry: Callable[[int, int], str]) -> str:
    return (
        f"\\begin{{{kind}}}"
        + "\\\\".join("&".join(entry(i, j) for j in range(n)) for i in range(n))
        + f"\\end{{{kind}}}"
    )


def hostile_answers() -> dict[str, tuple[str, str]]:
    """Answer-sized (<= 2,000 characters) pairs that make ``math_equal`` do the most work."""
    return {
        "set_64_symbolic": (
            "\\{" + ",".join(f"(x+{k})^2" for k in range(64)) + "\\}",
            "\\{" + ",".join(f"x^2+{2 * k}x+{k * k}" for k in reversed(range(64))) + "\\}",
        ),
        "matrix_8x8_symbolic": (
            _tex_matrix("pmatrix", 8, lambda i, j: f"(x+{i + j})^2"),
            _tex_matrix("bmatrix", 8, lambda i, j: f"x^2+{2 * (i + j)}x+{(i + j) ** 2}"),
        ),
        "vmatrix_4x4_symbolic": (
            _tex_matrix("vmatrix", 4, lambda i, j: f"(x_{i}+y_{j})^{{{i + j + 3}}}"),
            "x",
        ),
        "vmatrix_8x8_numbers": (
            _tex_matrix("vmatrix", 8, lambda i, j: str((7 * i + 13 * j) % 97 * 10**20 + 1)),
            "5",
        ),
        "nested_sqrt": ("\\sqrt{" * 280 + "2" + "}" * 280, "\\sqrt{2}"),
        "row_breaks": ("\\begin{pmatrix}" + "1\\\\" * 600 + "\\end{pmatrix}", "1"),
        "scientific_huge_exponent": ("1e100000", "1e99999"),
    }


def worst_times(
    equal_fn: Callable[[str, str], bool], reward_fn: Callable[[str, str], float]
) -> dict[str, float]:
    """Seconds for ``math_equal``/``math_reward`` on 1 MB adversarial inputs, and for ``math_equal`` on the
    answer-sized hostile pairs (both orders; the slower one)."""
    mb = 1_000_000
    inputs = {
        "digits": "7" * mb,
        "nested_braces": "{" * (mb // 2) + "}" * (mb // 2),
        "boxed_open": "\\boxed{" * (mb // 7),
        "boxed_nested": "\\boxed{" * (mb // 14) + "}" * (mb // 14),
        "row_breaks": "\\begin{pmatrix}" + "1 \\\\ " * (mb // 6) + "\\end{pmatrix}",
        "scientific": "1e-5 " * (mb // 5),
        "answer_tags": "<answer>1e-5</answer>" * (mb // 21),
    }
    out: dict[str, float] = {}

    def timed(fn: Callable[[str, str], object], a: str, b: str) -> float:
        start = time.perf_counter()
        fn(a, b)
        return time.perf_counter() - start

    for name, text in inputs.items():
        out[f"math_equal/1MB_{name}"] = timed(equal_fn, text, "7")
        out[f"math_reward/1MB_{name}"] = timed(reward_fn, text, "7")
    for name, (a, b) in hostile_answers().items():
        out[f"math_equal/{name}"] = max(timed(equal_fn, a, b), timed(equal_fn, b, a))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--before", default=BEFORE, help="git revision for the 'before' column ('' to skip)")
    args = ap.parse_args(argv)
    use_source_tree()
    from llmrl.rewards.math import load_sympy, math_equal, math_reward

    load_sympy()
    all_cases = cases(args.n, args.seed)
    start = time.perf_counter()
    result = disagreements(math_equal, all_cases)
    result["seconds"] = time.perf_counter() - start
    if args.before:
        result["before"] = disagreements(module_at(args.before, "src/llmrl/rewards/math.py").math_equal, all_cases)
    times = worst_times(math_equal, math_reward)
    result["worst_1mb_seconds"] = times
    if args.json:
        print(json.dumps(result))
        return result
    if "before" in result:
        old = result["before"]
        print(f"{'before (' + args.before + '): disagreements':<40}{old['disagree']:>8}")
        print(f"{'before: unexplained':<40}{old['unexplained']:>8}")
    print(f"{'cases':<40}{result['cases']:>8}")
    print(f"{'agree with math-verify':<40}{result['agree']:>8}")
    for name, count in result["accepted"].items():
        print(f"{'accepted: ' + name:<40}{count:>8}")
    print(f"{'disagreements (after)':<40}{result['disagree']:>8}")
    print(f"{'unexplained disagreements':<40}{result['unexplained']:>8}")
    for pred, gold, ours, theirs in result["unexplained_examples"]:
        print(f"    {pred!r} vs gold {gold!r}: ours {ours}, math-verify {theirs}")
    worst = max(times, key=times.__getitem__)
    print(f"{'worst time (' + worst + ')':<52}{times[worst]:>8.3f} s")
    for name, seconds in times.items():
        print(f"    {name:<48}{seconds:>8.3f} s")
    return result


if __name__ == "__main__":
    main()
