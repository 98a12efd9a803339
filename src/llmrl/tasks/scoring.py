"""Score a JSONL file of completions offline: ``llmrl reward TASK --input in.jsonl --output out.jsonl``.

Each input line is a task sample (``prompt``, ``answer`` and the task's other fields) plus ``completion``.
Each output line is the input plus ``reward`` and ``reward_components``. A bad line (invalid JSON, not an
object, no ``completion``) is reported with its line number and skipped; the file is never aborted.
The reward functions run in a :class:`~llmrl.rewards.pool.RewardPool` (``--workers``, ``--timeout``), a
batch of lines at a time: a reward that hangs, crashes its worker or returns a non-number scores the failure
value and is counted by name (``reward_failures/<name>``, ``reward_timeouts`` in the summary).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from llmrl.rewards.pool import PoolOptions, RewardPool, task_calls
from llmrl.tasks.base import Task


@dataclass
class ScoreSummary:
    scored: int = 0
    skipped: int = 0
    rewards: list[float] = field(default_factory=list)
    well_formed: int = 0
    correct: int = 0
    failures: int = 0  # lines with any failed component
    failed: Counter[str] = field(default_factory=Counter)  # lines whose component failed, by reward name
    timeouts: int = 0  # components that ran out of time

    def as_dict(self) -> dict[str, Any]:
        n = max(self.scored, 1)
        return {"scored": self.scored, "skipped": self.skipped, "mean_reward": sum(self.rewards) / n,
                "format_rate": self.well_formed / n, "accuracy": self.correct / n, "reward_failures": self.failures,
                "reward_timeouts": self.timeouts, **{f"reward_failures/{k}": v for k, v in sorted(self.failed.items())}}

    def histogram(self, bins: int = 10, width: int = 40) -> str:
        """A text histogram of the rewards."""
        if not self.rewards:
            return "(no rewards)"
        lo, hi = min(self.rewards), max(self.rewards)
        span = (hi - lo) or 1.0
        counts = [0] * bins
        for r in self.rewards:
            counts[min(int((r - lo) / span * bins), bins - 1)] += 1
        top = max(counts)
        rows = []
        for i, c in enumerate(counts):
            left = lo + span * i / bins
            rows.append(f"{left:9.3f} | {'#' * round(width * c / top):{width}s} {c}")
        return "\n".join(rows)


def score_lines(task: Task, lines: IO[str], out: IO[str], source: str, err: IO[str] | None = None,
                failure_value: float = 0.0, options: PoolOptions | None = None,
                batch_size: int = 256) -> ScoreSummary:
    """Score every line of ``lines`` into ``out`` (in order, ``batch_size`` lines per pool call); problems go
    to ``err`` as ``source:line: message``. ``options``: the reward pool's (None = its defaults)."""
    summary, err = ScoreSummary(), err if err is not None else sys.stderr
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        outcomes = pool.score([row["completion"] for row in batch], batch, failure_value=failure_value, checks=True)
        for row, outcome in zip(batch, outcomes, strict=True):
            summary.failures += bool(outcome.failures)
            summary.failed.update(outcome.failed)
            summary.timeouts += len(outcome.timed_out)
            summary.scored += 1
            summary.rewards.append(outcome.total)
            summary.well_formed += outcome.checks["well_formed"]
            summary.correct += outcome.checks["correct"]
            out.write(json.dumps({**row, "reward": outcome.total, "reward_components": outcome.components}) + "\n")
        batch.clear()

    with RewardPool(lambda: task_calls(task), options) as pool:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                print(f"{source}:{lineno}: skipped: invalid JSON: {exc.msg} (column {exc.colno})", file=err)
                summary.skipped += 1
                continue
            if not isinstance(row, dict) or not isinstance(row.get("completion"), str):
                what = "not a JSON object" if not isinstance(row, dict) else "no string 'completion' field"
                print(f"{source}:{lineno}: skipped: {what}", file=err)
                summary.skipped += 1
                continue
            batch.append(row)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    return summary


def score_file(task: Task, input_path: str | Path, output_path: str | Path, err: IO[str] | None = None,
               failure_value: float = 0.0, options: PoolOptions | None = None) -> ScoreSummary:
    """Score ``input_path`` into ``output_path`` (written to a temporary file, then renamed)."""
    src, dst = Path(input_path), Path(output_path)
    if not src.is_file():
        raise FileNotFoundError(f"input file not found: {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        with open(src, encoding="utf-8", errors="replace") as fin, open(tmp, "w", encoding="utf-8") as fout:
            summary = score_lines(task, fin, fout, str(src), err, failure_value, options)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return summary
