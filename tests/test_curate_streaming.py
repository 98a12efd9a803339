"""The streaming `llmrl data curate` (curate_file) against the in-memory reference (curate_records)."""

from __future__ import annotations

import json
import random
import re
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmrl.data import stream
from llmrl.data.curate import CurateOptions, _write_rows, curate_file, curate_records, read_records
from llmrl.data.dedup import NearDuplicateIndex, _shingle_ids, near_form, shingle_arrays
from llmrl.data.stream import DiskStrings
from llmrl.tasks.math_task import TEMPLATES

FILLERS = ["Please", "Now,", "Quickly:", "Carefully", "In class,"]
BAD = [("Which of the following is prime? (A) 4 (B) 7", "B"), ("Is {n} even? Answer yes or no.", "yes"),
       ("Prove that {n} is odd.", "0"), ("See https://x.org/{n} and add 1.", "{n}")]


def make_lines(n: int, seed: int) -> list[str]:
    """JSONL lines: generated problems and many near duplicates of them (reworded, a number changed, the
    answer written another way, duplicates of duplicates), exact duplicates, filter hits, malformed lines."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    lines: list[str] = []
    while len(lines) < n:
        r = rng.random()
        if r < 0.35 or not rows:
            q, a, _ = TEMPLATES[rng.choice(list(TEMPLATES))](rng)
        elif r < 0.55:  # reworded: a word added, dropped or swapped (of any earlier row: chains)
            q, a = rng.choice(rows)
            words = q.split(" ")
            k = rng.randrange(len(words))
            op = rng.randrange(3)
            words = (words[:k] + [rng.choice(FILLERS)] + words[k:] if op == 0 else
                     words[:k] + words[k + 1 :] if op == 1 and len(words) > 3 else
                     words[:k] + [rng.choice(FILLERS)] + words[k + 1 :])
            q = " ".join(words)
        elif r < 0.67:  # a number changed, the answer kept or changed
            q, a = rng.choice(rows)
            q = re.sub(r"\d+", lambda m: str(int(m[0]) + rng.randint(1, 3)), q, count=1)
            a = a if rng.random() < 0.5 else f"{a}1"
        elif r < 0.74:  # exact duplicate: case, spaces, punctuation
            q, a = rng.choice(rows)
            q = "  " + q.upper().replace(" ", "  ").rstrip("?.")
        elif r < 0.80:  # the same answer written another way (answer_key: 1/2 = 0.5 = \frac{1}{2})
            q, a = rng.choice(rows)
            a = f"\\boxed{{{a}}}" if rng.random() < 0.5 else f"{a}.0" if a.isdigit() else a
        elif r < 0.88:
            q, a = rng.choice(BAD)
            k = str(rng.randrange(1000))
            q, a = q.replace("{n}", k), a.replace("{n}", k)
        elif r < 0.92:
            lines.append(rng.choice(['{"problem": "cut', '[1, 2]', '{"answer": "3"}', '{"problem": "Why?", "answer": ""}']))
            continue
        else:  # the answer only in a worked solution
            q, a = rng.choice(rows)
            lines.append(json.dumps({"question": q, "solution": f"So \\boxed{{{a}}}.", "id": len(lines)}))
            continue
        rows.append((q, a))
        lines.append(json.dumps({"problem": q, "answer": a, "id": len(lines)}, ensure_ascii=False))
    return lines


def reference(path: Path, opts: CurateOptions, generate: Any = None) -> tuple[list[str], list[str], dict[str, Any]]:
    """The in-memory pipeline's kept and rejected rows (as the JSONL lines written) and report."""
    res = curate_records(read_records(path), opts, generate, source=str(path))
    dump = [json.dumps(r, ensure_ascii=False, allow_nan=False) for r in res.kept]
    return dump, [json.dumps(r, ensure_ascii=False, allow_nan=False) for r in res.rejected], res.report


