"""Data files are checked row by row when they are read, before any training work: a bad row stops the run
with ONE line naming FILE:LINE (exit 2); rows remember their line without the trainers seeing it."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any, Literal

import pytest
from conftest import TINY

from llmrl.cli.main import main
from llmrl.config import load_config
from llmrl.core.errors import DataError
from llmrl.models import build_char_tokenizer
from llmrl.tasks import get_task
from llmrl.tasks.base import TEXT, prompt_key
from llmrl.tasks.io import (
    conforms,
    describe,
    message_problem,
    origin_of,
    prompt_problem,
    read_jsonl,
    read_samples,
    sample_problem,
)
from llmrl.tasks.preference import PreferencePair, read_preference_pairs
from llmrl.train.build import demonstration_uses, read_sft_examples, read_task_samples, validate_tokenized
from llmrl.train.pairs import encode_pairs

GOOD = {"prompt": "1+2=", "answer": "3"}
BAD_LINE = 7


def write_rows(path: Path, bad: Any, good: Any = GOOD) -> Path:
    """Rows 1-6 and 8 good, line 3 blank (so line 7 is the 6th record), line 7 = ``bad`` (a raw string is
    written as is)."""
    lines = [json.dumps(good)] * 8
    lines[2] = ""
    lines[BAD_LINE - 1] = bad if isinstance(bad, str) else json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any training work: an RL / DPO optimizer step or an SFT run."""
    import llmrl.preference.dpo as dpo
    import llmrl.rl.loop as loop
    import llmrl.train.run as run

    calls: list[str] = []
    for module, name in ((loop, "optimizer_step"), (dpo, "pair_step"), (run, "run_sft")):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, lambda *a, _n=name, **k: calls.append(_n))
    return calls


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], where: str,
            calls: list[str]) -> str:
    """Run ``llmrl train`` (a tiny arithmetic recipe) and check it was refused with one line naming ``where``."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: {name: arithmetic}\n")
    out = tmp_path / "run"
    code = main(["train", str(recipe), *TINY, "steps=1", f"output_dir={out}", *overrides])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("llmrl: error: "), err
    assert f"{where}:" in lines[0] and "Traceback" not in err
    assert calls == []  # no training step ran
    # nothing written: needs build_run to create the output directory only after validation (train/run.py)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    return lines[0]


# -- task.train_file through the CLI: one test per kind of bad row ------------------------------------------

BAD_ROWS: dict[str, tuple[Any, str]] = {
    "empty_prompt": ({"prompt": "", "answer": "3"}, "the prompt is empty (key 'prompt')"),
    "null_prompt": ({"prompt": None, "answer": "3"}, "got null (key 'prompt')"),
    "number_prompt": ({"prompt": 42, "answer": "3"}, "got a number (key 'prompt')"),
    "dict_prompt": ({"prompt": {"text": "1+2="}, "answer": "3"}, "got an object (key 'prompt')"),
    "whitespace_prompt": ({"prompt": " \t\n ", "answer": "3"}, "whitespace only (key 'prompt')"),
    "message_without_content": ({"prompt": [{"role": "user"}], "answer": "3"},
                                "message 0 (role 'user') has no 'content' (key 'prompt')"),
    "message_null_content": ({"prompt": [{"role": "user", "content": None}], "answer": "3"},
                             "'content' must be a string, got null (key 'prompt')"),
    "message_not_a_dict": ({"prompt": [{"role": "system", "content": "hi"}, "1+2="], "answer": "3"},
                           "message 1 must be an object with 'role' and 'content', got a string (key 'prompt')"),
    "bad_role": ({"prompt": [{"role": "bot", "content": "1+2="}], "answer": "3"},
                 "message 0 has role 'bot'; expected one of 'system', 'user', 'assistant', 'tool'"),
    "role_not_a_string": ({"prompt": [{"role": 1, "content": "1+2="}], "answer": "3"},
                          "'role' must be a string, got a number"),
    "empty_message_list": ({"prompt": [], "answer": "3"}, "an empty list of messages (key 'prompt')"),
    "missing_answer": ({"prompt": "1+2="}, "missing (needed by task 'arithmetic'); present: 'prompt' (key 'answer')"),
    "null_answer": ({"prompt": "1+2=", "answer": None}, "expected str | int | float, got null (key 'answer')"),
    "bad_assistant_prefix": ({**GOOD, "assistant_prefix": 3}, "expected str, got a number 3 (key 'assistant_prefix')"),
    "not_an_object": ('[{"prompt": "1+2=", "answer": "3"}]', "expected a JSON object, got list"),
    "string_row": ('"1+2="', "expected a JSON object, got str"),
    "invalid_json": ('{"prompt": "1+2=", "answer": "3"', "invalid JSON"),
}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_bad_train_row_is_refused_with_file_and_line(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     no_training: list[str]) -> None:
    row, expected = BAD_ROWS[kind]
    data = write_rows(tmp_path / "train.jsonl", row)
    line = refused(tmp_path, capsys, [f"task.train_file={data}"], f"{data}:{BAD_LINE}", no_training)
    assert expected in line


def test_bad_test_file_row(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: list[str]) -> None:
    data = write_rows(tmp_path / "test.jsonl", {"prompt": [{"role": "user", "text": "1+2="}], "answer": "3"})
    line = refused(tmp_path, capsys, [f"task.test_file={data}"], f"{data}:{BAD_LINE}", no_training)
    assert "has no 'content'" in line


def test_task_specific_field_of_the_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               no_training: list[str]) -> None:
    good = {"prompt": "3 4>7:", "answer": "3+4", "numbers": [3, 4], "target": 7}
    data = write_rows(tmp_path / "cd.jsonl", {**good, "numbers": "3 4"}, good=good)
    line = refused(tmp_path, capsys, [f"task.train_file={data}", "task.name=countdown"], f"{data}:{BAD_LINE}",
                   no_training)
    assert "expected list[int], got a string '3 4' (key 'numbers')" in line


def test_sft_warm_start_needs_the_demonstration_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       no_training: list[str]) -> None:
    """Tagged arithmetic demonstrations write the expression out: with an SFT warm start on demonstrations the
    rows need operands and ops too (without one, prompt + answer is enough)."""
    good = {"prompt": "What is 1 + 2?", "answer": "3", "operands": [1, 2], "ops": ["+"]}
    data = write_rows(tmp_path / "t.jsonl", {"prompt": "What is 1 + 2?", "answer": "3"}, good=good)
    line = refused(tmp_path, capsys, [f"task.train_file={data}", "task.options={style: tagged}", "sft.steps=2"],
                   f"{data}:{BAD_LINE}", no_training)
    assert "(key 'operands')" in line
    task = get_task("arithmetic", style="tagged")
    assert len(read_task_samples(str(data), task)) == 7  # RL alone reads only the answer


def test_bad_sft_data_file_row(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: list[str]) -> None:
    data = write_rows(tmp_path / "sft.jsonl", {"prompt": "1+2="}, good={"prompt": "1+2=", "completion": "3"})
    line = refused(tmp_path, capsys, [f"sft.data_file={data}", "sft.steps=2"], f"{data}:{BAD_LINE}", no_training)
    assert "no completion to train on" in line and "(key 'completion')" in line


PAIR = {"prompt": "1+2=", "chosen": "3", "rejected": "4"}
BAD_PAIRS: dict[str, tuple[Any, str]] = {
    "empty_prompt": ({**PAIR, "prompt": "  "}, "column 'prompt': the prompt is empty"),
    "null_prompt": ({**PAIR, "prompt": None}, "column 'prompt' must be a string or a list of chat messages, got null"),
    "bad_role": ({**PAIR, "prompt": [{"role": "human", "content": "1+2="}]}, "message 0 has role 'human'"),
    "message_without_content": ({**PAIR, "prompt": [{"role": "user"}]}, "column 'prompt', message 0: expected"),
    "number_chosen": ({**PAIR, "chosen": 3}, "column 'chosen' must be a string or a list of chat messages"),
    "missing_rejected": ({"prompt": "1+2=", "chosen": "3"}, "missing column 'rejected'"),
    "empty_completion": ({**PAIR, "rejected": ""}, "column 'rejected' is an empty completion"),
    "not_an_object": ("[1, 2, 3]", "expected a JSON object, got list"),
}


@pytest.mark.parametrize("kind", list(BAD_PAIRS))
def test_bad_dpo_pair_row_is_refused_before_training(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     no_training: list[str]) -> None:
    row, expected = BAD_PAIRS[kind]
    data = write_rows(tmp_path / "pairs.jsonl", row, good=PAIR)
    line = refused(tmp_path, capsys, ["trainer=dpo", f"pref.train_file={data}", "sft.steps=2", "pref.batch_size=2",
                                      "pref.max_length=16", "pref.max_prompt_length=8"],
                   f"{data}:{BAD_LINE}", no_training)
    assert expected in line


def test_gvm_pairs_file_is_checked_before_the_warm_start(tmp_path: Path) -> None:
    from llmrl.train.build import check_data_files

    data = write_rows(tmp_path / "pairs.jsonl", {**PAIR, "prompt": []}, good=PAIR)
    cfg = load_config(None, ["trainer=dvpo_value", f"gvm.pairs_file={data}"])
    with pytest.raises(DataError, match=rf"^{data}:{BAD_LINE}: column 'prompt' is an empty list of messages$"):
        check_data_files(cfg)


def test_a_valid_file_with_chat_prompts_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rows carry their line, yet the run (and the metrics it writes) is the usual one."""
    chat = {"prompt": [{"role": "system", "content": "add"}, {"role": "user", "content": "1+2="}], "answer": "3"}
    data = write_rows(tmp_path / "train.jsonl", chat)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: {{name: arithmetic, train_file: {data}}}\n")
    out = tmp_path / "run"
    assert main(["train", str(recipe), *TINY, "steps=1", "eval.samples=0", "eval.pass_k=[1]",
                 f"output_dir={out}"]) == 0, capsys.readouterr().err
    assert (out / "summary.json").is_file()


