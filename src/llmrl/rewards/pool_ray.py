"""The Ray backend of :class:`llmrl.rewards.pool.RewardPool` (``PoolOptions(backend="ray")``): each
reward-function call is one Ray task, with the process pool's results and failure rules (see
:mod:`llmrl.rewards.pool`).

* The pool's functions (a snapshot, like a fork) are cloudpickled into the object store once and reused while
  their names stay the same; functions that cannot be pickled are scored in the calling process, with a
  warning (the process pool does the same for samples it cannot send).
* At most ``workers`` tasks run at once; each reserves ``worker_cpus`` CPUs, so Ray may place them on any
  node of the cluster.
* In the task: ``timeout`` by ``ITIMER_REAL`` (a Python-level stop: the call fails as a timeout), minus the
  time the worker waited for a CPU (``/proc/thread-self/schedstat``, up to ``LOAD_GRACE`` × ``timeout`` of wall
  clock, as in the process pool); in the
  caller, a task still running ``LOAD_GRACE`` × ``timeout`` per call + :data:`START_GRACE` seconds after it was sent
  (a loop in C holding the GIL ignores the timer) is killed with ``ray.cancel(force=True)``: a timeout too.
* Calls go in chunks (one Ray task each, like the process pool's jobs). Tasks are never retried by Ray
  (``max_retries=0``): when a worker dies (``os._exit``, a signal, the memory bound ``RLIMIT_AS`` = the worker's
  size at its first call + ``memory_mb``) its chunk is re-sent one call per task, so only the call that killed
  it fails, exactly once, as in the process pool.

Ray is imported here only: ``pip install 'llmrl[ray]'``.
"""

from __future__ import annotations

import signal
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

START_GRACE = 300.0
"""Seconds a task may wait for Ray to start its worker process before the caller's watchdog counts: the
watchdog is the backstop for calls that ignore their timer (C code holding the GIL); starting a Ray worker on a
loaded machine took over 40 s here, and a watchdog that counts it kills healthy calls."""


class _Timeout(BaseException):
    """Raised in a reward call by its timer (a BaseException: the call's own ``except Exception`` lets it by)."""


_LIMITED = False  # the memory bound is set once per Ray worker process


def _waited() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (``/proc/thread-self/schedstat``; 0 elsewhere)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _remote_call(fns: list[tuple[int, Callable[..., Any]]], k: int, completion: str, sample: Mapping[str, Any],
                 timeout: float, memory_mb: int) -> tuple[Any, str | None, bool]:
    """One reward call in a Ray worker: (value, error, timed_out)."""
    global _LIMITED
    from llmrl.rewards.pool_workers import _limit_memory, call

    if not _LIMITED:
        _limit_memory(memory_mb)
        _LIMITED = True
    from llmrl.rewards.pool import LOAD_GRACE

    kind, fn = fns[k]
    fired: list[bool] = []
    start, waited0, credit = time.monotonic(), _waited(), [0.0]

    def alarm(*_a: object) -> None:
        # as the process pool: time spent waiting for a CPU does not count, up to LOAD_GRACE x timeout of wall
        extra = _waited() - waited0 - credit[0]
        if extra > 1e-3 and time.monotonic() - start + extra < LOAD_GRACE * timeout:
            credit[0] += extra
            signal.setitimer(signal.ITIMER_REAL, extra)
            return
        fired.append(True)
        raise _Timeout

    try:
        old = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    except ValueError:  # not the main thread of the worker: the caller's watchdog is the only bound
        old = None
    try:
        value, err = call(kind, fn, completion, sample)  # safe_score turns the _Timeout into an error
    except _Timeout:
        value, err = None, "timed out"
    finally:
        if old is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    if fired:
        return None, f"timed out after {timeout:g} s", True
    return value, err, False


@dataclass
class RayCalls:
    """A pool's functions in the object store, and the remote function that runs them."""

    names: list[tuple[int, str]]
    ref: Any  # ObjectRef of [(kind, fn)]
    remote: Any  # ray.remote(_remote_call).options(...)


