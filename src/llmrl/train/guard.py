"""What the training loops share around their steps: resuming from the latest checkpoint, the metrics log
with its step-0 ("before") evaluation, the guard against consecutive non-finite updates, and when to
evaluate / checkpoint.

Writing checkpoints stays in each trainer (what its ``state`` holds differs per trainer).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrl.core.errors import TrainingAborted
from llmrl.core.seed import set_rng_state
from llmrl.train.checkpoint import latest_checkpoint, load_checkpoint
from llmrl.train.metrics import MetricsLogger, read_metrics

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import torch


class BadSteps:
    """Counts consecutive skipped updates (non-finite loss or gradient norm) and raises
    :class:`~llmrl.core.errors.TrainingAborted` once there are ``limit`` (``optim.max_bad_steps``) in a row.
    ``count`` is checkpointed (``bad_steps``); ``checkpoints`` (the run's checkpoint directory) names the last
    good checkpoint in the message; with ``warn`` every skipped update warns (``RuntimeWarning``)."""

    def __init__(self, limit: int, checkpoints: str | Path | None = None, warn: bool = True,
                 where: str = "") -> None:
        self.limit, self.checkpoints, self.warn, self.where = limit, checkpoints, warn, where
        self.count = 0

    def __call__(self, ok: bool, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Record one update of step ``step`` (``ok``: it was applied; ``metrics``: its metrics, for the warning)."""
        self.count = 0 if ok else self.count + 1
        if not ok and self.warn:
            warnings.warn(f"step {step}: non-finite loss or gradient ({metrics}); update skipped "
                          f"({self.count} in a row)", RuntimeWarning, stacklevel=2)
        if self.count >= self.limit:
            last = f"; last good checkpoint: {latest_checkpoint(self.checkpoints)}" if self.checkpoints else ""
            raise TrainingAborted(f"{self.count} consecutive non-finite updates at step {step}{self.where}{last}")


def resume_state(out: str | Path, resume: bool, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, extra_models: Mapping[str, torch.nn.Module] | None = None) -> dict[str, Any] | None:
    """With ``resume``, the state of the latest checkpoint in ``<out>/checkpoints`` (model, optimizer, scheduler
    and ``extra_models`` restored in place, RNG states set); None when not resuming or nothing was saved."""
    ckpt = latest_checkpoint(Path(out) / "checkpoints") if resume else None
    if ckpt is None:
        return None
    state = load_checkpoint(ckpt, model, optimizer, scheduler, extra_models)
    set_rng_state(state["rng"])
    return state


def open_log(out: str | Path, state: dict[str, Any] | None,
             evaluate_before: Callable[[], dict[str, float]]) -> tuple[MetricsLogger, dict[str, Any]]:
    """(metrics log, the "before" evaluation record). A fresh run evaluates now and logs it at step 0; a
    resumed one (``state`` from :func:`resume_state`) appends after its step and reads step 0 back."""
    start = 0 if state is None else state["step"]
    log = MetricsLogger(out, resume_step=None if state is None else start)
    if start == 0:
        return log, log.log(0, evaluate_before(), kind="eval")
    return log, next((r for r in read_metrics(log.path, "eval") if r["step"] == 0), {})


def eval_due(step: int, every: int, last: int) -> bool:
    """Evaluate after ``step``? Every ``every`` steps (0: never), except the last (the final evaluation)."""
    return bool(every) and step % every == 0 and step != last


def save_due(step: int, every: int, last: int) -> bool:
    """Checkpoint after ``step``? Every ``every`` steps (0: never), and always after the last."""
    return bool(every and step % every == 0) or step == last


__all__ = ["BadSteps", "eval_due", "open_log", "resume_state", "save_due"]
