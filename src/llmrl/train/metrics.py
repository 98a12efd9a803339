"""Metrics to JSONL and TensorBoard; resumed runs drop records past the checkpoint's step and never log a
(step, kind) record twice (:meth:`MetricsLogger.once`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch


def to_float(v: Any) -> float:
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().mean().item())
    return float(v)


class MetricsLogger:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, out_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._kept: dict[tuple[int, str], dict[str, Any]] = {}
        if resume_step is None:
            self.path.write_text("")
        else:
            self._truncate_after(resume_step)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=resume_step + 1 if resume_step else None)
            except Exception:  # tensorboard missing or broken: JSONL still works
                self._tb = None

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
            if isinstance(rec, dict) and rec.get("step", 0) <= step:
                kept.append(line)
                self._kept[(rec.get("step", 0), rec.get("kind", "train"))] = rec
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
        if self._tb is not None:
            for k, v in rec.items():
                if k not in ("step", "kind") and isinstance(v, float):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
        return rec

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]