# -- validators ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "problem"), [
    ("1+2=", None), (" x ", None), ([{"role": "user", "content": "hi"}], None),
    ([{"role": "system", "content": ""}, {"role": "user", "content": "hi", "name": "u"}], None),
    ("", "the prompt is empty"), ("  \n", "the prompt is whitespace only"), (None, "got null"),
    (3.5, "got a number"), (True, "got a boolean"), ({"role": "user"}, "got an object"),
    ([], "an empty list of messages"), (["hi"], "message 0 must be an object"),
    ([{"content": "hi"}], "message 0 has no 'role'"), ([{"role": "user"}], "has no 'content'"),
    ([{"role": "robot", "content": "hi"}], "has role 'robot'"),
    ([{"role": "user", "content": ["hi"]}], "'content' must be a string, got a list"),
    ([{"role": "system", "content": " "}, {"role": "user", "content": ""}], "every message of the prompt has empty"),
])
def test_prompt_problem(prompt: Any, problem: str | None) -> None:
    got = prompt_problem(prompt)
    assert got == problem if problem is None else (got is not None and problem in got and "\n" not in got)


def test_message_problem_accepts_every_role_of_the_templates() -> None:
    for role in ("system", "user", "assistant", "tool"):
        assert message_problem({"role": role, "content": ""}, 0) is None
    assert "has role 'developer'" in str(message_problem({"role": "developer", "content": "x"}, 2))


