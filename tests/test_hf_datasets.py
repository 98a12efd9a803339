"""task.train_file / test_file (and sft.data_file, preference pairs) read Hugging Face ``datasets`` sources:
``save_to_disk`` directories (a DatasetDict's split by task.train_split / test_split), parquet and CSV through
``load_dataset(..., streaming=True)``, with task.columns renaming columns before every row is checked; errors
are one line naming the path, the row (1-based) and the column. Offline: nothing here touches the Hub."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY

from llmrl.cli.main import main
from llmrl.config import load_config
from llmrl.core.errors import ConfigError, DataError
from llmrl.tasks import get_task
from llmrl.tasks.io import origin_of, read_samples
from llmrl.tasks.preference import read_preference_pairs
from llmrl.train.build import build_data, read_sft_examples, read_task_samples

datasets = pytest.importorskip("datasets")

MAPPING = "task.columns={prompt: question, answer: final_answer}"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets.disable_progress_bars()


def renamed(n: int, split: str = "train", seed: int = 0) -> list[dict[str, Any]]:
    """Arithmetic samples with the columns a dataset on the Hub would have: question, final_answer, id."""
    samples = get_task("arithmetic").samples(n, split, seed)
    return [{"id": i, "question": s["prompt"], "final_answer": s["answer"]} for i, s in enumerate(samples)]


def save(rows: list[dict[str, Any]], path: Path) -> Path:
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text("task: {name: arithmetic}\n")
    return path


def train(tmp_path: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["train", str(recipe(tmp_path)), *TINY, "steps=2", "reward.workers=0",
                 f"output_dir={tmp_path / 'run'}", *overrides])
    return code, capsys.readouterr().err


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    """The run exits 2 with one line and writes nothing; returns the message after ``llmrl: error: ``."""
    code, err = train(tmp_path, capsys, *overrides)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("llmrl: error: ") and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()
    return lines[0].removeprefix("llmrl: error: ")


def train_steps(run: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("kind") == "train"]


def test_rl_trains_on_a_saved_dataset_with_renamed_columns(tmp_path: Path, capsys) -> None:
    train_dir = save(renamed(32), tmp_path / "data" / "train")
    test_dir = save(renamed(6, "test"), tmp_path / "data" / "test")
    code, err = train(tmp_path, capsys, f"task.train_file={train_dir}", f"task.test_file={test_dir}", MAPPING)
    assert code == 0, err
    assert len(train_steps(tmp_path / "run")) == 2
    cfg = load_config(str(tmp_path / "run" / "config.yaml"))
    assert cfg.task.columns == {"prompt": "question", "answer": "final_answer"}
    train_rows, test_rows = build_data(cfg, get_task("arithmetic"))
    assert len(train_rows) == 32 and len(test_rows) == 6
    first = renamed(32)[0]
    assert dict(train_rows[0]) == {"prompt": first["question"], "answer": first["final_answer"], "id": 0,
                                   "task": "arithmetic"}
    assert origin_of(train_rows[0]) == f"{train_dir}:row 1" and origin_of(test_rows[5]) == f"{test_dir}:row 6"


def test_parquet_with_chat_message_prompts_trains(tmp_path: Path, capsys) -> None:
    rows = [{"messages": [{"role": "system", "content": "add"}, {"role": "user", "content": r["question"]}],
             "final_answer": r["final_answer"]} for r in renamed(24)]
    path = tmp_path / "chat.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    samples = read_task_samples(str(path), get_task("arithmetic"), columns={"prompt": "messages",
                                                                            "answer": "final_answer"})
    assert samples[3]["prompt"] == rows[3]["messages"] and samples[3]["answer"] == rows[3]["final_answer"]
    assert origin_of(samples[3]) == f"{path}:row 4"
    code, err = train(tmp_path, capsys, f"task.train_file={path}", f"task.test_file={path}", "eval.size=4",
                      "task.columns={prompt: messages, answer: final_answer}")
    assert code == 0, err
    assert len(train_steps(tmp_path / "run")) == 2


def test_dataset_dict_splits(tmp_path: Path, capsys) -> None:
    root = tmp_path / "gsm"
    splits = {"train": renamed(10), "test": renamed(4, "test"), "validation": renamed(3, "test", seed=1)}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(root))
    cfg = load_config(str(recipe(tmp_path)), [*TINY, f"task.train_file={root}", f"task.test_file={root}", MAPPING])
    train_rows, test_rows = build_data(cfg, get_task("arithmetic"))
    assert [r["prompt"] for r in train_rows] == [r["question"] for r in splits["train"]]
    assert [r["prompt"] for r in test_rows] == [r["question"] for r in splits["test"]]
    assert origin_of(test_rows[0]) == f"{root / 'test'}:row 1"
    cfg = load_config(str(recipe(tmp_path)), [*TINY, f"task.train_file={root}", f"task.test_file={root}", MAPPING,
                                              "task.test_split=validation"])
    assert [r["prompt"] for r in build_data(cfg, get_task("arithmetic"))[1]] == [
        r["question"] for r in splits["validation"]]
    # a split's own directory is a Dataset directory too
    assert len(read_task_samples(str(root / "train"), get_task("arithmetic"),
                                 columns={"prompt": "question", "answer": "final_answer"})) == 10
    msg = refused(tmp_path, capsys, f"task.train_file={root}", f"task.test_file={root}", MAPPING,
                  "task.test_split=dev")
    assert msg == f"{root}: no split 'dev' (task.test_split); splits: train, test, validation"


def test_missing_mapped_column_is_named_with_the_columns_there(tmp_path: Path, capsys) -> None:
    path = save(renamed(8), tmp_path / "d")
    msg = refused(tmp_path, capsys, f"task.train_file={path}", "task.columns={prompt: problem, answer: final_answer}")
    assert msg == f"{path}: no column 'problem' (task.columns.prompt); columns: id, question, final_answer"
    msg = refused(tmp_path, capsys, f"task.train_file={path}")  # no mapping: the prompt field is missing
    assert msg.startswith(f"{path}:row 1: missing the prompt; present: 'id', 'question', 'final_answer'")


@pytest.mark.parametrize("bad, expected", [
    ({"question": ""}, "the prompt is empty (column 'question', mapped to 'prompt')"),
    ({"question": "   "}, "the prompt is whitespace only (column 'question', mapped to 'prompt')"),
    ({"question": None}, "column 'question' (mapped to 'prompt') is null"),
    ({"final_answer": None}, "column 'final_answer' (mapped to 'answer') is null"),
])
def test_bad_row_names_row_and_column(tmp_path: Path, capsys, bad: dict[str, Any], expected: str) -> None:
    rows = renamed(9)
    rows[6] = {**rows[6], **bad}  # row 7, 1-based
    path = save(rows, tmp_path / "d")
    assert refused(tmp_path, capsys, f"task.train_file={path}", MAPPING) == f"{path}:row 7: {expected}"


def test_bad_types_and_chat_messages_name_the_column(tmp_path: Path) -> None:
    task = get_task("arithmetic")
    columns = {"prompt": "msgs", "answer": "gold"}
    rows = [{"msgs": [{"role": "user", "content": "1+2="}], "gold": ["3"]}]
    with pytest.raises(DataError, match=r":row 1: expected str \| int \| float, got a list \['3'\] "
                                        r"\(column 'gold', mapped to 'answer'\)$"):
        read_task_samples(str(save(rows, tmp_path / "a")), task, columns=columns)
    rows = [{"msgs": [{"role": "user", "content": "1+2="}], "gold": "3"},
            {"msgs": [{"role": "robot", "content": "1+2="}], "gold": "3"}]
    with pytest.raises(DataError, match=r"^.*/b:row 2: message 0 has role 'robot'; expected one of 'system', "
                                        r"'user', 'assistant', 'tool' \(column 'msgs', mapped to 'prompt'\)$"):
        read_task_samples(str(save(rows, tmp_path / "b")), task, columns=columns)
    # struct columns give every message every key (None where a row had none): those keys are dropped
    rows = [{"msgs": [{"role": "user", "content": "1+2=", "name": "x"}], "gold": "3"},
            {"msgs": [{"role": "user", "content": "2+2="}], "gold": "4"}]
    samples = read_task_samples(str(save(rows, tmp_path / "c")), task, columns=columns)
    assert samples[1]["prompt"] == [{"role": "user", "content": "2+2="}]


def test_columns_on_jsonl_use_the_fast_path_and_keep_line_numbers(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in renamed(3)) + json.dumps({"question": "", "final_answer":
                                                                                   "1"}) + "\n")
    monkeypatch.setitem(sys.modules, "datasets", None)  # any import of datasets fails now
    with pytest.raises(DataError, match=rf"^{path}:4: the prompt is empty \(column 'question', mapped to "
                                        r"'prompt'\)$"):
        read_samples(path, columns={"prompt": "question"})
    path.write_text("".join(json.dumps(r) + "\n" for r in renamed(3)))
    rows = read_task_samples(str(path), get_task("arithmetic"), columns={"prompt": "question",
                                                                         "answer": "final_answer"})
    assert [origin_of(r) for r in rows] == [f"{path}:{n}" for n in (1, 2, 3)] and "question" not in rows[0]
    path.write_text(json.dumps({"q": "1+1="}) + "\n")
    with pytest.raises(DataError, match=rf"^{path}:1: no column 'question' \(task.columns.prompt\); "
                                        r"present: 'q'$"):
        read_samples(path, columns={"prompt": "question"}, columns_key="task.columns")
    with pytest.raises(ConfigError, match=r"^columns.prompt: expected a column name"):
        read_samples(path, columns={"prompt": ""})


def test_without_datasets_installed_a_dataset_source_names_the_extra(tmp_path: Path, capsys,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(renamed(4), tmp_path / "d")
    monkeypatch.setitem(sys.modules, "datasets", None)
    msg = refused(tmp_path, capsys, f"task.train_file={path}", MAPPING)
    assert msg == (f"{path}: reading a Hugging Face datasets directory, parquet or CSV file needs the 'datasets' "
                   "package: pip install 'llmrl[hf]'")


def test_not_a_dataset_directory_and_unreadable_parquet(tmp_path: Path, capsys) -> None:
    (tmp_path / "plain").mkdir()
    msg = refused(tmp_path, capsys, f"task.train_file={tmp_path / 'plain'}")
    assert msg.startswith(f"{tmp_path / 'plain'}: a directory, but not a Hugging Face datasets directory")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=rf"^{bad}"):
        read_samples(bad)


def test_csv_and_sft_data_file_from_parquet(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    datasets.Dataset.from_list(renamed(5)).to_csv(str(csv))
    rows = read_task_samples(str(csv), get_task("arithmetic"), columns={"prompt": "question",
                                                                        "answer": "final_answer"})
    assert [r["answer"] for r in rows] == [int(r["final_answer"]) for r in renamed(5)]  # pandas types the column
    assert origin_of(rows[4]) == f"{csv}:row 5"
    with pytest.raises(DataError, match=r"no column 'question' \(columns.prompt\); columns: a$"):
        (tmp_path / "other.csv").write_text("a\n1\n")
        read_samples(tmp_path / "other.csv", columns={"prompt": "question"})
    sft = tmp_path / "sft.parquet"
    datasets.Dataset.from_list([{"prompt": "1+1=", "completion": "2", "answer": None},  # null: absent
                                {"prompt": "2+2=", "completion": None, "answer": 4}]).to_parquet(str(sft))
    examples = read_sft_examples(str(sft))
    assert [dict(e) for e in examples] == [{"prompt": "1+1=", "completion": "2"}, {"prompt": "2+2=", "answer": 4}]


def test_preference_pairs_from_a_datasets_directory(tmp_path: Path) -> None:
    pairs = [{"prompt": [{"role": "user", "content": f"{i}+1="}], "chosen": str(i + 1), "rejected": str(i)}
             for i in range(4)]
    root = tmp_path / "pairs"
    data = datasets.Dataset.from_list(pairs)
    datasets.DatasetDict({"train": data, "test": data.select(range(2))}).save_to_disk(str(root))
    read = read_preference_pairs(root / "test")
    assert [p.chosen for p in read] == ["1", "2"] and read[1].origin == f"{root / 'test'}:row 2"
    assert read[0].prompt == [{"role": "user", "content": "0+1="}]
    with pytest.raises(DataError, match=rf"^{root}: a DatasetDict with splits train, test; point at one split's "
                                        rf"directory instead \(e.g. {root / 'train'}\)$"):
        read_preference_pairs(root)
    save([{**pairs[0], "rejected": pairs[0]["chosen"]}], tmp_path / "same")
    with pytest.raises(DataError, match=r"same:row 1: columns 'chosen' and 'rejected' are identical"):
        read_preference_pairs(tmp_path / "same")


def test_tokenisation_errors_name_the_mapped_column(tmp_path: Path) -> None:
    from tokenizers import normalizers

    from llmrl.models import build_char_tokenizer
    from llmrl.train.build import validate_tokenized

    tok = build_char_tokenizer()
    tok.backend_tokenizer.normalizer = normalizers.Replace("\u200b", "")  # drops zero-width spaces
    rows = [*renamed(2), {"id": 2, "question": "\u200b\u200b", "final_answer": "1"}]
    path = save(rows, tmp_path / "d")
    samples = read_task_samples(str(path), get_task("arithmetic"), columns={"prompt": "question",
                                                                            "answer": "final_answer"})
    with pytest.raises(DataError) as info:
        validate_tokenized(samples, tok, None, "task.train_file")
    assert str(info.value) == (f"{path}:row 3: the prompt is empty after tokenisation: the tokenizer drops every "
                               "character of it (column 'question', mapped to 'prompt')")
