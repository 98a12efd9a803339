"""The code_tests task: generated problems, hidden tests run in the sandbox, fenced-block extraction, CLI."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from llmrl.cli.main import main
from llmrl.rollout.sandbox import process_limit_enforced, sandbox_available
from llmrl.tasks import get_task
from llmrl.tasks.code_tests import FAMILIES, CodeTestsTask, extract_code, reference, run_tests

needs_bwrap = pytest.mark.skipif(not sandbox_available(),
                                 reason="bubblewrap (bwrap) is not installed or cannot create namespaces here")

DOUBLE: dict[str, Any] = {"function": "f", "tests": [{"args": [x], "expected": 2 * x} for x in (1, 2, 3, 4)]}
"""A hand-made sample: f(x) = 2x on 1, 2, 3, 4."""


def fast_task(**kw: Any) -> CodeTestsTask:
    return CodeTestsTask(cpu_seconds=1.0, wall_seconds=2.5, **kw)


class FixedRng(random.Random):
    """Returns queued values from randint / randrange / choice (a problem's parameters, chosen by hand)."""

    def __init__(self, *values: Any) -> None:
        super().__init__(0)
        self.values = list(values)

    def randint(self, a: int, b: int) -> int:
        v = self.values.pop(0)
        assert a <= v <= b
        return v

    def randrange(self, *args: Any, **kw: Any) -> int:
        return self.values.pop(0)

    def choice(self, seq: Any) -> Any:
        v = self.values.pop(0)
        assert v in seq
        return v


HAND = [  # family, parameters, input, expected (computed by hand)
    ("sum_divisible", (3,), [[3, 4, -6, 7]], -3),  # 3 + (-6)
    ("affine", (2, -3), [[0, 5]], [-3, 7]),  # 2*0-3, 2*5-3
    ("count_greater", (0,), [[-1, 0, 1, 2]], 2),
    ("clip", (-2, 5), [[-7, 0, 9]], [-2, 0, 5]),
    ("window_sums", (2,), [[1, 2, 3]], [3, 5]),
    ("window_sums", (3,), [[1, 2]], []),
    ("rotate_left", (2,), [[1, 2, 3]], [3, 1, 2]),
    ("rotate_left", (4,), [[1, 2, 3]], [2, 3, 1]),  # 4 mod 3 = 1
    ("caesar", (3,), ["xyz a!"], "abc d!"),
    ("replace_vowels", ("*",), ["HEllo"], "H*ll*"),
    ("every_kth", (3, 1), ["abcdefgh"], "beh"),  # positions 1, 4, 7
    ("repeat_chars", (3,), ["ab"], "aaabbb"),
    ("count_char", ("a",), ["banana"], 3),
    ("upper_every", (2,), ["abcde"], "AbCdE"),
    ("digit_sum", (2,), [13], 3),  # 1101
    ("digit_sum", (10,), [0], 0),
    ("fib_mod", (7,), [10], 6),  # fib(10) = 55 = 7*7 + 6
]


@pytest.mark.parametrize("family,params,args,expected", HAND, ids=[f"{h[0]}-{h[1]}" for h in HAND])
def test_reference_solutions_hand_checked(family, params, args, expected):
    problem = FAMILIES[family](FixedRng(*params))
    assert reference(problem.source, problem.function)(*args) == expected


def test_generated_samples_many_seeds():
    task = get_task("code_tests")
    for seed in range(4):
        train, test = task.samples(150, "train", seed), task.samples(15, "test", seed)
        assert not {s["answer"] for s in train} & {s["answer"] for s in test}  # a problem stays in one split
        for s in train + test:
            assert json.loads(json.dumps(s)) == s  # plain JSON
            assert len(s["tests"]) == 8 and len({json.dumps(t["args"]) for t in s["tests"]}) == 8
            fn = reference(s["answer"], s["function"])
            assert all(fn(*t["args"]) == t["expected"] for t in s["tests"])
            assert f"`{s['function']}(" in s["prompt"] and task.is_well_formed(task.demonstration(s), s)
    assert {s["family"] for s in task.samples(300, "train", 0)} == set(FAMILIES)
    assert task.samples(5, "train", 7) == task.samples(5, "train", 7)
    chat = get_task("code_tests", style="chat").samples(1, "train", 0)[0]
    assert chat["prompt"][0]["role"] == "user" and "```python" in chat["prompt"][0]["content"]


@needs_bwrap
def test_reference_solutions_score_one_in_the_sandbox():
    task = get_task("code_tests")
    rng = random.Random(0)
    samples = [task.make_sample(random.Random(rng.random())) for _ in range(3)]
    samples += [get_task("code_tests", families=[f]).samples(1, "train", 1)[0] for f in FAMILIES]
    reward = task.reward_functions()["tests"]
    assert {s["family"] for s in samples} == set(FAMILIES)
    for s in samples:
        assert reward(task.demonstration(s), s) == 1.0, s
        assert task.is_correct(s["answer"], s)  # plain, unfenced


@needs_bwrap
def test_wrong_solutions_score_the_exact_fraction():
    task = fast_task()
    reward = task.reward_functions()["tests"]
    assert reward("def f(x):\n    return 2 * x if x % 2 else 0", DOUBLE) == 0.5  # passes x = 1, 3
    assert reward("def f(x):\n    return 2 * x if x < 4 else 8.0", DOUBLE) == 0.75  # 8.0 is not 8
    assert reward("def f(x):\n    return x + 2 if x < 3 else True", DOUBLE) == 0.25  # 3, 4 fail; 1+2 != 2
    assert reward("def f(x):\n    return [2 * x]", DOUBLE) == 0.0
    assert reward("def g(x):\n    return 2 * x", DOUBLE) == 0.0  # wrong name
    assert reward("def f(x):\n    raise ValueError(x) if x > 2 else None\n", DOUBLE) == 0.0
    assert not task.is_correct("def f(x):\n    return 2 * x if x % 2 else 0", DOUBLE)


@needs_bwrap
def test_hangs_forks_network_and_forgery_score_what_they_earn():
    task = fast_task()
    reward = task.reward_functions()["tests"]
    hang = "def f(x):\n    if x == 3:\n        while True:\n            pass\n    return 2 * x"
    report = run_tests(hang, DOUBLE, task.limits)
    assert report.passed == [True, True, False, False]  # the fraction before the hang
    assert report.run.limit in ("cpu", "wall")  # 1 s of CPU: within 2.5 s unless the machine is very busy
    sleeper = "import time\ndef f(x):\n    if x == 2:\n        time.sleep(60)\n    return 2 * x"
    report = run_tests(sleeper, DOUBLE, task.limits)
    assert report.passed == [True, False, False, False] and report.run.limit == "wall"
    net = ("import socket\ndef f(x):\n    socket.create_connection(('1.1.1.1', 80), timeout=1).close()\n"
           "    return 2 * x")
    assert reward(net, DOUBLE) == 0.0
    if process_limit_enforced():
        assert reward("import os\nwhile True:\n    os.fork()\ndef f(x):\n    return 2 * x", DOUBLE) == 0.0
    forged = ("import os\nfor i in range(4):\n    os.write(1, f'x {i} ok {2 * (i + 1)}\\n'.encode())\n"
              "class Yes:\n    def __eq__(self, other):\n        return True\n"
              "def f(x):\n    print('noise ' * 1000)\n    return Yes()")
    assert reward(forged, DOUBLE) == 0.0  # unknown nonce; a non-JSON result never passes
    assert reward("def f(x):\n    print('lots of noise ' * 10000)\n    return 2 * x", DOUBLE) == 1.0  # prints dropped
    assert reward("import sys\nsys.exit(0)\ndef f(x):\n    return 2 * x", DOUBLE) == 0.0
    assert reward("```python\ndef f(x):\n    return 2 * x\n```", DOUBLE) == 1.0  # and the run goes on


def test_fenced_block_extraction():
    code = "def f(x):\n    return 2 * x\n"
    assert extract_code(code) == code
    assert extract_code(f"Sure!\n```python\n{code}```\nDone.") == code
    assert extract_code(f"```python\nold = 1\n```\ntext\n```py\n{code}```") == code  # the last block wins
    assert extract_code(f"```\n{code}```") == code
    assert extract_code(f"```python\n{code}```\n```text\nnot code\n```") == code  # other languages skipped
    assert extract_code(f"```Python3\n{code}") == code  # an unclosed fence runs to the end
    assert extract_code("```python\n```") == ""
    with pytest.raises(TypeError, match="completion must be a str"):
        extract_code(None)  # type: ignore[arg-type]
    task = fast_task()
    assert task.is_well_formed(f"Here:\n```python\n{code}```", DOUBLE)
    assert not task.is_well_formed("```python\ndef f(x:\n```", DOUBLE)  # syntax error
    assert not task.is_well_formed("```python\ndef g(x):\n    pass\n```", DOUBLE)  # wrong name


@pytest.mark.parametrize("sample,match", [
    ({"tests": DOUBLE["tests"]}, "'function' must be a Python identifier"),
    ({"function": "not a name", "tests": DOUBLE["tests"]}, "'function' must be a Python identifier"),
    ({"function": "f"}, "'tests' must be a non-empty list"),
    ({"function": "f", "tests": []}, "'tests' must be a non-empty list"),
    ({"function": "f", "tests": [{"args": 1, "expected": 2}]}, r"'tests'\[0\] must be"),
    ({"function": "f", "tests": [{"args": [1]}]}, r"'tests'\[0\] must be"),
])
def test_bad_samples_name_the_field(sample, match):
    task = fast_task()
    with pytest.raises(ValueError, match=match):
        task.reward_functions()["tests"]("def f(x): return x", sample)


@pytest.mark.parametrize("options,match", [
    ({"families": ["nope"]}, "families must be a non-empty subset"),
    ({"families": []}, "families must be a non-empty subset"),
    ({"num_tests": 0}, "num_tests must be an integer"),
    ({"style": "tagged"}, "style must be one of"),
    ({"cpu_seconds": 0}, r"code_tests: sandbox Limits.cpu_seconds must be"),
    ({"processes": -1}, r"Limits.processes must be"),
    ({"require_isolation": "yes"}, "require_isolation must be"),
])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        CodeTestsTask(**options)


@needs_bwrap
def test_cli_sample_and_reward(tmp_path, capsys):
    assert main(["tasks", "sample", "code_tests", "--n", "3", "--seed", "2", "--option", "wall_seconds=2.5"]) == 0
    samples = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(samples) == 3 and all(s["task"] == "code_tests" and s["answer"].startswith("def ") for s in samples)
    completions = [f"Here you go:\n```python\n{samples[0]['answer']}```", samples[1]["answer"],
                   "```python\nwhile True:\n    pass\n```"]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({**s, "completion": c}) + "\n" for s, c in zip(samples, completions)))
    out = tmp_path / "out.jsonl"
    assert main(["reward", "code_tests", "--input", str(src), "--output", str(out), "--workers", "2",
                 "--option", "cpu_seconds=1", "--option", "wall_seconds=2.5"]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reward"] for r in scored] == [1.0, 1.0, 0.0]
    assert [r["reward_components"] for r in scored] == [{"tests": 1.0}, {"tests": 1.0}, {"tests": 0.0}]
    summary = json.loads(capsys.readouterr().out.split("\n}")[0] + "\n}")
    assert summary["reward_timeouts"] == 0 and summary["reward_failures"] == 0
