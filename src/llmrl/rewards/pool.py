"""Reward functions in a pool of worker processes: a time and a memory bound per call, failures counted.

A reward function is model-output-driven code (a regex, a parser, a sandboxed program): it may hang,
crash the interpreter, eat memory or return nonsense. :class:`RewardPool` calls each reward function on
each completion in a worker process and turns every way of going wrong into the failure value of that
one component, counted under the reward's name:

* a call that runs longer than ``timeout`` seconds (wall clock, minus the time its worker spent waiting for a
  CPU on a busy machine, read from ``/proc/PID/schedstat``, up to ``LOAD_GRACE`` × ``timeout`` in all; the
  worker is killed with SIGKILL, so a loop in C that holds the GIL is stopped too) — also counted as a
  timeout;
* a worker that dies (``os._exit``, a signal, a segfault in an extension) — the call it was running;
* a raise of any ``BaseException`` (``SystemExit``, ``MemoryError`` once the worker's address space
  reaches its start size + ``memory_mb`` MiB: ``RLIMIT_AS``), NaN / inf, a non-number (a string such as
  ``"7.5"`` too), and a magnitude beyond ``max_abs`` (default: the float32 range, 3.4028234663852886e38).

A killed or dead worker is replaced and the rest of its work is re-sent; the other components of the
same completion keep their values. Results are in input order and do not depend on the number of workers
(each call is independent). ``timeout`` bounds each reward-function call, so a completion with k pooled
components takes at most k · ``timeout``.

**Processes** (:mod:`llmrl.rewards.pool_workers`). Workers are forked, so they inherit the reward functions (often closures) without pickling.
On the first call the pool forks one *template* process from the caller; every worker is then forked from
the template: the caller (which has torch and its thread pools loaded) is forked once per pool, and
replacement workers share the template's memory instead of copying the trainer's current pages. Only
completions, samples and results cross the pipes. Workers are persistent across calls; the template and
the workers die with their parent (``PR_SET_PDEATHSIG`` on Linux); :meth:`RewardPool.close` (or garbage
collection, or interpreter exit) stops them and reaps every process. Workers ignore SIGINT: Ctrl-C reaches
the trainer, which kills the busy workers and re-raises.

**In-process calls.** ``workers=0`` scores everything in the calling process (no time or memory bound;
use it to debug a reward with a debugger or a traceback). A reward function carrying ``in_process = True``
(:func:`run_in_process`; :func:`llmrl.rewards.judge.make_judge_reward` and
:class:`llmrl.rewards.reward_model.RewardModelReward` do) always runs in the caller: it evaluates a torch
model, which a forked copy would run on stale weights (a judge that is the policy itself), could not run
at all on CUDA, and would duplicate in every worker. Pure-Python rewards are what the workers are for; one
that uses torch on the CPU works (a worker sets torch to one thread: the OpenMP pool of a forked torch hangs).

Workers see the reward functions as they were when the pool started (a fork is a snapshot).

**Ray backend** (``PoolOptions(backend="ray")``, :mod:`llmrl.rewards.pool_ray`; ``ray.reward_workers`` in a
recipe). The same calls, results and failure rules, with chunks of calls as Ray tasks (at most ``workers``
running at once, anywhere on the cluster) instead of forked processes: the functions are cloudpickled into
the object store once per pool (the same snapshot rule); a call past ``timeout`` (wall clock minus the time its
worker waited for a CPU, as here) fails as a timeout, and a task that does not return by ``LOAD_GRACE`` ×
``timeout`` per call has its worker killed (``ray.cancel(force=True)``); a worker that dies fails only the call
it was running (its chunk is re-sent one call per task; Ray never retries, so no call is counted twice);
``memory_mb`` bounds each Ray worker process like a forked one.
"""

from __future__ import annotations

import math
import os
import pickle
import time
import warnings
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from llmrl.rewards.base import RewardFn, RewardOutcome
from llmrl.rewards.pool_workers import CHECK, REWARD, Processes, Worker, call, decode, readable

FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32: rewards become float32 tensors, so larger magnitudes fail by default."""
IN_PROCESS = "in_process"
"""Attribute marking a reward function that must run in the calling process (see the module doc)."""
_PENDING: Any = object()
LOAD_GRACE = 10.0
"""A call's clock excludes time its worker waited for a CPU, up to this many times ``timeout`` of wall clock."""
PIPELINE_BYTES = 32 << 10
"""Largest job sent to a worker that is still busy (it waits in the socket buffer, far below its size)."""
Calls = tuple[Mapping[str, RewardFn], Mapping[str, Callable[[str, Mapping[str, Any]], Any]]]
"""(reward functions, verdict functions such as ``is_correct``) by name."""


def run_in_process(fn: Any) -> Any:
    """Mark ``fn`` (a function or an object with ``__call__``) to run in the calling process; returns it."""
    setattr(fn, IN_PROCESS, True)
    return fn


def default_workers() -> int:
    """The CPU cores this process may use, at most 16."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


@dataclass(frozen=True)
class PoolOptions:
    """How a :class:`RewardPool` runs: ``workers`` (None = :func:`default_workers`, 0 = in-process),
    ``timeout`` seconds per reward call, ``memory_mb`` MiB a worker may allocate beyond its start size
    (0 = unbounded), ``max_abs`` the largest accepted magnitude."""

    workers: int | None = None
    timeout: float = 5.0
    memory_mb: int = 4096
    max_abs: float = FLOAT32_MAX
    backend: str = "processes"
    """``processes`` (forked workers, the module doc) or ``ray`` (Ray tasks, :mod:`llmrl.rewards.pool_ray`)."""
    worker_cpus: float = 1.0
    """``ray``: CPUs Ray reserves for each reward task."""

    def __post_init__(self) -> None:
        if self.backend not in ("processes", "ray"):
            raise ValueError(f"reward pool backend must be processes or ray, got {self.backend!r}")
        for name, ok, need in (("workers", self.workers is None or self.workers >= 0, ">= 0 or null"),
                               ("timeout", self.timeout > 0, "> 0"), ("memory_mb", self.memory_mb >= 0, ">= 0"),
                               ("max_abs", self.max_abs > 0, "> 0")):
            if not ok:
                raise ValueError(f"reward pool {name} must be {need}, got {getattr(self, name)!r}")

    @classmethod
    def of(cls, section: Any = None, **override: Any) -> PoolOptions:
        """From any object with the same attributes (the ``reward`` config section); None = defaults.
        ``override`` replaces fields (None values are ignored)."""
        base = {} if section is None else {k: getattr(section, k) for k in ("workers", "timeout", "memory_mb",
                                                                              "max_abs") if hasattr(section, k)}
        return cls(**{**base, **{k: v for k, v in override.items() if v is not None}})

    @classmethod
    def for_run(cls, cfg: Any) -> PoolOptions:
        """A run's options: its ``reward`` section, on Ray tasks when ``ray.enabled`` and ``ray.reward_workers``
        > 0 (then ``workers`` = ``ray.reward_workers``)."""
        ray = getattr(cfg, "ray", None)
        if ray is not None and ray.enabled and ray.reward_workers > 0:
            return cls.of(cfg.reward, backend="ray", workers=ray.reward_workers, worker_cpus=ray.worker_cpus)
        return cls.of(getattr(cfg, "reward", None))


@dataclass
class ScoredOutcome(RewardOutcome):
    """:class:`RewardOutcome` plus which components failed / timed out (by name) and the verdicts asked for."""

    failed: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)


@dataclass
class PoolStats:
    """Counts since the pool was made: reward calls, failures and timeouts by reward name, workers replaced."""

    calls: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    replaced: int = 0


class RewardPool:
    """Scores completions with named reward functions in worker processes (see the module doc).

    ``fns`` is a mapping of reward functions, or a factory returning ``(rewards, verdicts)``
    (:data:`Calls`; :func:`task_pool` passes one that reads the task through a weak reference). Not
    thread-safe: one caller at a time."""

    def __init__(self, fns: Mapping[str, RewardFn] | Callable[[], Calls], options: PoolOptions | None = None) -> None:
        self.options = options or PoolOptions()
        self._factory: Callable[[], Calls] = fns if callable(fns) else (lambda m=dict(fns): (m, {}))  # type: ignore[misc]
        self.workers = default_workers() if self.options.workers is None else self.options.workers
        self.stats = PoolStats()
        self._procs: Processes | None = None
        self._finalizer: Any = None
        self._pooled = self.workers > 0 and (hasattr(os, "fork") or self.options.backend == "ray")
        self._ray: Any = None  # the ray backend's state (llmrl.rewards.pool_ray.RayCalls)

    # -- lifecycle
    def _ensure(self, names: list[tuple[int, str]], calls: list[tuple[int, Callable[..., Any]]]) -> Processes:
        if self._procs is not None and self._procs.names != names:  # the functions changed: restart
            self.close()
        if self._procs is None:
            self._procs = Processes(calls, names, self.options.memory_mb)
            self._finalizer = weakref.finalize(self, Processes.close, self._procs)
        return self._procs

    def start(self) -> None:
        """Fork the template process now, from the calling thread (it is otherwise forked on the first call):
        a pool that a background thread will use is started from the main thread, since forking a process
        while another thread holds a lock can leave the child stuck on it. No-op for in-process and Ray pools."""
        if not self._pooled or self.options.backend != "processes":
            return
        rewards, verdicts = self._factory()
        table = [(REWARD, n, f) for n, f in rewards.items()] + [(CHECK, n, f) for n, f in verdicts.items()]
        self._ensure([(kind, n) for kind, n, _f in table], [(kind, f) for kind, _n, f in table])

    def close(self) -> None:
        """Stop the template and every worker (idempotent; the pool starts again if used)."""
        self._ray = None
        if self._finalizer is not None:
            self._finalizer()
        self._procs = self._finalizer = None

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scoring
    def score(self, completions: Sequence[str], samples: Sequence[Mapping[str, Any]], *, failure_value: float = 0.0,
              weights: Mapping[str, float] | None = None, checks: bool = False) -> list[ScoredOutcome]:
        """One :class:`ScoredOutcome` per completion, in order: the weighted sum of the components (a failed
        one contributes ``failure_value``, unweighted; one returning None is left out), the total clipped to
        the float32 range; with ``checks``, also the verdicts (e.g. ``correct``; a failure reads False)."""
        if len(completions) != len(samples):
            raise ValueError(f"{len(completions)} completions but {len(samples)} samples")
        rewards, verdicts = self._factory()
        table: list[tuple[int, str, Callable[..., Any]]] = [(REWARD, n, f) for n, f in rewards.items()]
        table += [(CHECK, n, f) for n, f in verdicts.items()]
        names = [(kind, n) for kind, n, _f in table]
        wanted = [k for k, (kind, _n) in enumerate(names) if kind == REWARD or checks]
        results: list[list[Any]] = [[_PENDING] * len(table) for _ in completions]
        remote = tuple(k for k in wanted if self._pooled and not getattr(table[k][2], IN_PROCESS, False))
        todo = [(p, remote) for p in range(len(completions))] if remote else []
        if todo and self.options.backend == "ray":  # Ray tasks (llmrl.rewards.pool_ray); fills results
            from llmrl.rewards.pool_ray import score_on_ray

            score_on_ray(self, names, table, completions, samples, todo, results)
            todo = []
        run = self._start(names, table, completions, samples, todo, results) if todo else None
        _local(table, completions, samples, [(p, tuple(k for k in wanted if k not in remote))
                                             for p in range(len(completions))], results)
        for _attempt in range(3):
            if run is None:
                break
            try:
                run.finish()
                run = None
            except _TemplateGone:  # killed from outside (its workers died with it): again for what is left
                self.close()
                run = self._start(names, table, completions, samples, _pending(results, remote), results)
        if run is not None:  # it keeps dying
            run._abort()
            self.close()
            warnings.warn("reward pool: the worker processes keep dying; scoring the rest in this process",
                          stacklevel=2)
            _local(table, completions, samples, _pending(results, remote), results)
        return [self._outcome(names, row, wanted, failure_value, weights) for row in results]

    def _start(self, names: list[tuple[int, str]], table: list[tuple[int, str, Callable[..., Any]]],
               completions: Sequence[str], samples: Sequence[Mapping[str, Any]],
               todo: list[tuple[int, tuple[int, ...]]], results: list[list[Any]]) -> _Run | None:
        """Start the remote part of a call; None when no process can be started (fork failed): then it is
        scored here, with a warning, and so are later calls."""
        for _attempt in range(2):
            try:
                return _Run(self, self._ensure(names, [(kind, f) for kind, _n, f in table]), completions, samples,
                            todo, results)
            except _TemplateGone:  # died since the last call: start a new one
                self.close()
            except OSError as exc:
                self.close()
                self._pooled = False
                warnings.warn(f"reward pool: cannot start worker processes ({exc}); scoring in this process",
                              stacklevel=3)
                break
        _local(table, completions, samples, todo, results)
        return None

    def _outcome(self, names: list[tuple[int, str]], row: list[tuple[Any, str | None, bool]], wanted: list[int],
                 failure_value: float, weights: Mapping[str, float] | None) -> ScoredOutcome:
        out = ScoredOutcome(total=0.0)
        for k in wanted:
            (kind, name), (value, err, timed_out) = names[k], row[k]
            if kind == CHECK:
                out.checks[name] = bool(value)
                continue
            self.stats.calls += 1
            if err is None and value is not None and abs(value) > self.options.max_abs:
                err = f"returned {value!r}, beyond ±{self.options.max_abs:.9g}"
            if err is not None:
                out.failures.append(f"{name}: {err}")
                out.failed.append(name)
                self.stats.failures[name] += 1
                if timed_out:
                    out.timed_out.append(name)
                    self.stats.timeouts[name] += 1
                out.components[name] = failure_value
                out.total += failure_value
            elif value is not None:
                out.components[name] = value
                out.total += (1.0 if weights is None else weights.get(name, 1.0)) * value
        if not abs(out.total) <= FLOAT32_MAX:  # several huge components; NaN only from a NaN weight
            out.total = math.copysign(FLOAT32_MAX, out.total) if not math.isnan(out.total) else failure_value
        return out


def _local(table: list[tuple[int, str, Callable[..., Any]]], completions: Sequence[str],
           samples: Sequence[Mapping[str, Any]], todo: list[tuple[int, tuple[int, ...]]],
           results: list[list[Any]]) -> None:
    """Score ``todo`` ``[(pos, call indices)]`` in this process."""
    for p, ks in todo:
        for k in ks:
            value, err = call(table[k][0], table[k][2], completions[p], samples[p])
            results[p][k] = (value, err, False)


def _pending(results: list[list[Any]], ks: tuple[int, ...]) -> list[tuple[int, tuple[int, ...]]]:
    todo = [(p, tuple(k for k in ks if row[k] is _PENDING)) for p, row in enumerate(results)]
    return [(p, left) for p, left in todo if left]


class _TemplateGone(Exception):
    """The template process died (killed from outside): its workers died with it."""


class _Run:
    """One :meth:`RewardPool.score` call's remote part: jobs out to the workers, results in, timeouts."""

    def __init__(self, pool: RewardPool, procs: Processes, completions: Sequence[str],
                 samples: Sequence[Mapping[str, Any]], todo: list[tuple[int, tuple[int, ...]]],
                 results: list[list[Any]]) -> None:
        self.pool, self.procs, self.completions, self.samples, self.results = pool, procs, completions, samples, results
        self.timeout = pool.options.timeout
        chunk = max(1, min(32, len(todo) // (4 * pool.workers)))
        self.queue: deque[tuple[list[tuple[int, tuple[int, ...]]], bytes | None]] = deque(
            (todo[i : i + chunk], None) for i in range(0, len(todo), chunk))
        try:
            while len(procs.workers) < min(pool.workers, len(self.queue)):
                procs.workers.append(self._spawn())
            self._fill()
        except BaseException:
            self._abort()
            raise

    def _spawn(self) -> Worker:
        try:
            return self.procs.spawn()
        except OSError as exc:
            raise _TemplateGone(str(exc)) from exc

    def _kill(self, w: Worker) -> str:
        try:
            return self.procs.kill(w)
        except OSError as exc:
            raise _TemplateGone(str(exc)) from exc

    def _pack(self, job: list[tuple[int, tuple[int, ...]]]) -> bytes | None:
        """The job as the worker reads it; None (and the job scored here) when a sample cannot be pickled."""
        try:
            return pickle.dumps([(p, self.completions[p], self.samples[p], ks) for p, ks in job], pickle.HIGHEST_PROTOCOL)
        except Exception:
            rewards, verdicts = self.pool._factory()
            table = [(kind, name, (rewards, verdicts)[kind][name]) for kind, name in self.procs.names]
            _local(table, self.completions, self.samples, job, self.results)
            return None

    def _fill(self) -> None:
        """Give every worker a job to run and one to start next; a second job only if it is small enough to
        wait in the socket buffer (a blocking send to a busy, maybe hung, worker would stall the caller)."""
        for i in range(len(self.procs.workers)):
            failed = 0
            while self.queue and len(self.procs.workers[i].jobs) < 2:
                w, (job, data) = self.procs.workers[i], self.queue[0]
                if data is None:
                    data = self._pack(job)
                    if data is None:
                        self.queue.popleft()
                        continue
                    self.queue[0] = (job, data)
                if w.jobs and len(data) > PIPELINE_BYTES:
                    break
                self.queue.popleft()
                try:
                    w.conn.send_bytes(data)
                except OSError:  # it died (e.g. the OOM killer): its job fails or goes back, a new worker starts
                    self.queue.appendleft((job, data))
                    if w.inflight:
                        self._fail(w, w.inflight[0], f"worker process died ({self._kill(w)})", False)
                    else:
                        failed += 1
                        if failed > 3:
                            raise _TemplateGone("new reward workers die at once") from None
                        self._kill(w)
                        self._replace(w)
                    continue
                w.inflight.extend((p, k) for p, ks in job for k in ks)
                w.jobs.append(sum(len(ks) for _p, ks in job))
                if w.deadline is None:
                    w.start_clock(self.timeout)

    def _drain(self, w: Worker) -> bool:
        """Take every result ``w`` has sent; False when its pipe is closed (it died)."""
        fd = w.conn.fileno()
        while w.inflight and readable(fd):
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                return False
            if not data:
                return False
            w.buf += data
            got = False
            for pos, k, value, err in decode(w.buf):
                if not w.inflight or w.inflight[0] != (pos, k):  # garbage on its socket (a reward wrote there)
                    return False
                w.inflight.popleft()
                self.results[pos][k] = (value, err, False)
                w.jobs[0] -= 1
                if w.jobs[0] == 0:
                    w.jobs.popleft()
                got = True
            if got:
                if w.inflight:
                    w.start_clock(self.timeout)
                else:
                    w.deadline = None
        return True

    def _fail(self, w: Worker, current: tuple[int, int], error: str, timed_out: bool) -> None:
        """``w`` was killed and reaped while running ``current``: that call gets ``error`` (unless it answered
        just before the kill), the rest of its work goes back to the front of the queue, a new worker starts."""
        self._drain(w)  # what it sent before dying is still in the pipe
        if w.inflight and w.inflight[0] == current:
            w.inflight.popleft()
            self.results[current[0]][current[1]] = (None, error, timed_out)
        if w.inflight:
            rest: list[tuple[int, tuple[int, ...]]] = []
            for pos, k in w.inflight:
                if rest and rest[-1][0] == pos:
                    rest[-1] = (pos, (*rest[-1][1], k))
                else:
                    rest.append((pos, (k,)))
            self.queue.appendleft((rest, None))
        self._replace(w)

    def _replace(self, w: Worker) -> Worker:
        w.conn.close()
        i = self.procs.workers.index(w)
        self.pool.stats.replaced += 1
        self.procs.workers[i] = new = self._spawn()
        return new

    def finish(self) -> None:
        try:
            while True:
                self._fill()
                busy = [w for w in self.procs.workers if w.inflight]
                if not busy:
                    return
                first = min((w.deadline for w in busy if w.deadline is not None), default=time.monotonic())
                ready = set(wait([w.conn for w in busy], timeout=max(0.0, first - time.monotonic())))
                for w in busy:
                    if w.conn in ready and not self._drain(w):  # it died: kill (if it only closed its pipe), reap
                        current = w.inflight[0]
                        self._fail(w, current, f"worker process died ({self._kill(w)})", False)
                now = time.monotonic()
                for w in list(self.procs.workers):
                    if not (w.inflight and w.deadline is not None and now >= w.deadline):
                        continue
                    if w.extend_for_load(LOAD_GRACE * self.timeout):  # it was waiting for a CPU, not running
                        continue
                    current, alive = w.inflight[0], self._drain(w)  # results that came in meanwhile
                    if not alive or (w.inflight and w.inflight[0] == current):
                        how = self._kill(w)
                        error = f"timed out after {self.timeout:g} s" if alive else f"worker process died ({how})"
                        self._fail(w, current, error, alive)
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        """Interrupted (Ctrl-C) or broken: kill and reap the busy workers so no stale result is read later."""
        for w in list(self.procs.workers):
            if w.inflight:
                try:
                    self.procs.kill(w)
                except OSError:
                    pass
                w.conn.close()
                self.procs.workers.remove(w)


# ----------------------------------------------------------------------------- shared pools, many rows
_TASK_POOLS: weakref.WeakKeyDictionary[Any, RewardPool] = weakref.WeakKeyDictionary()


def task_pool(task: Any, options: PoolOptions | None = None) -> RewardPool:
    """The pool scoring ``task``'s reward functions (and ``is_correct`` / ``is_well_formed`` as verdicts
    ``correct`` / ``well_formed``), shared by everyone scoring that task object: the RL collector, the ReMax
    baseline, reference rewards, preference sources. ``options`` None = the existing pool, whatever its
    options (defaults when there is none); other options replace it. The pool holds the task weakly and
    closes when the task is garbage-collected."""
    try:
        pool = _TASK_POOLS.get(task)
    except TypeError:  # unhashable / no weak references: a pool of its own, closed when dropped
        return RewardPool(lambda: task_calls(task), options)
    if pool is not None and (options is None or pool.options == options):
        return pool
    ref = weakref.ref(task)

    def calls() -> Calls:
        t = ref()
        if t is None:
            raise RuntimeError("the task of this reward pool was garbage-collected")
        return task_calls(t)

    if pool is not None:
        pool.close()
    _TASK_POOLS[task] = new = RewardPool(calls, options)
    return new


def task_calls(task: Any) -> Calls:
    """What a pool runs for a task: its reward functions, and ``is_correct`` / ``is_well_formed`` as the
    verdicts ``correct`` / ``well_formed``."""
    return task.reward_functions(), {"correct": task.is_correct, "well_formed": task.is_well_formed}


def score_rows(fns: Mapping[str, RewardFn] | RewardPool, rows: Iterable[tuple[str, Mapping[str, Any]]], *,
               options: PoolOptions | None = None, failure_value: float = 0.0, weights: Mapping[str, float] | None = None,
               checks: bool = False, batch_size: int = 512) -> Iterator[ScoredOutcome]:
    """Score a stream of ``(completion, sample)`` rows, ``batch_size`` at a time, through one pool (``fns``
    may be a pool already, e.g. :func:`task_pool`, else one is made with ``options`` and closed at the
    end); yields one :class:`ScoredOutcome` per row, in order. For dataset curation and offline scoring."""
    pool = fns if isinstance(fns, RewardPool) else RewardPool(fns, options)
    try:
        batch: list[tuple[str, Mapping[str, Any]]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= batch_size:
                yield from pool.score([c for c, _ in batch], [s for _, s in batch], failure_value=failure_value,
                                      weights=weights, checks=checks)
                batch = []
        if batch:
            yield from pool.score([c for c, _ in batch], [s for _, s in batch], failure_value=failure_value,
                                  weights=weights, checks=checks)
    finally:
        if pool is not fns:
            pool.close()


__all__ = ["FLOAT32_MAX", "IN_PROCESS", "PoolOptions", "PoolStats", "RewardPool", "ScoredOutcome",
           "default_workers", "run_in_process", "score_rows", "task_calls", "task_pool"]
