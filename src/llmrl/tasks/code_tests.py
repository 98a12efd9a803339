"""Write a small Python function; the reward is the fraction of hidden unit tests it passes in the sandbox.

Problems are generated from parameterised templates (:data:`FAMILIES`: arithmetic on lists, string transforms,
digit and sequence functions), each with a reference solution and ``num_tests`` hidden tests whose inputs come
from the sample's rng and whose expected values are the reference solution's outputs. The prompt states the
function's name, arguments and behaviour, one worked example (not among the tests), and asks for the function
in a fenced ```` ```python ```` block.

Scoring (:func:`run_tests`): the completion's code is the last fenced block (```` ```python ````, ```` ```py ````
or a bare ```` ``` ````; an unclosed last fence runs to the end), else the whole completion. One
:func:`llmrl.rollout.sandbox.run_python` call loads it and calls the function on every test input; only the
*inputs* enter the sandbox and the caller compares the returned values (as canonical JSON: ``1`` ≠ ``1.0`` ≠
``true``, tuples read as lists) with the expected ones, so a program cannot forge a pass without producing
the right value. A test that raises, returns something that is not JSON, or is not reached (the program hung,
crashed or hit a limit) fails; the program's own prints are discarded. Reward ``tests`` = passed / tests, in
[0, 1]; ``is_correct``: all pass; ``is_well_formed``: the code parses and defines the function.

Time: the sandbox's ``wall_seconds`` (default 3 s) must stay below the reward pool's ``reward.timeout``
(default 5 s), or the pool kills the call first and every test fails with a timeout.

Sample fields: ``prompt``, ``answer`` (the reference solution's source), ``function`` (its name), ``tests``
(list of ``{"args": [...], "expected": value}``), ``family``.
"""

from __future__ import annotations

import ast
import json
import random
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from llmrl.rewards.base import RewardFn
from llmrl.rollout.sandbox import Limits, SandboxResult, run_python
from llmrl.tasks.base import SPLITS, TASKS, Task, prompt_key, split_of

if TYPE_CHECKING:
    from llmrl.core.types import Sample

_STYLES = ("plain", "chat")
_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n")
_PYTHON_FENCES = ("", "python", "python3", "py")
_ANSWER_IN = "Answer with the complete function in a ```python code block."


def extract_code(completion: str) -> str:
    """The code of a completion: its last python (or bare) fenced block, a last fence never closed running to
    the end (a cut-off completion); the whole completion when it has no such block."""
    if not isinstance(completion, str):
        raise TypeError(f"code_tests: completion must be a str, got {type(completion).__name__}")
    code, pos = None, 0
    while (m := _FENCE_RE.search(completion, pos)) is not None:
        end = completion.find("```", m.end())
        body = completion[m.end():] if end < 0 else completion[m.end():end]
        if m.group(1).lower() in _PYTHON_FENCES:
            code = body
        if end < 0:
            break
        pos = end + 3
    return completion if code is None else code


