"""The run directory: claimed (locked) for the lifetime of a run, written only once the run is known to be valid,
and written atomically.

* :func:`claim_output` checks ``output_dir`` (not a file, not under a file, writable), creates it, takes an
  exclusive lock on it (``flock`` on the directory itself, so no lock file is written; a second run on the same
  directory is refused naming the holder's pid), removes the temporary files of dead processes, and refuses a
  directory that holds another run's outputs unless the run resumes it or ``overwrite`` deletes them first.
  Only llmrl's own outputs (:data:`RUN_OUTPUTS`) count and are ever deleted: a recipe or notes kept beside
  them are left alone.
* :func:`write_config` writes the resolved ``config.yaml``; trainers call it once their inputs (data, model,
  checkpoint) have been validated, so a refused command changes nothing.
* :func:`graceful_stop` turns the first SIGINT/SIGTERM into a request the training loops honour after the
  current step (checkpoint, then :class:`~llmrl.core.errors.RunInterrupted`); a second one stops at once.
"""

from __future__ import annotations

import contextvars
import errno
import fcntl
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmrl.core.config import to_dict
from llmrl.core.errors import RunDirError
from llmrl.core.procs import pid_alive

RUN_OUTPUTS = frozenset({
    "config.yaml", "metrics.jsonl", "tb", "checkpoints", "summary.json", "final_model", "sft_model", "rft_model",
    "critic_model", "value_model", "reward_model", "reference_model", "policies", "ref_logps.pt",
    "initial_eval_completions.json", "trackers.json", "wandb", "mlruns",
    "plot.png", "plot.html",
})
"""What llmrl writes into an output directory (only these are deleted by ``--overwrite``)."""

_TEMP = re.compile(r".+\.tmp(\d+)|\.tmp_step_\d+_(\d+)|\.latest_(\d+)|metrics\.tmp")


def _is_output(name: str) -> bool:
    return name in RUN_OUTPUTS or _TEMP.fullmatch(name) is not None



def clean_stale_temps(out: Path) -> list[Path]:
    """Remove the temporary files and directories of interrupted writes (``final_model.tmp123``,
    ``checkpoints/.tmp_step_000004_123``, ``checkpoints/.latest_123``) whose process is gone; returns them."""
    removed = []
    for d in (out, out / "checkpoints"):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            m = _TEMP.fullmatch(p.name)
            if m is None:
                continue
            pid = next((int(g) for g in m.groups() if g), None)
            if pid is not None and pid != os.getpid() and pid_alive(pid):
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _lock_holder(fd: int) -> str:
    """The pid holding the flock on the inode of ``fd`` (from /proc/locks on Linux), or a description."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == key:
                return f"pid {parts[4]}"
    except OSError:
        pass
    return "another process"


@dataclass
class OutputClaim:
    """An exclusive claim on an output directory (held while ``fd`` is open)."""

    path: Path
    fd: int
    created: bool

    def release(self) -> None:
        """Drop the lock; a directory this claim created and nothing was written to is removed again."""
        if self.fd < 0:
            return
        if self.created:
            try:
                self.path.rmdir()  # only if still empty: a refused command leaves nothing behind
            except OSError:
                pass
        os.close(self.fd)
        self.fd = -1


def _os_error(out: Path, what: str, exc: OSError) -> RunDirError:
    return RunDirError(f"output_dir {out}: cannot {what}: {exc.strerror or exc}")


def claim_output(output_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
                 outputs: tuple[str, ...] | None = None) -> OutputClaim:
    """Claim ``output_dir`` for a run (module docstring). Raises :class:`RunDirError` (one line) when it is a file
    or under one, cannot be created or written, is locked by another run, or holds another run's outputs and
    neither ``resume`` nor ``overwrite`` is set. ``outputs``: the only outputs that count (and that
    ``overwrite`` deletes), for a command writing just those (``llmrl sft``: ``sft_model``); default all."""
    out = Path(output_dir)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise RunDirError(f"output_dir {out}: {p} is a file, not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(out, "create it", exc) from None
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    claim = OutputClaim(out, fd, created)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"output_dir {out} is in use by another llmrl run ({_lock_holder(fd)}); wait for it "
                              f"to finish or choose another output_dir") from None
        if not os.access(out, os.W_OK) or os.statvfs(out).f_flag & os.ST_RDONLY:
            err = errno.EROFS if os.statvfs(out).f_flag & os.ST_RDONLY else errno.EACCES
            raise _os_error(out, "write to it", OSError(err, os.strerror(err)))
        clean_stale_temps(out)
        counted = (lambda name: name in outputs) if outputs is not None else _is_output
        found = sorted(p.name for p in out.iterdir() if counted(p.name))
        if found and not resume:
            if not overwrite and outputs is not None:
                raise RunDirError(f"output_dir {out} holds an earlier {', '.join(found)}; replace it with "
                                  f"--overwrite, or choose another output_dir")
            if not overwrite:
                raise RunDirError(f"output_dir {out} holds another run ({', '.join(found[:4])}"
                                  f"{', ...' if len(found) > 4 else ''}); continue it with --resume, delete it "
                                  f"with --overwrite, or choose another output_dir")
            for name in found:
                p = out / name
                try:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                except OSError as exc:
                    raise _os_error(out, f"delete {name} for --overwrite", exc) from None
    except BaseException:
        claim.release()
        raise
    return claim


def write_config(cfg: Any) -> Path:
    """Write the resolved config to ``<output_dir>/config.yaml`` (atomically)."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"config.yaml.tmp{os.getpid()}"
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, out / "config.yaml")
    return out / "config.yaml"