def streamed(path: Path, tmp: Path, opts: CurateOptions, generate: Any = None,
             batch_rows: int = 5) -> tuple[list[str], list[str], dict[str, Any]]:
    out, rejected = tmp / "out.jsonl", tmp / "rejected.jsonl"
    report = curate_file(path, out, opts, generate=generate, rejected_path=rejected, quiet=True,
                         work_dir=tmp, batch_rows=batch_rows)
    assert not [p for p in tmp.iterdir() if p.name.startswith("llmrl-curate-")]  # spill directory removed
    return out.read_text().splitlines(), rejected.read_text().splitlines(), report


def timeless(report: dict[str, Any]) -> dict[str, Any]:
    drop = {"seconds", "rows_per_second_without_rollouts", "input", "output", "report", "rejected", "model",
            "sampling"}
    out = {k: v for k, v in report.items() if k not in drop}
    if out.get("solvability"):
        out["solvability"] = {k: v for k, v in out["solvability"].items() if k != "seconds"}
    return out


def assert_same(path: Path, tmp: Path, opts: CurateOptions, **kw: Any) -> dict[str, Any]:
    ref_kept, ref_rejected, ref_report = reference(path, opts, kw.get("generate"))
    kept, rejected, report = streamed(path, tmp, opts, **kw)
    assert kept == ref_kept
    assert rejected == ref_rejected
    assert timeless(report) == timeless(ref_report)
    return ref_report


@pytest.fixture(scope="module")
def templated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text("\n".join(make_lines(700, seed=1)) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("opts", [
    CurateOptions(),
    CurateOptions(near_dup_text_only=True),
    CurateOptions(near_dup_threshold=0.5, shingle_size=3),
    CurateOptions(near_dup_threshold=0.9, exact_dedup=False),
    CurateOptions(near_dedup=False, skip_filters=("proof",)),
    CurateOptions(exact_dedup=False, near_dedup=False, num_perm=16),
], ids=["default", "text_only", "t0.5_k3", "t0.9_no_exact", "exact_only", "no_dedup"])
def test_streaming_equals_in_memory(templated: Path, tmp_path: Path, opts: CurateOptions) -> None:
    report = assert_same(templated, tmp_path, opts)
    removed = {s["step"]: s["removed"] for s in report["steps"]}
    if opts.near_dedup:
        assert removed["near_duplicate"] >= 40  # the data does exercise near dedup
    if opts.exact_dedup:
        assert removed["exact_duplicate"] >= 20


@pytest.mark.parametrize("text_only", [False, True])
def test_hash_collisions_change_nothing(templated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        text_only: bool) -> None:
    """With 3-bit hashes almost every pair of rows shares a bucket hash and many exact-key hashes collide:
    every candidate must be checked against the real keys to give the same result."""
    monkeypatch.setattr(stream, "HASH_BITS", 3)
    assert_same(templated, tmp_path, CurateOptions(near_dup_text_only=text_only), batch_rows=64)


@pytest.mark.parametrize("seed", [2, 3])
def test_other_seeds_and_batch_sizes(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(make_lines(400, seed)) + "\n", encoding="utf-8")
    for batch_rows in (1, 17, 10_000):
        (tmp_path / str(batch_rows)).mkdir()
        assert_same(path, tmp_path / str(batch_rows), CurateOptions(seed=seed), batch_rows=batch_rows)


def test_chain_of_near_duplicates_first_kept_wins(tmp_path: Path) -> None:
    """B is a near duplicate of A (removed), C of B but not of A: C is compared with kept rows only."""
    a = "Alice has 12 red apples and 7 green apples in her large basket. How many apples are there?"
    b = "Alice has 12 red apples and 7 green apples in her big basket. How many apples are there in total?"
    c = "Alice keeps 12 red apples and 7 green apples in her big basket. How many apples are there in total now?"
    path = tmp_path / "chain.jsonl"
    path.write_text("".join(json.dumps({"problem": q, "answer": "19"}) + "\n" for q in (a, b, c)))
    # Jaccard: a-b 0.73, b-c 0.81, a-c 0.58; at 0.7 b goes (a duplicate of a), c stays (a is the only kept row)
    report = assert_same(path, tmp_path, CurateOptions(near_dup_threshold=0.7), batch_rows=1)
    assert report["rows_kept"] == 2
    assert [json.loads(x)["problem"] for x in (tmp_path / "out.jsonl").read_text().splitlines()] == [a, c]


def test_solvability_matches(templated: Path, tmp_path: Path) -> None:
    def generate(prompts: list[str], k: int) -> list[list[str]]:  # deterministic per prompt
        out = []
        for p in prompts:
            r = random.Random(p)
            out.append([f"\\boxed{{{r.randrange(3)}}}" for _ in range(k)])
        return out

    report = assert_same(templated, tmp_path, CurateOptions(rollouts=4, min_correct=1), generate=generate)
    assert report["steps"][-1]["removed"] > 0 and report["solvability"]["difficulty_counts"]


def test_shingle_arrays_and_batched_signatures_equal_the_per_row_ones() -> None:
    rng = random.Random(0)
    alphabet = "ab c+-=()^0123456789éπ"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30))) for _ in range(500)]
    texts += [near_form(q) for q, _, _ in (TEMPLATES["linear"](rng) for _ in range(50))]
    index = NearDuplicateIndex(num_perm=64, seed=3)
    for size in (1, 2, 5):
        ids, offsets = shingle_arrays(texts, size)
        sigs = index.signatures(ids, offsets, max_cells=300)
        for i, t in enumerate(texts):
            assert ids[offsets[i] : offsets[i + 1]].tolist() == sorted(_shingle_ids(t, size))
            assert np.array_equal(sigs[i], index.signature(_shingle_ids(t, size)))


