"""Score a JSONL file of completions offline: ``llmrl reward TASK --input in.jsonl --output out.jsonl``.

Each input line is a task sample (``prompt``, ``answer`` and the task's other fields) plus ``completion``.
Each output line is the input plus ``reward`` and ``reward_components``. A bad line (invalid JSON, not an
object, no ``completion``) is reported with its line number and skipped; the file is never aborted.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from llmrl.rewards.base import combine_rewards, safe_check
from llmrl.tasks.base import Task


@dataclass
class ScoreSummary:
    scored: int = 0
    skipped: int = 0
    rewards: list[float] = field(default_factory=list)
    well_formed: int = 0
    correct: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        n = max(self.scored, 1)
        return {"scored": self.scored, "skipped": self.skipped, "mean_reward": sum(self.rewards) / n,
                "format_rate": self.well_formed / n, "accuracy": self.correct / n, "reward_failures": self.failures}

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
                failure_value: float = 0.0) -> ScoreSummary:
    """Score every line of ``lines`` into ``out``; problems go to ``err`` as ``source:line: message``."""
    fns, summary, err = task.reward_functions(), ScoreSummary(), err if err is not None else sys.stderr
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
        completion = row["completion"]
        outcome = combine_rewards(fns, completion, row, failure_value=failure_value)
        summary.failures += bool(outcome.failures)
        summary.scored += 1
        summary.rewards.append(outcome.total)
        summary.well_formed += safe_check(task.is_well_formed, completion, row)
        summary.correct += safe_check(task.is_correct, completion, row)
        out.write(json.dumps({**row, "reward": outcome.total, "reward_components": outcome.components}) + "\n")
    return summary


def score_file(task: Task, input_path: str | Path, output_path: str | Path, err: IO[str] | None = None,
               failure_value: float = 0.0) -> ScoreSummary:
    """Score ``input_path`` into ``output_path`` (written to a temporary file, then renamed)."""
    src, dst = Path(input_path), Path(output_path)
    if not src.is_file():
        raise FileNotFoundError(f"input file not found: {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        with open(src, encoding="utf-8", errors="replace") as fin, open(tmp, "w", encoding="utf-8") as fout:
            summary = score_lines(task, fin, fout, str(src), err, failure_value)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return summary