def apply_threads(cfg: Any) -> int:
    """Set torch's CPU threads for the run; returns the number. ``cfg.threads`` > 0: exactly that many; 0 (auto):
    :func:`auto_threads` for the model of ``cfg`` — the cores no other process is using, at most one per
    :data:`PARAMS_PER_THREAD` parameters, at least 1. torch's own default (every core) collapses on a busy
    machine: each parallel op waits for the thread whose core another process holds (benchmarks/busy_machine.py)."""
    import torch

    n = cfg.threads if cfg.threads > 0 else auto_threads(_model_params(cfg))
    torch.set_num_threads(n)
    return n


PARAMS_PER_THREAD = 250_000
"""Auto threads: one thread per this many model parameters at most (smaller ops gain less from a thread than
its synchronisation costs; the quickstart's 0.54M-parameter model gets 2, the tests' 24k-parameter ones 1)."""


def auto_threads(params: int | None = None) -> int:
    """CPU threads for a model of ``params`` parameters (None: no size limit): the cores this process may use
    (affinity, cgroup quota) less those other processes keep busy (:func:`_busy_cores`, counted from 0.4 of a
    core), at most ``params // PARAMS_PER_THREAD``, at least 1. Decided once, when the run starts."""
    import math

    free = _allowed_cores() - math.floor(_busy_cores() + 0.6)
    cap = max(1, params // PARAMS_PER_THREAD) if params is not None else free
    return max(1, min(free, cap))


def _allowed_cores() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:  # a container's CPU quota (cgroup v2): "max 100000" or "200000 100000" (= 2 cores)
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return n


def _busy_cores(sample: float = 0.2) -> float:
    """Cores busy with other processes' work: the larger of the CPU use measured over the next ``sample`` seconds
    (Linux ``/proc/stat``; this process sleeps meanwhile) and the 1-minute load average less this process's own
    share of it (about 1 - exp(-cpu_seconds / 60) for a process that has used ``cpu_seconds`` of one core)."""
    import math
    import resource
    import time

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own = 1.0 - math.exp(-(usage.ru_utime + usage.ru_stime) / 60.0)
    now = 0.0
    try:
        busy0, total0 = _cpu_ticks()
        time.sleep(sample)
        busy1, total1 = _cpu_ticks()
        if total1 > total0:
            now = (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)
    except (OSError, ValueError, IndexError):  # no /proc/stat (macOS): the load average alone
        pass
    return max(now, load - own, 0.0)


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from the first line of ``/proc/stat``."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(v) - v[3] - v[4], sum(v)


def _model_params(cfg: Any) -> int | None:
    """About how many parameters the run's model has: a model directory's weight files at 2 bytes a parameter,
    else the built-in tiny model's shape (embeddings left out); None when unknown."""
    model = getattr(cfg, "model", None)
    if model is None:
        return None
    if model.path:
        p = Path(model.path)
        files = [*p.glob("*.safetensors")] or [*p.glob("*.bin")]
        size = sum(f.stat().st_size for f in files if f.is_file())
        return size // 2 if size else None
    t = model.tiny
    return t.num_layers * (4 * t.hidden_size ** 2 + 3 * t.hidden_size * t.intermediate_size)


def prepare_output(cfg: Any) -> Path:
    """Create ``cfg.output_dir``, write the resolved ``config.yaml`` into it and apply ``cfg.threads`` (for
    trainers without a step loop; the others call :func:`write_config` after validating their inputs)."""
    apply_threads(cfg)
    write_config(cfg)
    return Path(cfg.output_dir)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write into; on success it replaces ``path`` by a rename,
    so ``path`` is never half written. On an error (a full disk included) the temporary one is removed and the
    old ``path`` is left as it was; a kill leaves a ``.tmpPID`` directory that the next claim removes."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


@dataclass(frozen=True)
class RunOptions:
    """How the current run was started (set by :func:`llmrl.trainers.run_trainer` for its duration)."""

    force: bool = False  # --force: resume even when the checkpoint's config differs


_OPTIONS: contextvars.ContextVar[RunOptions | None] = contextvars.ContextVar("llmrl_run_options", default=None)


def run_options() -> RunOptions:
    """The options of the run in progress (defaults outside :func:`llmrl.trainers.run_trainer`)."""
    return _OPTIONS.get() or RunOptions()


@contextmanager
def using_options(options: RunOptions) -> Iterator[None]:
    token = _OPTIONS.set(options)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


class _Stop:
    requested: str | None = None  # the signal's name once one arrived
    polling = 0  # loops that check ``requested`` after each step


_STOP = _Stop()


def stop_requested() -> str | None:
    """The name of the signal (SIGINT/SIGTERM) that asked the run to stop, or None."""
    return _STOP.requested


@contextmanager
def polling_stop() -> Iterator[None]:
    """A training loop that checks :func:`stop_requested` after every step (and checkpoints) runs inside this;
    outside, a signal stops the process at once as usual."""
    _STOP.polling += 1
    try:
        yield
    finally:
        _STOP.polling -= 1


def _handler(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if _STOP.requested is None and _STOP.polling:
        _STOP.requested = name
        print(f"\nllmrl: {name}: stopping after this step and writing a checkpoint (send it again to stop now, "
              f"without one)", file=sys.stderr, flush=True)
        return
    raise KeyboardInterrupt(name)


@contextmanager
def graceful_stop() -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for a run (main thread only; elsewhere a no-op)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _STOP.requested = None
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _STOP.requested = None


__all__ = ["RUN_OUTPUTS", "OutputClaim", "RunOptions", "apply_threads", "atomic_dir", "claim_output", "clean_stale_temps",
           "graceful_stop", "polling_stop", "prepare_output", "run_options", "stop_requested", "using_options",
           "write_config"]