def _prepare(pool: Any, names: list[tuple[int, str]], table: list[tuple[int, str, Callable[..., Any]]]) -> RayCalls | None:
    import ray

    if pool._ray is not None and pool._ray.names == names:
        return pool._ray
    if not ray.is_initialized():
        ray.init(include_dashboard=False, ignore_reinit_error=True)  # a local cluster (the trainer inits its own)
    try:
        ref = ray.put([(kind, f) for kind, _n, f in table])
    except Exception as exc:  # a function cloudpickle cannot serialise
        warnings.warn(f"reward pool (ray): cannot send the reward functions to Ray ({type(exc).__name__}: {exc}); "
                      "scoring in this process", stacklevel=4)
        return None
    remote = ray.remote(_remote_calls).options(num_cpus=pool.options.worker_cpus, max_retries=0,
                                              retry_exceptions=False)
    pool._ray = RayCalls(names, ref, remote)
    return pool._ray


def _remote_calls(fns: list[tuple[int, Callable[..., Any]]], job: list[tuple[int, str, Mapping[str, Any]]],
                  timeout: float, memory_mb: int) -> list[tuple[Any, str | None, bool]]:
    """A chunk of reward calls ``[(k, completion, sample)]`` in one Ray task: their results, in order."""
    return [_remote_call(fns, k, c, s, timeout, memory_mb) for k, c, s in job]


def score_on_ray(pool: Any, names: list[tuple[int, str]], table: list[tuple[int, str, Callable[..., Any]]],
                 completions: Sequence[str], samples: Sequence[Mapping[str, Any]],
                 todo: list[tuple[int, tuple[int, ...]]], results: list[list[Any]]) -> None:
    """Fill ``results[pos][k] = (value, error, timed_out)`` for every call of ``todo`` ``[(pos, call indices)]``,
    at most ``pool.workers`` Ray tasks at a time. Calls go in chunks (as in the process pool: up to 32, about
    four per worker); a chunk whose worker dies or is killed is split into one task per call and re-run, so the
    call that killed it fails alone, exactly once, and the others of the chunk get their own results."""
    import ray
    from ray.exceptions import TaskCancelledError

    from llmrl.rewards.pool import LOAD_GRACE, _local

    calls = _prepare(pool, names, table)
    if calls is None:
        _local(table, completions, samples, todo, results)
        return
    opts = pool.options
    flat = [(p, k) for p, ks in todo for k in ks]
    size = max(1, min(32, len(flat) // (4 * pool.workers)))
    queue = [flat[i : i + size] for i in range(0, len(flat), size)]
    queue.reverse()  # pop() from the end: in input order
    running: dict[Any, tuple[list[tuple[int, int]], float]] = {}  # ref -> (its calls, sent at)
    cancelled: set[Any] = set()

    def send(job: list[tuple[int, int]]) -> None:
        ref = calls.remote.remote(calls.ref, [(k, completions[p], samples[p]) for p, k in job], opts.timeout,
                                  opts.memory_mb)
        running[ref] = (job, time.monotonic())

    try:
        while queue or running:
            while queue and len(running) < pool.workers:
                send(queue.pop())
            deadline = min(sent + len(job) * LOAD_GRACE * opts.timeout + START_GRACE for job, sent in running.values())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=max(0.05, deadline - time.monotonic()))
            for ref in ready:
                job, _sent = running.pop(ref)
                try:
                    for (p, k), out in zip(job, ray.get(ref), strict=True):
                        results[p][k] = tuple(out)
                except (TaskCancelledError, ray.exceptions.RayError) as exc:
                    killed = ref in cancelled or isinstance(exc, TaskCancelledError)  # by the watchdog below
                    cancelled.discard(ref)
                    if len(job) > 1:  # which call was it? each again on its own
                        queue.extend([c] for c in reversed(job))
                        continue
                    (p, k), = job
                    if killed:
                        results[p][k] = (None, f"timed out after {opts.timeout:g} s (worker killed)", True)
                    else:  # the worker died (os._exit, a signal, the memory bound), or its node was lost
                        results[p][k] = (None, f"worker process died ({type(exc).__name__})", False)
                    pool.stats.replaced += 1
            now = time.monotonic()
            for ref, (job, sent) in running.items():
                if now > sent + len(job) * LOAD_GRACE * opts.timeout + START_GRACE and ref not in cancelled:
                    ray.cancel(ref, force=True)  # it ignores its timer (C code holding the GIL): kill its worker
                    cancelled.add(ref)
    except BaseException:  # Ctrl-C: stop what is running, no stale result is read later
        for ref in running:
            ray.cancel(ref, force=True)
        raise


__all__ = ["RayCalls", "START_GRACE", "score_on_ray"]