# -- problem families --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One generated problem: ``signature`` (e.g. ``f(xs)``), ``text`` (what it returns), the reference
    ``source`` and an input generator."""

    function: str
    signature: str
    text: str
    source: str
    inputs: Callable[[random.Random], list[Any]]


def _ints(rng: random.Random, lo: int = -20, hi: int = 20, max_len: int = 8) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(0, max_len))]


def _text(rng: random.Random, max_len: int = 12) -> str:
    alphabet = string.ascii_lowercase * 3 + "AEIOUXYZ  ,!"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


def _list_arg(rng: random.Random) -> list[Any]:
    return [_ints(rng)]


def _str_arg(rng: random.Random) -> list[Any]:
    return [_text(rng)]


def _sum_divisible(rng: random.Random) -> Problem:
    k = rng.randint(2, 9)
    return Problem("sum_divisible", "sum_divisible(xs)",
                   f"the sum of the elements of the list of integers `xs` that are divisible by {k} (0 for none)",
                   f"def sum_divisible(xs):\n    return sum(x for x in xs if x % {k} == 0)\n", _list_arg)


def _affine(rng: random.Random) -> Problem:
    a, b = rng.choice([-5, -4, -3, -2, 2, 3, 4, 5]), rng.randint(-9, 9)
    expr = f"{a} * x" + (f" + {b}" if b > 0 else f" - {-b}" if b < 0 else "")
    return Problem("affine", "affine(xs)",
                   f"a new list in which every element x of the list of integers `xs` is replaced by {expr}",
                   f"def affine(xs):\n    return [{expr} for x in xs]\n", _list_arg)


def _count_greater(rng: random.Random) -> Problem:
    t = rng.randint(-10, 10)
    return Problem("count_greater", "count_greater(xs)",
                   f"how many elements of the list of integers `xs` are strictly greater than {t}",
                   f"def count_greater(xs):\n    return sum(1 for x in xs if x > {t})\n", _list_arg)


def _clip(rng: random.Random) -> Problem:
    lo, hi = rng.randint(-10, 0), rng.randint(1, 10)
    return Problem("clip", "clip(xs)",
                   f"a new list in which every element of the list of integers `xs` is clipped to [{lo}, {hi}]: "
                   f"values below {lo} become {lo}, values above {hi} become {hi}, the others stay",
                   f"def clip(xs):\n    return [min(max(x, {lo}), {hi}) for x in xs]\n", _list_arg)


def _window_sums(rng: random.Random) -> Problem:
    w = rng.randint(2, 4)
    return Problem("window_sums", "window_sums(xs)",
                   f"the list of the sums of every {w} consecutive elements of the list of integers `xs`, in "
                   f"order (xs[0] + ... + xs[{w - 1}], then xs[1] + ... + xs[{w}], ...); an empty list when "
                   f"`xs` has fewer than {w} elements",
                   f"def window_sums(xs):\n    return [sum(xs[i:i + {w}]) for i in range(len(xs) - {w - 1})]\n",
                   _list_arg)


def _rotate(rng: random.Random) -> Problem:
    k = rng.randint(1, 5)
    return Problem("rotate_left", "rotate_left(xs)",
                   f"the list `xs` rotated left by {k} positions (the first {k} elements move to the end, in "
                   f"order; rotating past the end wraps around, i.e. by {k} modulo len(xs)); an empty list "
                   "stays empty",
                   f"def rotate_left(xs):\n    if not xs:\n        return []\n    k = {k} % len(xs)\n"
                   "    return xs[k:] + xs[:k]\n", _list_arg)


def _caesar(rng: random.Random) -> Problem:
    k = rng.randint(1, 25)
    return Problem("caesar", "caesar(s)",
                   f"the string `s` with every lowercase letter a-z shifted forward by {k} places in the "
                   "alphabet, wrapping around from z to a; every other character unchanged",
                   "def caesar(s):\n    return ''.join(chr((ord(c) - 97 + "
                   f"{k}) % 26 + 97) if 'a' <= c <= 'z' else c for c in s)\n", _str_arg)


def _replace_vowels(rng: random.Random) -> Problem:
    c = rng.choice("*#_-!+")
    return Problem("replace_vowels", "replace_vowels(s)",
                   f"the string `s` with every vowel (a, e, i, o, u, lowercase or uppercase) replaced by '{c}'",
                   f"def replace_vowels(s):\n    return ''.join('{c}' if ch in 'aeiouAEIOU' else ch for ch in s)\n",
                   _str_arg)


def _every_kth(rng: random.Random) -> Problem:
    k = rng.randint(2, 4)
    start = rng.randrange(k)
    return Problem("every_kth", "every_kth(s)",
                   f"the string made of the characters of `s` at the 0-based positions {start}, {start + k}, "
                   f"{start + 2 * k}, ... (every {k}th character starting at position {start}), in order",
                   f"def every_kth(s):\n    return s[{start}::{k}]\n", _str_arg)


def _repeat_chars(rng: random.Random) -> Problem:
    k = rng.randint(2, 4)
    return Problem("repeat_chars", "repeat_chars(s)",
                   f"the string `s` with every character repeated {k} times in place (e.g. 'ab' gives "
                   f"'{'a' * k}{'b' * k}')",
                   f"def repeat_chars(s):\n    return ''.join(c * {k} for c in s)\n", _str_arg)


def _count_char(rng: random.Random) -> Problem:
    c = rng.choice(string.ascii_lowercase)
    return Problem("count_char", "count_char(s)", f"the number of times the lowercase letter '{c}' occurs in `s`",
                   f"def count_char(s):\n    return s.count('{c}')\n", _str_arg)


def _upper_every(rng: random.Random) -> Problem:
    k = rng.randint(2, 4)
    return Problem("upper_every", "upper_every(s)",
                   f"the string `s` with the characters at 0-based positions divisible by {k} (0, {k}, "
                   f"{2 * k}, ...) converted to uppercase and all other characters unchanged",
                   f"def upper_every(s):\n    return ''.join(c.upper() if i % {k} == 0 else c "
                   "for i, c in enumerate(s))\n", _str_arg)


def _digit_sum(rng: random.Random) -> Problem:
    b = rng.randint(2, 10)
    return Problem("digit_sum", "digit_sum(n)",
                   f"the sum of the digits of the non-negative integer `n` written in base {b} (0 for n = 0)",
                   f"def digit_sum(n):\n    total = 0\n    while n:\n        total += n % {b}\n        n //= {b}\n"
                   "    return total\n", lambda r: [r.choice([r.randint(0, 20), r.randint(0, 10_000)])])


def _fib_mod(rng: random.Random) -> Problem:
    m = rng.randint(2, 20)
    return Problem("fib_mod", "fib_mod(n)",
                   f"the n-th Fibonacci number modulo {m}, for the non-negative integer `n`, where fib(0) = 0, "
                   "fib(1) = 1 and fib(n) = fib(n - 1) + fib(n - 2)",
                   f"def fib_mod(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
                   f"    return a % {m}\n", lambda r: [r.randint(0, 60)])


FAMILIES: dict[str, Callable[[random.Random], Problem]] = {
    "sum_divisible": _sum_divisible, "affine": _affine, "count_greater": _count_greater, "clip": _clip,
    "window_sums": _window_sums, "rotate_left": _rotate, "caesar": _caesar, "replace_vowels": _replace_vowels,
    "every_kth": _every_kth, "repeat_chars": _repeat_chars, "count_char": _count_char,
    "upper_every": _upper_every, "digit_sum": _digit_sum, "fib_mod": _fib_mod,
}
"""Problem templates by name; each draws its parameters from the rng."""


def reference(source: str, function: str) -> Callable[..., Any]:
    """The function ``function`` defined by trusted ``source`` (a reference solution), run in this process."""
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<reference {function}>", "exec"), namespace)  # noqa: S102 - our own templates
    return namespace[function]


# -- running the tests ---------------------------------------------------------------------------------------
_HARNESS = """\
import json, os, sys
_out = os.fdopen(os.dup(1), "w")
sys.stdout = open(os.devnull, "w")
def _emit(i, tag, text=""):
    _out.write(f"{nonce} {{i}} {{tag}} {{text}}\\n")
    _out.flush()
