"""What the training loops share around their steps: resuming from the latest checkpoint (and checking that it
belongs to this run's config), the metrics log with its step-0 ("before") evaluation, the guard against
consecutive non-finite updates, when to evaluate, and when to checkpoint (every N steps, every M minutes, after
the last step, and when SIGINT/SIGTERM asked the run to stop: :class:`Checkpoints`).

Writing checkpoints stays in each trainer (what its ``state`` holds differs per trainer).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrl.core.errors import CheckpointError, RunInterrupted, TrainingAborted
from llmrl.core.seed import set_rng_state
from llmrl.train.checkpoint import checkpoint_config, latest_checkpoint, load_checkpoint
from llmrl.train.distributed import agree_any
from llmrl.train.metrics import MetricsLogger, read_metrics
from llmrl.train.rundir import polling_stop, run_options, stop_requested, write_config

if TYPE_CHECKING:
    from collections.abc import Callable

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
                 scheduler: Any, extra_models: Mapping[str, torch.nn.Module] | None = None,
                 config: Mapping[str, Any] | None = None,
                 extra_optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> dict[str, Any] | None:
    """With ``resume``, the state of the latest checkpoint in ``<out>/checkpoints`` (model, optimizer, scheduler
    and ``extra_models`` restored in place, RNG states set); None when not resuming. Resuming with no checkpoint
    is a CheckpointError (never a silent restart); so is a checkpoint written under a ``config`` (the loop's
    resolved config as plain data) that differs in more than :data:`RESUMABLE_CHANGES`, unless the run was
    started with ``force`` (:func:`~llmrl.train.rundir.run_options`)."""
    if not resume:
        return None
    ckpt = check_resume(out, config, force=run_options().force) if config is not None else latest_checkpoint(
        Path(out) / "checkpoints")
    if ckpt is None:
        raise CheckpointError(f"--resume: no checkpoint in {Path(out) / 'checkpoints'}; nothing to resume (start "
                              f"the run without --resume)")
    state = load_checkpoint(ckpt, model, optimizer, scheduler, extra_models, extra_optimizers)
    set_rng_state(state["rng"])
    return state


RESUMABLE_CHANGES = frozenset({"output_dir", "steps", "log_every", "threads", "progress", "save_every",
                               "save_minutes", "keep_checkpoints", "online.iterations", "rm.max_steps", "logging"})
"""Config keys a resumed run may change (how long it runs and how it reports, not what it trains)."""


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs, except :data:`RESUMABLE_CHANGES` and keys
    the saved config does not have (added by a later llmrl: they take their value now)."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if name in RESUMABLE_CHANGES or key not in saved:
            continue
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_changes(a, b, f"{name}.")
        elif a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs


def check_resume(out: str | Path, config: Mapping[str, Any], force: bool = False) -> Path:
    """Before resuming ``out``: its latest checkpoint (a CheckpointError if there is none), written under a config
    that differs from ``config`` only in :data:`RESUMABLE_CHANGES` (else a CheckpointError listing the keys;
    ``force`` resumes anyway, with a warning)."""
    root = Path(out) / "checkpoints"
    ckpt = latest_checkpoint(root)
    if ckpt is None:
        raise CheckpointError(f"--resume: no checkpoint in {root}; nothing to resume (start the run without "
                              f"--resume, or with --overwrite to replace what is there)")
    saved = checkpoint_config(ckpt)
    if saved is None:
        warnings.warn(f"{ckpt} records no config (written by an older llmrl); it is resumed unchecked",
                      RuntimeWarning, stacklevel=2)
        return ckpt
    diffs = config_changes(saved, config)
    if diffs and not force:
        raise CheckpointError(f"--resume: {ckpt} was written under another config ({'; '.join(diffs[:5])}"
                              f"{'; ...' if len(diffs) > 5 else ''}); resume with the same config, or pass --force")
    if diffs:
        warnings.warn(f"--force: resuming {ckpt} under a changed config: {'; '.join(diffs)}", RuntimeWarning,
                      stacklevel=2)
    return ckpt


def open_log(out: str | Path, state: dict[str, Any] | None,
             evaluate_before: Callable[[], dict[str, float]], cfg: Any = None) -> tuple[MetricsLogger, dict[str, Any]]:
    """(metrics log, the "before" evaluation record). The run's inputs are valid by now: ``cfg``'s resolved
    config is written to ``config.yaml``. A fresh run evaluates now and logs it at step 0; a resumed one
    (``state`` from :func:`resume_state`) keeps the records up to its step and reads step 0 back. The metrics
    also go to the trackers ``cfg.logging`` enables (TensorBoard, W&B, MLflow: :mod:`llmrl.train.trackers`; a
    missing package is a ConfigError before ``config.yaml`` is written)."""
    from llmrl.train.distributed import NullLog, is_main
    from llmrl.train.trackers import check_trackers, open_trackers

    if not is_main():  # torchrun: only rank 0 writes config.yaml, metrics.jsonl and the trackers
        return NullLog(), {}  # type: ignore[return-value]
    logging_cfg = getattr(cfg, "logging", None)
    if logging_cfg is not None:
        check_trackers(logging_cfg)
    if cfg is not None:
        write_config(cfg)
    start = 0 if state is None else state["step"]
    resume_step = None if state is None else start
    trackers = open_trackers(cfg, out, resume_step) if logging_cfg is not None else None
    log = MetricsLogger(out, resume_step=resume_step, trackers=trackers)
    if start == 0:
        return log, log.log(0, evaluate_before(), kind="eval")
    return log, next((r for r in read_metrics(log.path, "eval") if r["step"] == 0), {})


def eval_due(step: int, every: int, last: int) -> bool:
    """Evaluate after ``step``? Every ``every`` steps (0: never), except the last (the final evaluation)."""
    return bool(every) and step % every == 0 and step != last


def save_due(step: int, every: int, last: int) -> bool:
    """Checkpoint after ``step``? Every ``every`` steps (0: never), and always after the last."""
    return bool(every and step % every == 0) or step == last


class Checkpoints:
    """When a loop checkpoints: after ``step`` when :func:`save_due` says so, when ``minutes`` (> 0) have passed
    since the last checkpoint (or the start), and when a SIGINT/SIGTERM asked the run to stop. ``write(step)``
    writes one and returns its path. After each step the loop calls :meth:`after_step`, which checkpoints if due
    and, on a stop request, raises :class:`~llmrl.core.errors.RunInterrupted` naming the checkpoint."""

    def __init__(self, write: Callable[[int], Path], every: int, minutes: float, last: int) -> None:
        self.write, self.every, self.minutes, self.last = write, every, minutes, last
        self.since = time.monotonic()

    def steps(self, start: int) -> Iterator[int]:
        """The loop's steps after ``start`` up to the last; after each one's body, :meth:`after_step`. Signals
        are honoured after a step while iterating (:func:`~llmrl.train.rundir.polling_stop`)."""
        with polling_stop():
            for step in range(start + 1, self.last + 1):
                yield step
                self.after_step(step)

    def after_step(self, step: int) -> Path | None:
        stop = stop_requested()
        timed = self.minutes > 0 and time.monotonic() - self.since >= 60 * self.minutes
        stop, timed = agree_any(stop, timed)  # torchrun: every rank checkpoints (a collective) or none does
        path = None
        if stop or timed or save_due(step, self.every, self.last):
            path = self.write(step)
            self.since = time.monotonic()
        if stop:
            raise RunInterrupted(f"{stop} after step {step}; checkpoint {path}; continue with --resume")
        return path


__all__ = ["RESUMABLE_CHANGES", "BadSteps", "Checkpoints", "check_resume", "config_changes", "eval_due",
           "open_log", "resume_state", "save_due"]