@pytest.mark.parametrize(("value", "spec", "ok"), [
    ("3", TEXT, True), (3, TEXT, True), (2.5, TEXT, True), (None, TEXT, False), (True, TEXT, False),
    ([3], TEXT, False), ({}, TEXT, False), (True, int, False), (3, float, True), (None, str | None, True),
    ([1, 2], list[int], True), ([1, "2"], list[int], False), ([1, True], list[int], False), ("12", list[int], False),
    ({"a": "knight"}, dict[str, str], True), ({"a": 1}, dict[str, str], False), (False, dict | bool, True),
    ("edit", Literal["repair", "edit"], True), ("fix", Literal["repair", "edit"], False), ([0.5, 1], list[float], True),
])
def test_conforms(value: Any, spec: Any, ok: bool) -> None:
    assert conforms(value, spec) is ok


def test_describe() -> None:
    assert describe(TEXT) == "str | int | float"
    assert describe(list[int]) == "list[int]" and describe(dict[str, str] | None) == "dict[str, str] | null"
    assert describe(Literal["a", "b"]) == "one of 'a', 'b'"


def test_sample_problem_names_the_key() -> None:
    assert sample_problem({"prompt": "p", "answer": 4}, {"answer": TEXT}) is None
    assert sample_problem({"answer": "4"}) == "missing the prompt; present: 'answer' (key 'prompt')"
    assert sample_problem({"prompt": "p", "x": 1}, {"answer": TEXT}, needed_by="task 't'") == (
        "missing (needed by task 't'); present: 'prompt', 'x' (key 'answer')")
    assert sample_problem({"prompt": "p", "ref_rewards": [1, "a"]}) == (
        "expected list[float], got a list [1, 'a'] (key 'ref_rewards')")
    assert sample_problem({"prompt": "p", "targets": 3}, {}, {"targets": dict | None}) is not None
    assert sample_problem({"prompt": "p", "targets": None}, {}, {"targets": dict | None}) is None


