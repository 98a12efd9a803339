"""The ``code_repair`` task (SWE-RL arXiv:2502.18449, SoRFT arXiv:2502.20127): verified injected bugs,
splits, subtask rewards."""

from __future__ import annotations

import ast
import difflib
import json
import math
import sysconfig
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import cpu_guard

from llmrl.cli.main import main
from llmrl.rewards.base import combine_rewards
from llmrl.tasks import get_task, split_of
from llmrl.tasks.bugs import KINDS, unit_sites
from llmrl.tasks.code_repair import SUBTASKS, CodeRepairTask
from llmrl.tasks.io import DataError

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CLAMP = (
    "def clamp(value, low, high):\n"
    "    if value < low:\n"
    "        return low\n"
    "    if value > high:\n"
    "        return high\n"
    "    return value\n"
    "\n"
    "\n"
    "def double(x):\n"
    "    return x * 2\n"
)


def _function_dump(code: str) -> str:
    """ast.dump of the (possibly indented) function whose full source lines are ``code``."""
    indented = code[:1].isspace()
    tree = ast.parse("if 1:\n" + code if indented else code)
    node = tree.body[0].body[0] if indented else tree.body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    return ast.dump(node)


@pytest.fixture(scope="module")
def stdlib_bugs() -> tuple[list[dict[str, Any]], float]:
    """1,000 train bugs from the standard library (subtask edit: files = the function), and the CPU seconds."""
    start = time.process_time()
    samples = CodeRepairTask(subtask="edit").samples(1000, "train", seed=0)
    return samples, time.process_time() - start


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small source tree: two modules with functions, a constant-only module, and files to be skipped."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(CLAMP)
    (tmp_path / "pkg" / "b.py").write_text("def add(a, b):\n    total = a + b\n    return total\n")
    (tmp_path / "c.py").write_text("X = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("def t(a, b):\n    return a - b\n")
    (tmp_path / "broken.py").write_text("def broken(:\n    return 1 + 2\n")
    (tmp_path / "latin.py").write_bytes("def f(a):\n    return a + 1  # caf\xe9\n".encode("latin-1"))
    return tmp_path


def _clamp_sample(tree: Path, subtask: str, old: str = "<", new: str = "<=") -> dict[str, Any]:
    """The sample of the bug ``old`` → ``new`` in ``clamp`` (built directly, whatever its split)."""
    task = CodeRepairTask(source_dir=tree, subtask=subtask, context_lines=0)
    sf = task.corpus.file("pkg/a.py")
    unit = sf.units[0]
    site = next(s for s in unit_sites(sf, unit) if sf.text[s.start : s.end] == old and s.new == new)
    bug = task.corpus.make_bug(sf, unit, site)
    assert bug is not None
    return task.build(bug)


def _wrap(solution: str) -> str:
    return f"<think>\nreasoning\n</think>\n<solution>\n{solution}\n</solution>"


def _edit(search: str, replace: str, path: str = "pkg/a.py") -> str:
    return _wrap(f"```python\n### {path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```")


def fbeta(p: float, r: float, beta: float = 3.0) -> float:
    return (1 + beta**2) * p * r / (beta**2 * p + r)


# -- the generator on the standard library --------------------------------------------------------------
def test_thousand_distinct_verified_stdlib_bugs(stdlib_bugs: tuple[list[dict[str, Any]], float]) -> None:
    samples, cpu = stdlib_bugs
    assert len({s["bug_id"] for s in samples}) == 1000
    assert len({(s["path"], s["files"][s["path"]], s["first_line"]) for s in samples}) == 1000
    disk: dict[str, str] = {}
    for s in samples:
        path = s["path"]
        original = disk.setdefault(path, (STDLIB / path).read_text(encoding="utf-8"))
        buggy, oracle = s["files"][path], s["oracle_files"][path]
        prefix = "".join(original.splitlines(keepends=True)[: s["first_line"] - 1])
        suffix = original[len(prefix) + len(oracle) :]
        # Applying the oracle file restores the original source exactly ...
        assert prefix + oracle + suffix == original, path
        buggy_file = prefix + buggy + suffix
        assert buggy_file != original
        # ... the buggy source still compiles, and the edited function's AST differs.
        compile(buggy_file, path, "exec", dont_inherit=True)
        assert _function_dump(buggy) != _function_dump(oracle), (path, s["function"])
        assert all(s["first_line"] <= n < s["first_line"] + buggy.count("\n") + 1 for n in s["lines"])
    for s in samples[:25]:  # the whole module's AST differs too (slow: full parses, so on a subset)
        original = disk[s["path"]]
        prefix = "".join(original.splitlines(keepends=True)[: s["first_line"] - 1])
        buggy_file = prefix + s["files"][s["path"]] + original[len(prefix) + len(s["oracle_files"][s["path"]]) :]
        assert ast.dump(ast.parse(buggy_file)) != ast.dump(ast.parse(original))
    kinds = Counter(s["kind"] for s in samples)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 20, kinds
    assert cpu < 30.0, f"generating 1000 bugs took {cpu:.1f} CPU seconds"


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_alone(kind: str) -> None:
    samples = CodeRepairTask(kinds=[kind], subtask="edit").samples(8, "train", seed=3)
    assert {s["kind"] for s in samples} == {kind}
    for s in samples:
        assert _function_dump(s["files"][s["path"]]) != _function_dump(s["oracle_files"][s["path"]])


def test_determinism_and_subtask_independence() -> None:
    a = CodeRepairTask().samples(40, "train", seed=0)
    assert CodeRepairTask().samples(40, "train", seed=0) == a
    assert [s["bug_id"] for s in CodeRepairTask().samples(40, "train", seed=1)] != [s["bug_id"] for s in a]
    for subtask in ("file", "function", "line", "edit"):
        other = CodeRepairTask(subtask=subtask).samples(40, "train", seed=0)
        assert [s["bug_id"] for s in other] == [s["bug_id"] for s in a]
        assert {s["subtask"] for s in other} == {subtask}
    mixed = CodeRepairTask(subtask=["file", "function", "line", "edit"]).samples(40, "train", seed=0)
    assert [s["bug_id"] for s in mixed] == [s["bug_id"] for s in a]
    assert len({s["subtask"] for s in mixed}) == 4


def test_train_test_disjoint_by_bug_id() -> None:
    task = CodeRepairTask(subtask="line")
    train, test = task.samples(300, "train", seed=0), task.samples(60, "test", seed=0)
    assert not {s["bug_id"] for s in train} & {s["bug_id"] for s in test}
    assert all(split_of(s["bug_id"]) == "test" for s in test)
    assert all(split_of(s["bug_id"]) == "train" for s in train)


# -- rewards: gold demonstrations are maximal, hand-checked values on a fixed bug -----------------------
@pytest.mark.parametrize("subtask", SUBTASKS)
def test_demonstrations_get_the_maximum_reward(subtask: str) -> None:
    task = CodeRepairTask(subtask=subtask)
    fns = task.reward_functions()
    for s in task.samples(60, "train", seed=7) + task.samples(10, "test", seed=7):
        s = json.loads(json.dumps(s))  # rewards read only JSON fields
        demo = task.demonstration(s)
        out = combine_rewards(fns, demo, s)
        assert out.failures == [] and list(out.components) == [{"repair": "swe_rl"}.get(subtask, subtask)]
        assert out.total == 1.0
        assert task.is_correct(demo, s) and task.is_well_formed(demo, s) and task.accept_for_sft(demo, s)
        assert task.score(_wrap("nothing useful"), s) < 1.0


def test_repair_reward_hand_checked(tree: Path) -> None:
    s = _clamp_sample(tree, "repair")  # "if value < low:" became "if value <= low:" (line 2)
    assert s["files"]["pkg/a.py"].split("\n")[1] == "    if value <= low:" and s["lines"] == [2]
    assert s["oracle_files"]["pkg/a.py"] == CLAMP[: CLAMP.index("\n\n\n") + 1]  # the function, context 0
    task = CodeRepairTask(source_dir=tree, context_lines=0)
    assert task.score(task.demonstration(s), s) == 1.0
    assert task.score("    if value < low:", s) == -1.0  # no tags: format error
    assert task.score(_edit("    if value == low:", "    if value < low:"), s) == -1.0  # search not found
    # A different fix: the similarity of the two patches, computed here by hand.
    oracle_patch = ("@@ -1,5 +1,5 @@\n def clamp(value, low, high):\n-    if value <= low:\n+    if value < low:\n"
                    "         return low\n     if value > high:\n         return high")
    pred_patch = oracle_patch.replace("+    if value < low:", "+    if low > value:")
    expected = difflib.SequenceMatcher(None, pred_patch, oracle_patch, autojunk=False).ratio()
    got = task.score(_edit("    if value <= low:", "    if low > value:"), s)
    assert got == pytest.approx(expected) and 0.8 < got < 1.0
    assert not task.is_correct(_edit("    if value <= low:", "    if low > value:"), s)


def test_edit_reward_hand_checked(tree: Path) -> None:
    s = _clamp_sample(tree, "edit")
    task = CodeRepairTask(source_dir=tree, subtask="edit", context_lines=0)
    assert task.score(task.demonstration(s), s) == 1.0
    # Right line, wrong text: items {-2, +2 "if value > low"} vs gold {-2, +2 "if value < low"}: P = R = 1/2.
    wrong_text = _edit("    if value <= low:", "    if value > low:")
    assert task.score(wrong_text, s) == pytest.approx(fbeta(0.5, 0.5)) == pytest.approx(0.5)
    assert task.accept_for_sft(wrong_text, s) and not task.is_correct(wrong_text, s)
    # The fix plus an unneeded change on line 6: P = 2/4, R = 2/2.
    extra = _edit("    if value <= low:\n        return low\n    if value > high:\n        return high\n"
                  "    return value", "    if value < low:\n        return low\n    if value > high:\n"
                  "        return high\n    return int(value)")
    assert task.score(extra, s) == pytest.approx(fbeta(0.5, 1.0)) == pytest.approx(10 / 11)
    wrong_line = _edit("        return low", "        return high")
    assert task.score(wrong_line, s) == 0.0 and not task.accept_for_sft(wrong_line, s)
    assert task.score(_edit("x", "y", path="pkg/b.py"), s) == 0.0  # a file not shown
    assert task.score("no tags at all", s) == 0.0


def test_localisation_rewards_hand_checked(tree: Path) -> None:
    task = CodeRepairTask(source_dir=tree, subtask=["file", "function", "line"], context_lines=0)
    f = _clamp_sample(tree, "file")
    assert f["candidates"] == ["broken.py", "c.py", "latin.py", "pkg/a.py", "pkg/b.py"] and f["answer"] == "pkg/a.py"
    assert task.score(task.demonstration(f), f) == 1.0
    two = _wrap("pkg/a.py\npkg/b.py")  # P = 1/2, R = 1: F3 = 10/11
    assert task.score(two, f) == pytest.approx(10 / 11) and task.accept_for_sft(two, f) and not task.is_correct(two, f)
    assert task.score(_wrap("pkg/b.py"), f) == 0.0 and not task.accept_for_sft(_wrap("pkg/b.py"), f)
    assert task.score(_wrap("pkg/a.py\npkg/zzz.py"), f) == 0.0  # hallucinated path
    assert task.score("pkg/a.py", f) == 0.0  # no template

    fn = _clamp_sample(tree, "function")
    assert sorted(fn["candidates"]) == ["pkg/a.py::clamp", "pkg/a.py::double"]
    assert "def clamp(value, low, high):" in fn["prompt"][1]["content"]
    assert task.score(task.demonstration(fn), fn) == 1.0
    assert task.score(_wrap("function: clamp\nfunction: double"), fn) == pytest.approx(10 / 11)
    assert task.score(_wrap("pkg/a.py\nfunction: double"), fn) == 0.0
    assert task.score(_wrap("function: nope"), fn) == 0.0

    ln = _clamp_sample(tree, "line")
    assert ln["lines"] == [2] and ln["candidates"] == [f"pkg/a.py:{n}" for n in range(1, 7)]
    assert "    2 |     if value <= low:" in ln["prompt"][1]["content"]
    assert task.score(task.demonstration(ln), ln) == 1.0
    assert task.score(_wrap("pkg/a.py\nline: 2\nline: 3"), ln) == pytest.approx(10 / 11)
    assert task.score(_wrap("line: 1\nline: 2\nline: 3\nline: 4"), ln) == pytest.approx(fbeta(0.25, 1.0))
    assert task.score(_wrap("line: 3"), ln) == 0.0
    assert task.score(_wrap("line: 99"), ln) == 0.0  # not shown: hallucinated


def test_positions_after_non_ascii_text(tmp_path: Path) -> None:
    """AST columns are UTF-8 byte offsets: sites after non-ASCII text on the same line must still hit the
    right characters."""
    (tmp_path / "u.py").write_text('def g(name, n):\n    label = "naïve→" + name\n'
                                   '    if "ü" != name and n > 1:\n        return label[:n - 1]\n    return None\n')
    task = CodeRepairTask(source_dir=tmp_path, context_lines=0)
    sf = task.corpus.file("u.py")
    sites = unit_sites(sf, sf.units[0])
    olds = {(s.kind, sf.text[s.start : s.end], s.new) for s in sites}
    assert {("comparison", "!=", "=="), ("comparison", ">", ">="), ("boolean_op", "and", "or"),
            ("off_by_one", "1", "2"), ("off_by_one", "1", "0"), ("wrong_variable", "name", "label")} <= olds
    for site in sites:
        bug = task.corpus.make_bug(sf, sf.units[0], site)
        assert bug is not None and task.score(task.demonstration(task.build(bug)), task.build(bug)) == 1.0


def test_deleted_statement_gold_lines(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def run(log, items):\n    log.open()\n    total = len(items)\n"
                                   "    log.close()\n    return total\n")
    task = CodeRepairTask(source_dir=tmp_path, kinds=["missing_call"], subtask="line", context_lines=0)
    sf = task.corpus.file("m.py")
    unit = sf.units[0]
    site = next(s for s in unit_sites(sf, unit) if s.variant == "statement" and "close" in sf.text[s.start : s.end])
    s = task.build(task.corpus.make_bug(sf, unit, site))
    assert s["files"]["m.py"] == "def run(log, items):\n    log.open()\n    total = len(items)\n    return total\n"
    assert s["lines"] == [3, 4]  # the lines around the gap
    edit = CodeRepairTask(source_dir=tmp_path, kinds=["missing_call"], subtask="edit", context_lines=0)
    e = edit.build(edit.corpus.make_bug(sf, unit, site))
    assert edit.score(edit.demonstration(e), e) == 1.0
    assert "    log.close()" in e["answer"]


# -- robustness, options and errors ----------------------------------------------------------------------
def test_rewards_never_raise_and_are_fast() -> None:
    task = CodeRepairTask(subtask=list(SUBTASKS))
    samples = task.samples(10, "train", seed=11)
    junk = ["", "<think></think><solution></solution>", "<think>x</think><solution>```\n### a\n</solution>",
            "<think>x</think><solution>" + "line: 1\n" * 5000 + "</solution>", "\x00" * 100,
            "<think>x</think><solution>```python\n### " + "a" * 200 + "\n<<<<<<< SEARCH\n\n=======\n\n"
            ">>>>>>> REPLACE\n```</solution>", "<think>" + "x" * 1_000_000 + "</think><solution>y</solution>"]
    with cpu_guard(2.0, "70 junk completions"):
        for s in samples:
            for text in junk:
                r = task.score(text, s)
                assert math.isfinite(r) and (-1.0 <= r <= 1.0) and r < 1.0
                assert not task.is_correct(text, s)


def test_custom_source_dir(tree: Path) -> None:
    task = CodeRepairTask(source_dir=tree, subtask="repair", context_lines=1)
    assert task.corpus.paths == ("broken.py", "c.py", "latin.py", "pkg/a.py", "pkg/b.py")  # tests/ skipped
    train = task.samples(6, "train", seed=0)
    assert {s["path"] for s in train} <= {"pkg/a.py", "pkg/b.py"}  # broken / non-UTF-8 files skipped
    for s in train:
        original = (tree / s["path"]).read_text()
        assert s["oracle_files"][s["path"]] in original
        assert task.score(task.demonstration(s), s) == 1.0
    with pytest.raises(DataError, match="found only"):
        task.samples(500, "train", seed=0)


def test_missing_or_empty_source_dir_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=str(missing)):
        CodeRepairTask(source_dir=missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no python here\n")
    with pytest.raises(DataError, match="no usable .py files"):
        CodeRepairTask(source_dir=empty)
    consts = tmp_path / "consts"
    consts.mkdir()
    (consts / "k.py").write_text("A = 1\nB = [2, 3]\n")
    with pytest.raises(DataError, match=str(consts)):
        CodeRepairTask(source_dir=consts).samples(1, "train", seed=0, max_tries=50)
    assert isinstance(DataError("x"), ValueError)
    for bad in ({"subtask": "fix"}, {"kinds": ["typo"]}, {"context_lines": -1}, {"beta": -1.0},
                {"max_function_lines": 0}):
        with pytest.raises(ValueError):
            CodeRepairTask(**bad)


def test_cli_sample_and_reward(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "sample", "code_repair", "--n", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(r["task"] == "code_repair" and r["subtask"] == "repair" for r in rows)
    task = get_task("code_repair", subtask=["repair", "line"])
    samples = task.samples(4, "train", seed=2)
    lines = [{**s, "completion": task.demonstration(s)} for s in samples]
    lines += [{**s, "completion": "no idea"} for s in samples]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert main(["reward", "code_repair", "--input", str(src), "--output", str(dst)]) == 0
    captured = capsys.readouterr()
    assert "in.jsonl:9: skipped" in captured.err
    scored = [json.loads(line) for line in dst.read_text().splitlines()]
    expected = [1.0] * 4 + [(-1.0 if s["subtask"] == "repair" else 0.0) for s in samples]
    assert [r["reward"] for r in scored] == expected
    assert main(["tasks", "sample", "code_repair", "--option", f"source_dir={tmp_path / 'missing'}"]) == 2


def test_rejection_sampled_warm_start(monkeypatch: pytest.MonkeyPatch, tree: Path) -> None:
    """SoRFT stage 1: only completions passing the task's filter are kept and trained on."""
    from llmrl.config import load_config
    from llmrl.core.errors import ConfigError
    from llmrl.rollout.base import Generation
    from llmrl.train import run
    from llmrl.train.build import build_policy, build_task
    from tests.conftest import TINY

    over = [*TINY, "task.name=code_repair", f"task.options={{source_dir: {tree}, subtask: [file, line, edit], "
            "context_lines: 0}", "task.train_size=4", "sft.source=rejection", "sft.rejection_k=3", "sft.steps=1",
            "sft.batch_size=2", "sft.num_examples=4"]
    cfg = load_config(None, over)
    task = build_task(cfg)
    train = task.samples(4, "train", seed=0)

    class Scripted:
        def generate(self, prompts: list[list[int]], params: Any) -> list[list[Generation]]:
            assert params.n == 3 and len(prompts) == len(train)
            return [[Generation([5], [-0.1], text, "stop")
                     for text in (task.demonstration(s), _wrap("wrong"), task.demonstration(s))] for s in train]

    monkeypatch.setattr(run, "build_generator", lambda *a, **k: Scripted())
    model, tok = build_policy(cfg)
    metrics = run.warm_start(model, tok, task, train, cfg)
    assert metrics["sft_examples"] == 4.0 and math.isfinite(metrics["sft_loss"])  # one distinct kept per prompt

    class Nothing(Scripted):
        def generate(self, prompts: list[list[int]], params: Any) -> list[list[Generation]]:
            return [[Generation([5], [-0.1], "junk", "stop")] * params.n for _ in prompts]

    monkeypatch.setattr(run, "build_generator", lambda *a, **k: Nothing())
    with pytest.warns(RuntimeWarning, match="no sampled completion was accepted"):
        assert run.warm_start(model, tok, task, train, cfg) == {"sft_examples": 0.0}
    # A teacher directory samples instead of the policy.
    from llmrl.models.tiny import save_tiny_model

    teacher = save_tiny_model(tree / "teacher")
    used: list[Any] = []
    monkeypatch.setattr(run, "build_generator", lambda m, *a, **k: used.append(m) or Scripted())
    metrics = run.warm_start(model, tok, task, train, load_config(None, [*over, f"sft.teacher_path={teacher}"]))
    assert metrics["sft_examples"] == 4.0 and len(used) == 1 and used[0] is not model
    with pytest.raises(ConfigError, match="sft.source"):
        load_config(None, [*over, "sft.source=teacher"])
