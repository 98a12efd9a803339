r"""Curate a file of math problems into verifiable RL data, Big-Math style (PAPERS.md §17).

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
4. ``exact_duplicate``  same normalised question as an earlier kept row (:mod:`llmrl.data.dedup`).
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
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from llmrl.core.config import ConfigError
from llmrl.data.dedup import NearDuplicateIndex, normalize_text
from llmrl.data.filters import FILTERS, answer_text
from llmrl.data.solvability import GenerateFn, check_edges, difficulty, difficulty_edges, solve_counts
from llmrl.tasks.io import DataError, write_jsonl
from llmrl.tasks.math_task import INSTRUCTIONS

QUESTION_KEYS = ("prompt", "problem", "question")
ANSWER_KEYS = ("answer", "solution")
STEPS = ("malformed", "no_answer", *FILTERS, "exact_duplicate", "near_duplicate", "unsolved")
MAX_LISTED = 1000  # malformed lines listed in the report (all are counted)


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


def read_records(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Every row of a JSONL or parquet file as ``(number, row, None)``, or ``(number, None, error)`` for a
    line that is not a UTF-8 JSON object (blank lines are skipped; NaN/Infinity literals become null)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise DataError(f"{path}: reading parquet needs pandas and pyarrow installed") from exc
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise DataError(f"{path}: not a readable parquet file: {exc}") from None
        for i, row in enumerate(frame.to_dict("records"), start=1):
            yield i, {str(k): _plain(v) for k, v in row.items()}, None
        return
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
def curate_records(records: Iterable[Record], opts: CurateOptions, generate: GenerateFn | None = None, *,
                   source: str = "<input>", progress: bool = False, err: IO[str] | None = None,
                   max_warnings: int = 20) -> CurateResult:
    """Run the pipeline on ``records`` (see the module docstring); ``generate`` None skips solvability."""
    opts.check()
    t0 = time.perf_counter()
    counts = dict.fromkeys(STEPS, 0)
    rejected: list[dict[str, Any]] = []
    malformed: list[dict[str, Any]] = []
    filters = {name: fn for name, fn in FILTERS.items() if name not in opts.skip_filters}
    if "language" in filters:
        filters["language"] = partial(FILTERS["language"], max_ratio=opts.max_non_ascii_ratio)
    seen: set[str] = set()
    index = NearDuplicateIndex(opts.near_dup_threshold, opts.shingle_size, opts.num_perm, opts.seed,
                               opts.near_dup_text_only) if opts.near_dedup else None
    survivors: list[tuple[int, dict[str, Any], str, str]] = []
    rows_in, objects = 0, 0

    def drop(step: str, line: int, row: dict[str, Any] | None, **extra: Any) -> None:
        counts[step] += 1
        rejected.append({**(row or {}), "line": line, "removed_by": step, **extra})

    for line, row, error in records:
        rows_in += 1
        objects += row is not None
        question = question_of(row, opts.question_key) if row is not None else None
        if row is None or question is None:
            keys = [opts.question_key] if opts.question_key else list(QUESTION_KEYS)
            error = error or f"no question: none of the key(s) {keys} holds a non-empty string"
            if len(malformed) < MAX_LISTED:
                malformed.append({"line": line, "error": error})
            if err is not None and counts["malformed"] < max_warnings:
                print(f"{source}:{line}: skipped: {error}", file=err)
            drop("malformed", line, row, error=error)
            continue
        answer = answer_of(row, opts.answer_key)
        if answer is None:
            drop("no_answer", line, row)
            continue
        hit = next((name for name, fn in filters.items() if fn(question, answer)), None)
        if hit is not None:
            drop(hit, line, row)
            continue
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
    if err is not None and counts["malformed"] > max_warnings:
        print(f"{source}: ... {counts['malformed'] - max_warnings} more malformed line(s) skipped", file=err)
    if rows_in and not objects:
        raise DataError(f"{source}: no line is a JSON object ({rows_in} malformed)")
    if objects and counts["malformed"] == rows_in:
        keys = [opts.question_key] if opts.question_key else list(QUESTION_KEYS)
        raise DataError(f"{source}: no row has a question in column(s) {keys}; pass the question column")

    kept = [{**row, "problem": q, "answer": a, "prompt": opts.prompt(q)} for _, row, q, a in survivors]
    filtered_seconds = time.perf_counter() - t0
    solv: dict[str, Any] | None = None
    if generate is not None and kept:
        t1 = time.perf_counter()
        style = "tagged" if opts.instruction == "tagged" else "boxed"
        correct = solve_counts([r["prompt"] for r in kept], [r["answer"] for r in kept], generate, opts.rollouts,
                               style=style, progress=progress)
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
        rates = [r["solve_rate"] for r in kept]
        solv = {"rollouts": opts.rollouts, "min_correct": opts.min_correct,
                "mean_solve_rate": sum(rates) / len(rates) if rates else None, "difficulty_edges": edges,
                "edges_from": "options" if opts.difficulty_edges else "quintiles of the kept solve rates",
                "difficulty_counts": {str(b): sum(r["difficulty"] == b for r in kept) for b in range(1, len(edges) + 2)},
                "seconds": round(time.perf_counter() - t1, 3)}

    enabled = {"malformed": True, "no_answer": True, **{f: f in filters for f in FILTERS},
               "exact_duplicate": opts.exact_dedup, "near_duplicate": opts.near_dedup,
               "unsolved": generate is not None}
    remaining, steps = rows_in, []
    for step in STEPS:
        remaining -= counts[step]
        steps.append({"step": step, "removed": counts[step], "remaining": remaining, "enabled": enabled[step]})
    assert remaining == len(kept), (remaining, len(kept))
    seconds = time.perf_counter() - t0
    report = {
        "rows_in": rows_in, "rows_kept": len(kept), "removed": rows_in - len(kept), "steps": steps,
        "malformed_lines": malformed, "malformed_listed_all": counts["malformed"] <= MAX_LISTED,
        "near_duplicate": None if index is None else {
            "threshold": opts.near_dup_threshold, "shingle_size": opts.shingle_size, "num_perm": opts.num_perm,
            "lsh_bands": index.bands, "lsh_rows": index.rows, "text_only": opts.near_dup_text_only},
        "solvability": solv,
        "options": asdict(opts),
        "seconds": {"total": round(seconds, 3), "filters_and_dedup": round(filtered_seconds, 3)},
        "rows_per_second_without_rollouts": round(rows_in / filtered_seconds, 1) if filtered_seconds > 0 else None,
    }
    return CurateResult(kept=kept, rejected=rejected, report=report, counts=counts)


# -- files ----------------------------------------------------------------------------------------------
def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
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
                err: IO[str] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Curate ``input_path`` into ``output_path``; writes the report (and rejected rows); returns the report.
    ``model`` and ``sampling`` (the rollout settings) are only recorded in the report. Skipped lines are
    reported to ``err`` (default: the current ``sys.stderr``) unless ``quiet``."""
    err = None if quiet else err if err is not None else sys.stderr
    opts = (opts or CurateOptions()).check()
    src, dst = Path(input_path), Path(output_path)
    report_file = Path(report_path) if report_path else default_report_path(dst)
    others = [p for p in (dst, report_file, Path(rejected_path) if rejected_path else None) if p is not None]
    if any(p.resolve() == src.resolve() for p in others):
        raise ConfigError(f"an output path is the input file {src}; choose another --output/--report/--rejected")
    if len({p.resolve() for p in others}) < len(others):
        raise ConfigError("--output, --report and --rejected must be different files")
    result = curate_records(read_records(src), opts, generate, source=str(src), progress=progress, err=err)
    _write_rows(dst, result.kept)
    if rejected_path:
        write_jsonl(rejected_path, result.rejected)
    report = {"input": str(src), "output": str(dst), "report": str(report_file),
              "rejected": str(rejected_path) if rejected_path else None, "model": model, "sampling": sampling,
              **result.report}
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
