"""Metrics to JSONL and to the trackers (TensorBoard, W&B, MLflow: :mod:`llmrl.train.trackers`); resumed runs drop
records past the checkpoint's step and never log a (step, kind) record twice (:meth:`MetricsLogger.once`)."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from llmrl.train.trackers import Tracker


def to_float(v: Any) -> float:
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().mean().item())
    return float(v)


def scalars(rec: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a record, without ``step`` and ``kind`` (what the trackers get)."""
    return {k: v for k, v in rec.items() if k not in ("step", "kind") and isinstance(v, float)}


class MetricsLogger:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors its scalars to ``trackers`` (default:
    TensorBoard in ``<out_dir>/tb`` when ``tensorboard``). A resumed run (``resume_step``) keeps the records up to
    that step; a tracker that cannot purge what it got past it (W&B, MLflow) is not sent those (step, kind)
    records again, and a tracker whose backend run is new first gets the kept records."""

    def __init__(self, out_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True,
                 trackers: Sequence[Tracker] | None = None) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._kept: dict[tuple[int, str], dict[str, Any]] = {}
        self._sent: set[tuple[int, str]] = set()  # logged past resume_step by an earlier invocation
        if resume_step is None:
            self.path.write_text("")
        else:
            self._truncate_after(resume_step)
        if trackers is None:
            from llmrl.train.trackers import TensorBoardTracker

            trackers = []
            if tensorboard:
                try:
                    trackers = [TensorBoardTracker(self.dir, resume_step)]
                except Exception:  # tensorboard missing or broken: JSONL still works
                    trackers = []
        self.trackers: list[Tracker] = list(trackers)
        if resume_step is not None:
            for t in [t for t in self.trackers if t.fresh]:
                for (step, kind), rec in self._kept.items():
                    self._send(t, step, kind, scalars(rec))

    def _truncate_after(self, step: int) -> None:
        """Keep only records up to ``step`` (a killed run may have logged past its last checkpoint)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if not isinstance(rec, dict):
                continue
            if rec.get("step", 0) <= step:
                kept.append(line)
                self._kept[(rec.get("step", 0), rec.get("kind", "train"))] = rec
            else:
                self._sent.add((rec.get("step", 0), rec.get("kind", "train")))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(x + "\n" for x in kept))
        os.replace(tmp, self.path)

    def once(self, step: int, kind: str, compute: Any) -> dict[str, Any]:
        """The ``kind`` record of ``step``: the one a resumed run already holds, else ``compute()`` logged now
        (a resumed finished run does not evaluate and log its final step twice)."""
        if (step, kind) in self._kept:
            return self._kept[(step, kind)]
        return self.log(step, compute(), kind=kind)

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> dict[str, float]:
        rec: dict[str, Any] = {"step": step, "kind": kind}
        for k, v in metrics.items():
            f = to_float(v)
            rec[k] = f if math.isfinite(f) else str(f)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
        values = scalars(rec)
        for t in list(self.trackers):
            if t.purges or t.fresh or (step, kind) not in self._sent:
                self._send(t, step, kind, values)
        return rec

    def _send(self, tracker: Tracker, step: int, kind: str, values: dict[str, float]) -> None:
        """``tracker.log``; one that fails warns once and gets nothing more this run (training goes on)."""
        try:
            tracker.log(step, kind, values)
        except Exception as exc:
            self.trackers.remove(tracker)
            warnings.warn(f"{tracker.name}: logging step {step} failed ({type(exc).__name__}: {exc}); no more "
                          f"metrics go there in this run (metrics.jsonl has them all)", RuntimeWarning, stacklevel=3)
            try:
                tracker.close()
            except Exception:
                pass

    def close(self) -> None:
        """Close the trackers (W&B run finished, MLflow run FINISHED); the JSONL file is complete already."""
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            try:
                t.close()
            except Exception as exc:  # a tracking server gone at the end must not lose the final model
                warnings.warn(f"{t.name}: closing failed ({type(exc).__name__}: {exc})", RuntimeWarning,
                              stacklevel=2)


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]