with open("inputs.json") as f:
    _inputs = json.load(f)
try:
    _ns = {{"__name__": "solution"}}
    with open("solution.py") as f:
        exec(compile(f.read(), "solution.py", "exec"), _ns)
    _fn = _ns[{function!r}]
except BaseException as e:
    _emit(-1, "load", type(e).__name__)
    raise SystemExit(1)
for _i, _args in enumerate(_inputs):
    try:
        _r = json.dumps(_fn(*_args))
    except BaseException as e:
        _emit(_i, "error", type(e).__name__)
    else:
        _emit(_i, "ok", _r)
"""


@dataclass
class TestReport:
    """Per-test outcome of one completion: ``passed[i]`` for test i, and the sandbox run."""

    __test__ = False  # not a pytest test class
    passed: list[bool]
    run: SandboxResult

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check_sample(sample: Mapping[str, Any]) -> tuple[str, list[tuple[list[Any], Any]]]:
    """(function name, [(args, expected)]) of a sample; a missing or malformed field is a ValueError naming it."""
    function = sample.get("function")
    if not isinstance(function, str) or not function.isidentifier():
        raise ValueError(f"code_tests: sample field 'function' must be a Python identifier, got {function!r}")
    tests = sample.get("tests")
    if not isinstance(tests, list) or not tests:
        raise ValueError(f"code_tests: sample field 'tests' must be a non-empty list, got {tests!r:.80}")
    out = []
    for i, t in enumerate(tests):
        if not isinstance(t, Mapping) or set(t) != {"args", "expected"} or not isinstance(t["args"], list):
            raise ValueError(f"code_tests: sample field 'tests'[{i}] must be {{'args': [...], 'expected': value}}, "
                             f"got {t!r:.80}")
        out.append((t["args"], t["expected"]))
    return function, out


def run_tests(code: str, sample: Mapping[str, Any], limits: Limits | None = None,
              require_isolation: bool | None = None) -> TestReport:
    """Run the sample's hidden tests on ``code`` (plain source) in one sandbox call."""
    function, tests = check_sample(sample)
    nonce = secrets.token_hex(8)
    harness = _HARNESS.format(nonce=nonce, function=function)
    files = {"solution.py": code, "inputs.json": json.dumps([args for args, _ in tests])}
    run = run_python(harness, files=files, limits=limits, require_isolation=require_isolation)
    got: dict[int, str] = {}
    for line in run.stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == nonce and parts[2] == "ok" and parts[1].isdigit():
            got.setdefault(int(parts[1]), parts[3])
    passed = []
    for i, (_args, expected) in enumerate(tests):
        try:
            ok = i in got and _canonical(json.loads(got[i])) == _canonical(expected)
        except ValueError:
            ok = False
        passed.append(ok)
    return TestReport(passed, run)