def test_exact_key_is_the_near_form_without_spaces() -> None:
    """SpilledDedup stores near_form only and derives the exact-duplicate key from it."""
    from llmrl.data.dedup import normalize_text

    rng = random.Random(1)
    alphabet = "aB 1.,;:!?$\\(){}\t\n\u00a0\u2003x=+-^é中"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(40))) for _ in range(3000)]
    texts += ["Compute \\dfrac{1}{2}\\,+\\left(1\\right), please.", "What is  $2.5 + 3$?"]
    assert all(normalize_text(t) == near_form(t).replace(" ", "") for t in texts)


def test_disk_strings(tmp_path: Path) -> None:
    texts = ["", "a", "αβ\ud800", "x" * 1000, "end"]
    d = DiskStrings(tmp_path / "s.bin")
    for t in texts:
        d.append(t)
    assert len(d) == 5 and d[1:4] == texts[1:4] and d[-1] == "end" and list(d) == texts and d[::2] == texts[::2]
    d.release()


# -- parquet ----------------------------------------------------------------------------------------------
def test_parquet_streaming_reader_equals_whole_file_pandas(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from llmrl.data.curate import _plain

    n = 40
    table = pa.table({
        "problem": [f"What is {i} + {i}?" if i % 7 else None for i in range(n)],
        "answer": pa.array([2 * i if i != 33 else None for i in range(n)], pa.int64()),  # null in the last group
        "votes": pa.array([[i, i + 1] if i != 35 else [None, 1] for i in range(n)], pa.list_(pa.int32())),
        "rate": [i / 3 if i % 5 else float("nan") for i in range(n)],
        "ok": [bool(i % 2) if i % 9 else None for i in range(n)],
        "tags": [["a", "b"][: i % 3] for i in range(n)],
        "count": pa.array(range(n), pa.int64()),
    })
    flat = tmp_path / "flat.parquet"
    pq.write_table(table, flat, row_group_size=16)
    nested = tmp_path / "nested.parquet"
    pq.write_table(table.append_column("meta", pa.array([{"k": i if i % 4 else None, "s": "x"} for i in range(n)])),
                   nested, row_group_size=16)
    ext = tmp_path / "ext.parquet"
    frame = pd.DataFrame({"problem": [f"q{i}?" for i in range(n)],
                          "answer": pd.array([i if i % 6 else None for i in range(n)], dtype="Int64")})
    frame.index = [f"r{i}" for i in range(n)]
    frame.to_parquet(ext, row_group_size=16)
    for path in (flat, nested, ext):
        expected = [(i, {str(k): _plain(v) for k, v in row.items()}, None)
                    for i, row in enumerate(pd.read_parquet(path).to_dict("records"), start=1)]
        for batch_rows in (3, 16, 1000):
            got = list(read_records(path, batch_rows=batch_rows))
            assert json.dumps(got) == json.dumps(expected), (path.name, batch_rows)


def test_parquet_in_and_out_equal_in_memory(templated: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = [json.loads(line) for line in templated.read_text().splitlines() if line.startswith('{"problem": "') and
            line.endswith("}")]
    for i, r in enumerate(rows):
        r["score"] = i if i % 50 else None  # an int column with a null: float64 in pandas
        r["tags"] = ["t", str(i % 3)][: i % 3]
    src = tmp_path / "in.parquet"
    pd.DataFrame(rows).to_parquet(src, row_group_size=100)
    opts = CurateOptions()
    res = curate_records(read_records(src), opts)
    _write_rows(tmp_path / "ref.parquet", res.kept)
    ref = pd.read_parquet(tmp_path / "ref.parquet")
    for batch_rows in (4, 10_000):  # 4: output written 32 rows at a time with a unified schema
        out = tmp_path / f"out{batch_rows}.parquet"
        report = curate_file(src, out, opts, quiet=True, batch_rows=batch_rows)
        assert timeless(report) == timeless(res.report)
        got = pd.read_parquet(out)
        assert list(got.columns) == list(ref.columns) and len(got) == len(ref) > 100
        pd.testing.assert_frame_equal(got, ref)


# -- memory ---------------------------------------------------------------------------------------------
def padded_file(path: Path, n: int) -> int:
    """``make_lines(n)`` with ~5 KB of notes per row; returns the file size."""
    rng = random.Random(5)
    out = []
    for line in make_lines(n, seed=5):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            row["notes"] = " ".join(rng.choice(FILLERS) for _ in range(600))
            line = json.dumps(row)
        out.append(line)
    path.write_text("\n".join(out) + "\n")
    return path.stat().st_size


def test_memory_does_not_grow_with_the_input(tmp_path: Path) -> None:
    """Python + numpy allocations (tracemalloc) while curating 600 and 1200 rows (3 and 6 MB): the streaming
    pipeline's peak barely moves (per row it keeps ~100 bytes; measured 1.35 and 1.41 MB, mostly one batch's
    signature matrix), the in-memory one's is above the input size (7 MB for the 3 MB file)."""
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    sizes = padded_file(small, 600), padded_file(large, 1200)
    opts = CurateOptions()
    curate_file(small, tmp_path / "o.jsonl", opts, quiet=True, work_dir=tmp_path, batch_rows=64)  # imports
    peaks = []
    tracemalloc.start()
    try:
        for path in (small, large):
            tracemalloc.reset_peak()
            curate_file(path, tmp_path / "o.jsonl", opts, quiet=True, work_dir=tmp_path, batch_rows=64)
            peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()
        res = curate_records(read_records(small), opts)
        in_memory_peak = tracemalloc.get_traced_memory()[1]
        del res
    finally:
        tracemalloc.stop()
    assert in_memory_peak > sizes[0]
    assert max(peaks) < in_memory_peak / 3, (peaks, in_memory_peak)  # a batch's arrays (batch_rows=64)
    assert peaks[1] - peaks[0] < 0.1 * (sizes[1] - sizes[0]), (peaks, sizes)


def test_cli_work_dir(templated: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from llmrl.cli.main import main

    work = tmp_path / "spill"
    work.mkdir()
    args = ["data", "curate", "--input", str(templated), "--output", str(tmp_path / "o.jsonl"), "--no-solvability"]
    assert main([*args, "--work-dir", str(work)]) == 0
    assert list(work.iterdir()) == []  # the spill directory was made there and removed
    assert (tmp_path / "o.jsonl").read_text().splitlines() == reference(templated, CurateOptions())[0]
    capsys.readouterr()
    assert main([*args, "--work-dir", str(tmp_path / "missing")]) == 2
    assert "--work-dir" in capsys.readouterr().err
