r"""Curate a file of math problems into verifiable RL data, Big-Math style (Albalak et al., 2025, arXiv:2502.17387).

``llmrl data curate --input IN --output OUT`` (or :func:`curate_file`) reads a JSONL or parquet file of
problems and keeps those fit for RL with a verifiable reward. Steps, in order (each removes rows; the
report counts every step, and ``rows_in = rows_kept + sum(removed)``):

1. ``malformed``        lines that are not valid UTF-8 JSON objects, or rows without a question (a non-empty
                        string in the question column). Reported as ``file:line: reason`` (parquet: row
                        number) and skipped. Only when no line at all is a JSON object, or no row has a
                        question, is it an error (DataError, exit 2): the wrong file or the wrong column.
2. ``no_answer``        no gold answer can be extracted (:func:`llmrl.data.filters.answer_text`).
3. filters              ``language``, ``hyperlink``, ``multiple_choice``, ``yes_no``, ``true_false``,
                        ``multi_part``, ``proof`` (:mod:`llmrl.data.filters`; each can be skipped).
4. ``exact_duplicate``  same normalised question as an earlier row that passed the filters
                        (:mod:`llmrl.data.dedup`; the first occurrence wins).
5. ``near_duplicate``   character-shingle Jaccard ≥ threshold (default 0.7) with an earlier kept row, found
                        by MinHash-LSH; by default the gold answer and the question's numbers must
                        also agree.
6. ``unsolved``         fewer than ``min_correct`` (default 1) of ``k`` model rollouts are correct
                        (:mod:`llmrl.data.solvability`; needs a model, skipped with ``--no-solvability``).

Columns: the question is the first of ``prompt``, ``problem``, ``question`` holding a non-empty string
(or ``question_key``); the answer is ``answer`` if it yields one, else the ``\boxed{}`` of ``solution``
(or ``answer_key``, unwrapped the same way). Each kept row is written with all its input fields plus
``problem`` (the question), ``answer`` (the extracted gold) and ``prompt`` (the question followed by the
``math`` task's instruction, ``"Put your final answer within \boxed{}."`` by default), so the output is a
``task.train_file`` for the ``math`` task as is (or ``task.options.path`` with ``question_key: problem``).
With rollouts it also gets ``solve_rate`` (correct / k), ``rollouts`` (k) and ``difficulty`` (1 = easiest
.. 5 = hardest, solve-rate quintiles). The report (JSON, by default ``OUT`` with ``.report.json``) holds
the counts per step, the malformed lines, the options and timings. Output ``.parquet`` writes parquet;
``--rejected FILE`` writes every removed row with its ``line`` and ``removed_by`` step. A question ending
with a ``math`` task instruction has it removed first, so curating a curated file changes nothing.

Memory: :func:`curate_file` (what the CLI runs) streams. The input is read a JSONL line or ``batch_rows``
parquet rows at a time, two times (three with rollouts); what deduplication needs is spilled to a temporary
directory (under ``--work-dir``, removed at the end) and resolved there (:class:`llmrl.data.stream.SpilledDedup`):
memory holds a byte per input row, about 60 bytes per row that reaches deduplication, the LSH buckets
shared by several rows and one batch's arrays; the disk about 1 KB per row (the question, its shingle ids
and band hashes). ``benchmarks/curate_memory.py`` measured 194 MiB peak RSS for a 1 GiB JSONL file (1.51 M rows, 23%
duplicates; 11 min on a shared 2-core VM) and 118 MiB for 24 MiB, where the in-memory code took 625 MiB. The kept rows
are written at the end, atomically; parquet output is spooled as JSONL and converted in batches.
:func:`curate_records` is the same pipeline in memory (every row, shingle set and bucket held): the
streaming one gives identical results — kept rows and their order, rejected rows and their order, the
report but its timings (``tests/test_curate_streaming.py``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from llmrl.core.config import ConfigError
from llmrl.data.dedup import NearDuplicateIndex, normalize_text
from llmrl.data.filters import FILTERS, answer_text
from llmrl.data.solvability import GenerateFn, check_edges, difficulty, difficulty_edges, solve_counts
from llmrl.data.stream import AtomicLines, DedupResult, DiskStrings, SpilledDedup
from llmrl.tasks.io import DataError, write_jsonl
from llmrl.tasks.math_task import INSTRUCTIONS

QUESTION_KEYS = ("prompt", "problem", "question")
ANSWER_KEYS = ("answer", "solution")
STEPS = ("malformed", "no_answer", *FILTERS, "exact_duplicate", "near_duplicate", "unsolved")
MAX_LISTED = 1000  # malformed lines listed in the report (all are counted)
BATCH_ROWS = 8192  # rows per batch of the streaming passes (parquet output: 8 times this per batch)
_PASSED = 255  # pass-1 code of a row that reaches deduplication (else its step's index in STEPS)


@dataclass
class CurateOptions:
    """Options of the pipeline (the CLI flags map one to one)."""

    question_key: str | None = None  # None: first of QUESTION_KEYS with a non-empty string
    answer_key: str | None = None  # None: "answer", else the \boxed{} of "solution"
    skip_filters: tuple[str, ...] = ()  # names in FILTERS not applied
    max_non_ascii_ratio: float = 0.2  # language filter threshold
    exact_dedup: bool = True
    near_dedup: bool = True
    near_dup_threshold: float = 0.7
    near_dup_text_only: bool = False  # True: ignore gold answers and question numbers
    shingle_size: int = 5
    num_perm: int = 128
    instruction: str = "boxed"  # boxed | tagged | none: what is appended to the question in "prompt"
    rollouts: int = 64  # k
    min_correct: int = 1  # rows with fewer correct rollouts are removed (0 keeps all)
    difficulty_edges: list[float] | None = None  # None: quintiles of the kept solve rates
    seed: int = 0

    def check(self) -> CurateOptions:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        unknown = [f for f in self.skip_filters if f not in FILTERS]
        need(not unknown, f"unknown filter(s) {unknown}; valid: {list(FILTERS)}")
        need(0.0 <= self.max_non_ascii_ratio <= 1.0, f"max non-ASCII ratio must be in [0, 1], got {self.max_non_ascii_ratio}")
        need(0.0 < self.near_dup_threshold <= 1.0, f"near-dup threshold must be in (0, 1], got {self.near_dup_threshold}")
        need(self.shingle_size >= 1 and self.num_perm >= 1, "shingle size and num_perm must be >= 1")
        need(self.instruction in ("boxed", "tagged", "none"), f"instruction must be boxed, tagged or none, "
             f"got {self.instruction!r}")
        need(self.rollouts >= 1, f"rollouts must be >= 1, got {self.rollouts}")
        need(0 <= self.min_correct <= self.rollouts, f"min correct must be in [0, rollouts={self.rollouts}], "
             f"got {self.min_correct}")
        for key in (self.question_key, self.answer_key):
            need(key is None or (isinstance(key, str) and key != ""), "column names must be non-empty")
        if self.difficulty_edges is not None:
            try:
                self.difficulty_edges = check_edges(self.difficulty_edges)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return self

    def prompt(self, question: str) -> str:
        """The training prompt of a question (as :class:`~llmrl.tasks.math_task.MathTask` builds it)."""
        if self.instruction == "none":
            return question
        return f"{question}\n\n{INSTRUCTIONS[self.instruction]}"


@dataclass
class CurateResult:
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]  # input rows plus "line" and "removed_by" (malformed lines: line + error)
    report: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)


# -- reading --------------------------------------------------------------------------------------------
Record = tuple[int, dict[str, Any] | None, str | None]  # (line or row number, row, error)


def _plain(value: Any) -> Any:
    """A JSON-representable copy of a parquet value (numpy scalars/arrays, NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()  # numpy arrays and scalars
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def read_records(path: str | os.PathLike[str], *, batch_rows: int = BATCH_ROWS) -> Iterator[Record]:
    """Every row of a JSONL or parquet file as ``(number, row, None)``, or ``(number, None, error)`` for a
    line that is not a UTF-8 JSON object (blank lines are skipped; NaN/Infinity literals become null).
    Streams: JSONL a line at a time, parquet ``batch_rows`` rows at a time (the values ``pandas.read_parquet``
    gives for the whole file, :func:`llmrl.data.stream.iter_parquet_rows`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pandas  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise DataError(f"{path}: reading parquet needs pandas and pyarrow installed") from exc
        from llmrl.data.stream import iter_parquet_rows

        rows = iter_parquet_rows(path, batch_rows)
        i = 0
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except Exception as exc:  # pyarrow raises many types for a damaged file
                raise DataError(f"{path}: not a readable parquet file: {exc}") from None
            i += 1
            yield i, {str(k): _plain(v) for k, v in row.items()}, None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_constant=lambda _: None)
            except json.JSONDecodeError as exc:
                yield lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})"
                continue
            if isinstance(row, dict):
                yield lineno, row, None
            else:
                yield lineno, None, f"expected a JSON object, got {type(row).__name__}"


def question_of(row: dict[str, Any], key: str | None) -> str | None:
    """The stripped question text of a row (without a trailing ``math`` task instruction), or None."""
    for k in (key,) if key else QUESTION_KEYS:
        value = row.get(k)
        if isinstance(value, str) and value.strip():
            text = value.strip()
            for instruction in INSTRUCTIONS.values():  # a curated file's prompt: curating it again is a no-op
                text = text.removesuffix(instruction).rstrip()
            return text or None
    return None


def answer_of(row: dict[str, Any], key: str | None) -> str | None:
    """The gold answer of a row (see :func:`llmrl.data.filters.answer_text`), or None."""
    if key:
        return answer_text(row.get(key), solution=False)
    return answer_text(row.get("answer")) or answer_text(row.get("solution"), solution=True)


# -- the pipeline ---------------------------------------------------------------------------------------
class _Screen:
    """Steps 1-3 (malformed, no_answer, filters) one record at a time: counts every step, lists and reports
    the malformed lines; shared by the in-memory and the streaming pipeline."""

    def __init__(self, opts: CurateOptions, source: str, err: IO[str] | None, max_warnings: int) -> None:
        self.opts, self.source, self.err, self.max_warnings = opts, source, err, max_warnings
        self.counts = dict.fromkeys(STEPS, 0)
        self.malformed: list[dict[str, Any]] = []
        self.rows_in, self.objects = 0, 0
        self.filters = {name: fn for name, fn in FILTERS.items() if name not in opts.skip_filters}
        if "language" in self.filters:
            self.filters["language"] = partial(FILTERS["language"], max_ratio=opts.max_non_ascii_ratio)
        self.keys = [opts.question_key] if opts.question_key else list(QUESTION_KEYS)
        self.no_question = f"no question: none of the key(s) {self.keys} holds a non-empty string"

    def __call__(self, line: int, row: dict[str, Any] | None,
                 error: str | None) -> tuple[str | None, str | None, str | None, str | None]:
        """(the step removing the record or None, question, answer, malformed error); counts the step."""
        self.rows_in += 1
        self.objects += row is not None
        question = question_of(row, self.opts.question_key) if row is not None else None
        if row is None or question is None:
            error = error or self.no_question
            if len(self.malformed) < MAX_LISTED:
                self.malformed.append({"line": line, "error": error})
            if self.err is not None and self.counts["malformed"] < self.max_warnings:
                print(f"{self.source}:{line}: skipped: {error}", file=self.err)
            self.counts["malformed"] += 1
            return "malformed", None, None, error
        answer = answer_of(row, self.opts.answer_key)
        step = "no_answer" if answer is None else next(
            (name for name, fn in self.filters.items() if fn(question, answer)), None)
        if step is not None:
            self.counts[step] += 1
        return step, question, answer, None

    def finish(self) -> None:
        """After the last record: the summary warning, and the errors for a wrong file or column."""
        if self.err is not None and self.counts["malformed"] > self.max_warnings:
            print(f"{self.source}: ... {self.counts['malformed'] - self.max_warnings} more malformed line(s) "
                  "skipped", file=self.err)
        if self.rows_in and not self.objects:
            raise DataError(f"{self.source}: no line is a JSON object ({self.rows_in} malformed)")
        if self.objects and self.counts["malformed"] == self.rows_in:
            raise DataError(f"{self.source}: no row has a question in column(s) {self.keys}; pass the question column")


def _near_index(opts: CurateOptions) -> NearDuplicateIndex | None:
    return NearDuplicateIndex(opts.near_dup_threshold, opts.shingle_size, opts.num_perm, opts.seed,
                              opts.near_dup_text_only) if opts.near_dedup else None


def _solve(opts: CurateOptions, prompts: Sequence[str], golds: Sequence[str], generate: GenerateFn,
           progress: bool) -> list[int]:
    style = "tagged" if opts.instruction == "tagged" else "boxed"
    return solve_counts(prompts, golds, generate, opts.rollouts, style=style, progress=progress)


def _solvability(opts: CurateOptions, rates: list[float], edges: list[float], t1: float) -> dict[str, Any]:
    levels = [difficulty(r, edges) for r in rates]
    return {"rollouts": opts.rollouts, "min_correct": opts.min_correct,
            "mean_solve_rate": sum(rates) / len(rates) if rates else None, "difficulty_edges": edges,
            "edges_from": "options" if opts.difficulty_edges else "quintiles of the kept solve rates",
            "difficulty_counts": {str(b): sum(d == b for d in levels) for b in range(1, len(edges) + 2)},
            "seconds": round(time.perf_counter() - t1, 3)}


def _report(opts: CurateOptions, screen: _Screen, kept: int, index: NearDuplicateIndex | None, solving: bool,
            solv: dict[str, Any] | None, t0: float, filtered_seconds: float) -> dict[str, Any]:
    counts, rows_in = screen.counts, screen.rows_in
    enabled = {"malformed": True, "no_answer": True, **{f: f in screen.filters for f in FILTERS},
               "exact_duplicate": opts.exact_dedup, "near_duplicate": opts.near_dedup, "unsolved": solving}
    remaining, steps = rows_in, []
    for step in STEPS:
        remaining -= counts[step]
        steps.append({"step": step, "removed": counts[step], "remaining": remaining, "enabled": enabled[step]})
    assert remaining == kept, (remaining, kept)
    seconds = time.perf_counter() - t0
    return {
        "rows_in": rows_in, "rows_kept": kept, "removed": rows_in - kept, "steps": steps,
        "malformed_lines": screen.malformed, "malformed_listed_all": counts["malformed"] <= MAX_LISTED,
        "near_duplicate": None if index is None else {
            "threshold": opts.near_dup_threshold, "shingle_size": opts.shingle_size, "num_perm": opts.num_perm,
            "lsh_bands": index.bands, "lsh_rows": index.rows, "text_only": opts.near_dup_text_only},
        "solvability": solv,
        "options": asdict(opts),
        "seconds": {"total": round(seconds, 3), "filters_and_dedup": round(filtered_seconds, 3)},
        "rows_per_second_without_rollouts": round(rows_in / filtered_seconds, 1) if filtered_seconds > 0 else None,
    }


def curate_records(records: Iterable[Record], opts: CurateOptions, generate: GenerateFn | None = None, *,
                   source: str = "<input>", progress: bool = False, err: IO[str] | None = None,
                   max_warnings: int = 20) -> CurateResult:
    """Run the pipeline on ``records`` in memory (see the module docstring); ``generate`` None skips
    solvability. Holds every row, shingle set and LSH bucket: for small inputs and as the reference of the
    streaming :func:`curate_file`, which gives the same rows, rejections and counts in bounded memory."""
    opts.check()
    t0 = time.perf_counter()
    screen = _Screen(opts, source, err, max_warnings)
    counts = screen.counts
    rejected: list[dict[str, Any]] = []
    seen: set[str] = set()
    index = _near_index(opts)
    survivors: list[tuple[int, dict[str, Any], str, str]] = []

    def drop(step: str, line: int, row: dict[str, Any] | None, **extra: Any) -> None:
        counts[step] += 1
        rejected.append({**(row or {}), "line": line, "removed_by": step, **extra})

    for line, row, error in records:
        step, question, answer, error = screen(line, row, error)
        if step is not None:
            rejected.append({**(row or {}), "line": line, "removed_by": step,
                             **({"error": error} if step == "malformed" else {})})
            continue
        assert row is not None and question is not None and answer is not None
        if opts.exact_dedup:
            key = normalize_text(question)
            if key in seen:
                drop("exact_duplicate", line, row)
                continue
            seen.add(key)
        if index is not None:
            j, sim, state = index.find(question, answer)
            if j is not None:
                drop("near_duplicate", line, row, duplicate_of_line=survivors[j][0], jaccard=round(sim, 4))
                continue
            index.add(state)
        survivors.append((line, row, question, answer))
    screen.finish()

    kept = [{**row, "problem": q, "answer": a, "prompt": opts.prompt(q)} for _, row, q, a in survivors]
    filtered_seconds = time.perf_counter() - t0
    solv: dict[str, Any] | None = None
    if generate is not None and kept:
        t1 = time.perf_counter()
        correct = _solve(opts, [r["prompt"] for r in kept], [r["answer"] for r in kept], generate, progress)
        solved = []
        for (line, row, _, _), out, c in zip(survivors, kept, correct):
            if c < opts.min_correct:
                drop("unsolved", line, row, correct=c, rollouts=opts.rollouts)
            else:
                solved.append({**out, "solve_rate": c / opts.rollouts, "rollouts": opts.rollouts})
        edges = opts.difficulty_edges or difficulty_edges([r["solve_rate"] for r in solved])
        for r in solved:
            r["difficulty"] = difficulty(r["solve_rate"], edges)
        kept = solved
        solv = _solvability(opts, [r["solve_rate"] for r in kept], edges, t1)
    report = _report(opts, screen, len(kept), index, generate is not None, solv, t0, filtered_seconds)
    return CurateResult(kept=kept, rejected=rejected, report=report, counts=counts)


# -- the streaming pipeline -----------------------------------------------------------------------------
Fate = tuple[int, dict[str, Any] | None, str | None, str | None, str | None, dict[str, Any]]


def _replay(src: Path, codes: bytearray, found: DedupResult, screen: _Screen, batch_rows: int) -> Iterator[Fate]:
    """Read the input again: ``(line, row, removing step or None, question, answer, extra fields)`` of every
    record, from the pass-1 step codes and the dedup result."""
    changed = DataError(f"{src}: the input file changed during curation")
    key = screen.opts
    fates = found.fates()
    n = 0
    for line, row, error in read_records(src, batch_rows=batch_rows):
        if n >= len(codes):
            raise changed
        code, n = codes[n], n + 1
        if code != _PASSED:
            step = STEPS[code]
            yield line, row, step, None, None, {"error": error or screen.no_question} if step == "malformed" else {}
            continue
        fate = next(fates, None)
        question = question_of(row, key.question_key) if row is not None else None
        answer = answer_of(row, key.answer_key) if row is not None else None
        if fate is None or question is None or answer is None:
            raise changed
        yield line, row, fate[0], question, answer, fate[1]
    if n != len(codes) or next(fates, None) is not None:
        raise changed


def _write_parquet(spool: Path, path: Path, batch_rows: int) -> None:
    from llmrl.data.stream import write_parquet_rows

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write_parquet_rows(spool, tmp, batch_rows)
        os.replace(tmp, path)
    except (ValueError, TypeError, ImportError) as exc:
        raise DataError(f"{path}: cannot write parquet ({exc}); write .jsonl instead") from None
    finally:
        tmp.unlink(missing_ok=True)


def curate_stream(src: Path, dst: Path, opts: CurateOptions, generate: GenerateFn | None, work: Path, *,
                  rejected_path: Path | None = None, progress: bool = False, err: IO[str] | None = None,
                  batch_rows: int = BATCH_ROWS, max_warnings: int = 20) -> dict[str, Any]:
    """The pipeline in bounded memory, spilling to the directory ``work``: writes ``dst`` (and the rejected
    rows) and returns the report; the same rows, order, rejections and counts as :func:`curate_records`.

    Passes: (1) read the input, screen every record (steps 1-3) and queue the survivors' dedup keys on disk
    (:class:`llmrl.data.stream.SpilledDedup`; a byte per record stays in memory); (2) exact and near dedup
    from the spilled keys; (3, with rollouts) read the input again to spill the kept prompts and answers,
    and sample; (4) read the input again and write the kept and the rejected rows (rows removed for being
    unsolved last, as in memory). Parquet output is spooled as JSONL and converted in batches.
    """
    opts.check()
    t0 = time.perf_counter()
    screen = _Screen(opts, str(src), err, max_warnings)
    index = _near_index(opts)
    dedup = SpilledDedup(work, exact=opts.exact_dedup, index=index, batch_rows=batch_rows)
    codes = bytearray()
    try:
        for line, row, error in read_records(src, batch_rows=batch_rows):
            step, question, answer, _ = screen(line, row, error)
            if step is None:
                assert question is not None and answer is not None
                codes.append(_PASSED)
                dedup.add(line, question, answer)
            else:
                codes.append(STEPS.index(step))
        screen.finish()
        found = dedup.run()
    finally:
        dedup.close()
    counts = screen.counts
    counts["exact_duplicate"], counts["near_duplicate"] = found.exact_count, found.near_count
    survivors = len(dedup) - found.exact_count - found.near_count
    filtered_seconds = time.perf_counter() - t0

    correct: list[int] | None = None
    edges: list[float] = []
    solv: dict[str, Any] | None = None
    if generate is not None and survivors:
        t1 = time.perf_counter()
        prompts, golds = DiskStrings(work / "prompts.bin"), DiskStrings(work / "golds.bin")
        try:
            for _, _, step, question, answer, _ in _replay(src, codes, found, screen, batch_rows):
                if step is None:
                    assert question is not None and answer is not None
                    prompts.append(opts.prompt(question))
                    golds.append(answer)
            correct = _solve(opts, prompts, golds, generate, progress)
        finally:
            prompts.release()
            golds.release()
        rates = [c / opts.rollouts for c in correct if c >= opts.min_correct]
        counts["unsolved"] = len(correct) - len(rates)
        edges = opts.difficulty_edges or difficulty_edges(rates)
        solv = _solvability(opts, rates, edges, t1)

    parquet = dst.suffix.lower() in (".parquet", ".pq")
    spool = work / "kept.jsonl"
    writers = [AtomicLines(spool if parquet else dst)]
    if rejected_path is not None:
        writers += [AtomicLines(rejected_path), AtomicLines(work / "unsolved.jsonl")]
    kept, survivor = 0, 0
    try:
        for line, row, step, question, answer, extra in _replay(src, codes, found, screen, batch_rows):
            if step is not None:
                if rejected_path is not None:
                    writers[1].write({**(row or {}), "line": line, "removed_by": step, **extra})
                continue
            assert row is not None and question is not None and answer is not None
            out = {**row, "problem": question, "answer": answer, "prompt": opts.prompt(question)}
            if correct is not None:
                c, survivor = correct[survivor], survivor + 1
                if c < opts.min_correct:
                    if rejected_path is not None:
                        writers[2].write({**row, "line": line, "removed_by": "unsolved", "correct": c,
                                          "rollouts": opts.rollouts})
                    continue
                rate = c / opts.rollouts
                out = {**out, "solve_rate": rate, "rollouts": opts.rollouts, "difficulty": difficulty(rate, edges)}
            writers[0].write(out)
            kept += 1
        if rejected_path is not None:  # the unsolved rows come last, as in memory
            writers[2].file.close()
            with open(writers[2].tmp, encoding="utf-8") as f:
                shutil.copyfileobj(f, writers[1].file)
        writers[0].commit()
        if parquet:
            _write_parquet(spool, dst, 8 * batch_rows)
        if rejected_path is not None:
            writers[1].commit()
    finally:
        for w in writers:
            if not w.file.closed or Path(w.tmp).exists():
                w.discard()
    return _report(opts, screen, kept, index, generate is not None, solv, t0, filtered_seconds)


# -- files ----------------------------------------------------------------------------------------------
def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows held in memory (e.g. :attr:`CurateResult.kept`) as JSONL, or parquet for ``.parquet``."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        write_jsonl(path, rows)
        return
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except (ValueError, TypeError, ImportError) as exc:
        raise DataError(f"{path}: cannot write parquet ({exc}); write .jsonl instead") from None
    finally:
        tmp.unlink(missing_ok=True)


def default_report_path(output: str | os.PathLike[str]) -> Path:
    """``OUT`` with its suffix replaced by ``.report.json`` (``curated.jsonl`` -> ``curated.report.json``)."""
    out = Path(output)
    return out.with_name(f"{out.stem}.report.json")


def curate_file(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str],
                opts: CurateOptions | None = None, *, generate: GenerateFn | None = None,
                report_path: str | os.PathLike[str] | None = None,
                rejected_path: str | os.PathLike[str] | None = None, model: str | None = None,
                sampling: dict[str, Any] | None = None, progress: bool = False,
                err: IO[str] | None = None, quiet: bool = False, work_dir: str | os.PathLike[str] | None = None,
                batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """Curate ``input_path`` into ``output_path``; writes the report (and rejected rows); returns the report.
    ``model`` and ``sampling`` (the rollout settings) are only recorded in the report. Skipped lines are
    reported to ``err`` (default: the current ``sys.stderr``) unless ``quiet``. Runs in bounded memory
    (:func:`curate_stream`), spilling to a temporary directory under ``work_dir`` (default: the system's
    temporary directory), removed at the end; ``batch_rows`` rows are processed at a time."""
    err = None if quiet else err if err is not None else sys.stderr
    opts = (opts or CurateOptions()).check()
    src, dst = Path(input_path), Path(output_path)
    report_file = Path(report_path) if report_path else default_report_path(dst)
    others = [p for p in (dst, report_file, Path(rejected_path) if rejected_path else None) if p is not None]
    if any(p.resolve() == src.resolve() for p in others):
        raise ConfigError(f"an output path is the input file {src}; choose another --output/--report/--rejected")
    if len({p.resolve() for p in others}) < len(others):
        raise ConfigError("--output, --report and --rejected must be different files")
    with tempfile.TemporaryDirectory(prefix="llmrl-curate-", dir=work_dir) as work:
        result = curate_stream(src, dst, opts, generate, Path(work), progress=progress, err=err,
                               rejected_path=Path(rejected_path) if rejected_path else None, batch_rows=batch_rows)
    report = {"input": str(src), "output": str(dst), "report": str(report_file),
              "rejected": str(rejected_path) if rejected_path else None, "model": model, "sampling": sampling,
              **result}
    report_file.parent.mkdir(parents=True, exist_ok=True)
    report_file.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def format_report(report: dict[str, Any]) -> str:
    """The per-step counts as a text table (enabled steps only), plus difficulty buckets when present."""
    lines = [f"{'step':<18s} {'removed':>9s} {'remaining':>10s}", f"{'input':<18s} {'':>9s} {report['rows_in']:>10d}"]
    for s in report["steps"]:
        if s["enabled"]:
            lines.append(f"{s['step']:<18s} {s['removed']:>9d} {s['remaining']:>10d}")
    lines.append(f"{'kept':<18s} {'':>9s} {report['rows_kept']:>10d}")
    solv = report.get("solvability")
    if solv:
        edges = ", ".join(f"{e:.3f}" for e in solv["difficulty_edges"])
        mean = solv["mean_solve_rate"]
        lines.append(f"solve rate: mean {'n/a' if mean is None else f'{mean:.3f}'} over {solv['rollouts']} rollouts;"
                     f" difficulty edges [{edges}] ({solv['edges_from']})")
        lines.append("difficulty (1 = easiest): " + "  ".join(f"{b}: {n}" for b, n in solv["difficulty_counts"].items()))
    return "\n".join(lines)