# -- the task --------------------------------------------------------------------------------------------------
@TASKS.register("code_tests")
class CodeTestsTask(Task):
    """Write a small Python function; reward = fraction of hidden unit tests passed in the sandbox."""

    name = "code_tests"
    required_fields = {"function": str, "tests": list[dict[str, Any]]}
    demonstration_fields = {"answer": str}

    def __init__(self, *, families: list[str] | str | None = None, num_tests: int = 8, style: str = "plain",
                 cpu_seconds: float = 2.0, wall_seconds: float = 3.0, memory_mb: int = 256, processes: int = 8,
                 require_isolation: bool | None = None) -> None:
        names = list(FAMILIES) if families is None else [families] if isinstance(families, str) else list(families)
        if not names or any(n not in FAMILIES for n in names):
            raise ValueError(f"code_tests: families must be a non-empty subset of {sorted(FAMILIES)}, "
                             f"got {families!r}")
        if isinstance(num_tests, bool) or not isinstance(num_tests, int) or not 1 <= num_tests <= 100:
            raise ValueError(f"code_tests: num_tests must be an integer in [1, 100], got {num_tests!r}")
        if style not in _STYLES:
            raise ValueError(f"code_tests: style must be one of {_STYLES}, got {style!r}")
        if require_isolation not in (None, True, False):
            raise ValueError(f"code_tests: require_isolation must be true, false or null, got {require_isolation!r}")
        try:
            self.limits = Limits(cpu_seconds=cpu_seconds, wall_seconds=wall_seconds, memory_mb=memory_mb,
                                 processes=processes)
        except ValueError as exc:
            raise ValueError(f"code_tests: {exc}") from None
        self.families, self.num_tests, self.style = names, num_tests, style
        self.require_isolation = require_isolation

    def samples(self, n: int, split: str = "train", seed: int = 0, max_tries: int | None = None) -> list[Sample]:
        """``n`` distinct prompts of ``split``, deterministic in (options, split, seed). The split is decided by
        the problem (the reference source, which holds the parameters), not the prompt, so a problem's other
        examples and tests never reach the other split."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        out: list[Sample] = []
        seen: set[str] = set()
        limit = max_tries if max_tries is not None else 200 * n + 1000
        for _ in range(limit):
            if len(out) == n:
                break
            s = self.make_sample(rng)
            key = prompt_key(s["prompt"])
            if key in seen or split_of(s["answer"], self.test_fraction) != split:
                continue
            seen.add(key)
            out.append(s)
        if len(out) < n:
            raise RuntimeError(f"task {self.name!r}: found only {len(out)} distinct {split} samples of {n} "
                               f"requested after {limit} tries; widen the task's options (families, num_tests)")
        return out

    def make_sample(self, rng: random.Random) -> Sample:
        family = rng.choice(self.families)
        problem = FAMILIES[family](rng)
        fn = reference(problem.source, problem.function)
        inputs: list[list[Any]] = []
        seen: set[str] = set()
        for _ in range(50 * (self.num_tests + 1)):
            args = problem.inputs(rng)
            key = _canonical(args)
            if key not in seen:
                seen.add(key)
                inputs.append(args)
            if len(inputs) == self.num_tests + 1:
                break
        example, *hidden = inputs
        example_call = f"{problem.function}({', '.join(map(repr, example))})"
        text = (f"Write a Python function `{problem.signature}` that returns {problem.text}.\n"
                f"Example: {example_call} returns {fn(*example)!r}.\n{_ANSWER_IN}")
        return {"task": self.name, "family": family,
                "prompt": text if self.style == "plain" else [{"role": "user", "content": text}],
                "answer": problem.source, "function": problem.function,
                "tests": [{"args": args, "expected": fn(*args)} for args in hidden]}

    @lru_cache(maxsize=256)  # noqa: B019 - reward and verdict of one completion share a run
    def _fraction(self, code: str, function: str, tests_json: str) -> float:
        sample = {"function": function, "tests": json.loads(tests_json)}
        return run_tests(code, sample, self.limits, self.require_isolation).fraction

    def score(self, completion: str, sample: Mapping[str, Any]) -> float:
        """Fraction of the sample's tests the completion's code passes (one sandbox run)."""
        code = extract_code(completion)
        function, _ = check_sample(sample)
        return self._fraction(code, function, json.dumps(sample["tests"], sort_keys=True))

    def reward_functions(self) -> dict[str, RewardFn]:
        """``tests``: fraction of the hidden tests passed, in [0, 1]."""

        def tests(completion: str, sample: Mapping[str, Any]) -> float:
            return self.score(completion, sample)

        return {"tests": tests}

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return self.score(completion, sample) == 1.0

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        """The extracted code parses and defines the function at top level (nothing is run)."""
        function, _ = check_sample(sample)
        try:
            tree = ast.parse(extract_code(completion))
        except (SyntaxError, ValueError):
            return False
        return any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function for n in tree.body)

    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """The reference solution in a fenced python block."""
        return f"```python\n{sample['answer']}```"


__all__ = ["FAMILIES", "CodeTestsTask", "TestReport", "extract_code", "run_tests"]