def test_tasks_declare_what_their_verifier_reads() -> None:
    """The answer is required only where the reward reads it; other fields with their types."""
    p = {"prompt": "x"}
    fields = {name: get_task(name).sample_fields(p)[0] for name in
              ("arithmetic", "countdown", "knights_knaves", "math", "json_schema", "translation")}
    assert fields["arithmetic"] == {"answer": TEXT} and fields["math"] == {"answer": TEXT}
    assert fields["countdown"] == {"numbers": list[int], "target": int}
    assert fields["knights_knaves"] == {"solution": dict[str, str]}  # the K&K reward never reads `answer`
    assert fields["json_schema"] == {"schema": dict | bool}
    assert get_task("knights_knaves").sample_fields(p, {"demonstration"})[0] == {
        "solution": dict[str, str], "answer": TEXT}
    assert get_task("arithmetic").sample_fields(p, {"demonstration"})[0] == {"answer": TEXT}
    assert set(get_task("arithmetic", style="tagged").sample_fields(p, {"demonstration"})[0]) == {
        "answer", "operands", "ops"}
    assert set(get_task("arithmetic").sample_fields(p, {"wrong_demonstration"})[0]) == {"answer", "operands", "ops"}
    assert get_task("translation", style="tagged").sample_fields(p, {"demonstration"})[0]["parts"] is dict
    hack = get_task("hackable", base="countdown", base_options={})
    assert hack.sample_fields(p)[0] == fields["countdown"]  # a wrapper reads what its base task reads


def test_code_repair_fields_follow_the_subtask(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f(a, b):\n    if a < b:\n        return a + b\n    return a - b\n")
    task = get_task("code_repair", source_dir=str(tmp_path))
    req = {s: set(task.sample_fields({"subtask": s})[0]) for s in ("repair", "file", "line")}
    assert req["repair"] == {"subtask", "files", "oracle_files"}
    assert req["file"] == {"subtask", "path", "candidates"}
    assert req["line"] == {"subtask", "path", "lines", "candidates"}
    required, _ = task.sample_fields({"subtask": "fix"})
    assert sample_problem({"prompt": "p", "subtask": "fix"}, required).startswith("expected one of 'repair'")
    sample = task.samples(1, "train")[0]
    assert sample_problem(sample, *task.sample_fields(sample, {"demonstration"})) is None  # generated rows pass


def test_generated_samples_pass_their_task_checks() -> None:
    for name in ("arithmetic", "countdown", "knights_knaves", "math", "json_schema", "translation"):
        task = get_task(name)
        for s in task.samples(3, "train"):
            assert sample_problem(s, *task.sample_fields(s, {"demonstration", "wrong_demonstration"})) is None, name


def test_rows_remember_their_line_and_nothing_else_changes(tmp_path: Path) -> None:
    row = {"prompt": [{"role": "user", "content": "1+2="}], "answer": "3", "n": [1, None]}
    path = write_rows(tmp_path / "t.jsonl", row, good=row)
    rows = read_samples(path)
    assert [origin_of(r) for r in rows] == [f"{path}:{n}" for n in (1, 2, 4, 5, 6, 7, 8)]
    r = rows[5]
    assert r == row and set(r) == set(row) and "origin" not in r  # not a key: prompts, JSON, hashes unchanged
    assert json.dumps(r) == json.dumps(row) and prompt_key(r["prompt"]) == prompt_key(row["prompt"])
    assert type(dict(r)) is dict and origin_of(dict(r)) is None and origin_of(row) is None
    for clone in (copy.deepcopy(r), pickle.loads(pickle.dumps(r)), copy.copy(r)):
        assert clone == row and origin_of(clone) == origin_of(r)
    assert read_jsonl(path) == [row] * 7


def test_reading_checks_every_row_at_once(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "t.jsonl", GOOD)
    with path.open("a") as f:  # only the last line is bad: the whole file is read before anything is returned
        f.write(json.dumps({"prompt": "", "answer": "3"}) + "\n")
    with pytest.raises(DataError, match=rf"^{path}:9: the prompt is empty \(key 'prompt'\)$"):
        read_samples(path)


def test_sft_examples_need_a_completion(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "s.jsonl", {"prompt": "1+2=", "completion": None}, good={"prompt": "p", "answer": 3})
    with pytest.raises(DataError, match=rf"{path}:{BAD_LINE}: expected str, got null \(key 'completion'\)"):
        read_sft_examples(str(path))


def test_demonstration_uses_follow_the_config() -> None:
    none: frozenset[str] = frozenset()
    both = frozenset({"demonstration", "wrong_demonstration"})
    assert demonstration_uses(load_config(None, [])) == (none, none)
    assert demonstration_uses(load_config(None, ["sft.steps=5"])) == (frozenset({"demonstration"}), none)
    assert demonstration_uses(load_config(None, ["sft.steps=5", "sft.noise=0.5"])) == (both, none)
    assert demonstration_uses(load_config(None, ["sft.steps=5", "sft.data_file=x.jsonl"])) == (none, none)
    assert demonstration_uses(load_config(None, ["trainer=dpo"])) == (both, both)
    assert demonstration_uses(load_config(None, ["trainer=dpo", "pref.train_file=p.jsonl"])) == (none, none)


# -- pair files ---------------------------------------------------------------------------------------------


def test_pairs_remember_their_line(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "p.jsonl", PAIR, good=PAIR)
    pairs = read_preference_pairs(path)
    assert pairs[5].origin == f"{path}:{BAD_LINE}"
    assert pairs[5] == PreferencePair("1+2=", "3", "4") and pairs[5].to_row() == PAIR  # not compared, not written
    bad = write_rows(tmp_path / "b.jsonl", {**PAIR, "assistant_prefix": ["x"]}, good=PAIR)
    with pytest.raises(DataError, match=rf"^{bad}:{BAD_LINE}: column 'assistant_prefix' must be a string"):
        read_preference_pairs(bad)


def test_encode_pairs_names_the_line_of_a_prompt_with_no_tokens(tmp_path: Path) -> None:
    tok = dropping_tokenizer()
    path = write_rows(tmp_path / "p.jsonl", {**PAIR, "prompt": "\u200b\u200b"}, good=PAIR)
    pairs = read_preference_pairs(path)
    with pytest.raises(DataError, match=rf"^{path}:{BAD_LINE}: the prompt is empty after tokenisation"):
        encode_pairs(tok, pairs, max_length=16, max_prompt_length=8)


# -- validate_tokenized -------------------------------------------------------------------------------------


def dropping_tokenizer() -> Any:
    """The char tokenizer, except that it drops zero-width spaces (as normalisers drop control characters)."""
    from tokenizers import normalizers

    tok = build_char_tokenizer()
    tok.backend_tokenizer.normalizer = normalizers.Replace("\u200b", "")
    assert tok.encode("\u200b", add_special_tokens=False) == []
    return tok


def test_validate_tokenized_accepts_good_samples_and_changes_nothing(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "t.jsonl", {"prompt": [{"role": "user", "content": "1+2="}], "answer": "3"})
    rows = read_samples(path)
    before = copy.deepcopy(rows)
    validate_tokenized(rows, build_char_tokenizer(), None, "task.train_file")
    validate_tokenized(get_task("arithmetic").samples(5), build_char_tokenizer(), None, "arithmetic")
    assert rows == before and [origin_of(r) for r in rows] == [origin_of(r) for r in before]


def test_validate_tokenized_prompt_the_tokenizer_drops(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "t.jsonl", {"prompt": "\u200b\u200b", "answer": "3"})
    rows = read_samples(path)  # text, so the file itself is fine
    with pytest.raises(DataError) as info:
        validate_tokenized(rows, dropping_tokenizer(), None, "task.train_file")
    assert str(info.value) == (f"{path}:{BAD_LINE}: the prompt is empty after tokenisation: the tokenizer drops "
                               "every character of it (key 'prompt')")


def test_validate_tokenized_names_generated_samples_by_source() -> None:
    samples = [{"prompt": "1+2=", "answer": "3"}, {"prompt": [{"role": "user", "content": "  "}], "answer": "3"}]
    with pytest.raises(DataError, match=r"^task arithmetic: sample 2: the prompt is empty or whitespace only"):
        validate_tokenized(samples, build_char_tokenizer(), None, "task arithmetic")


def test_validate_tokenized_chat_template_that_rejects_the_messages(tmp_path: Path) -> None:
    tok = build_char_tokenizer()
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tool "
                         "messages here') }}{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: ")
    good = {"prompt": [{"role": "user", "content": "1+2="}], "answer": "3"}
    path = write_rows(tmp_path / "t.jsonl", {**good, "prompt": [{"role": "tool", "content": "3"}]}, good=good)
    rows = read_samples(path)
    with pytest.raises(DataError, match=rf"^{path}:{BAD_LINE}: the tokenizer's chat template rejects the prompt: "
                                        r"no tool messages here \(key 'prompt'\)$"):
        validate_tokenized(rows, tok, None, "task.train_file")
    validate_tokenized(rows, tok, False, "task.train_file")  # model.chat_template=false: no template, no error
