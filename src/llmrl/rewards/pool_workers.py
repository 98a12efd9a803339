"""The processes behind :class:`llmrl.rewards.pool.RewardPool`: a template process forked once from the caller,
worker processes forked from it, and the record format of their results (see :mod:`llmrl.rewards.pool`).

Protocol. Caller ↔ template: a SOCK_SEQPACKET pair; ``spawn`` (with the new worker's socket attached,
SCM_RIGHTS) → ``"<pid>\n"``; ``reap <pid>`` → how it ended; ``exit``. Caller ↔ worker: a stream socket; a
job goes out as one pickled list ``[(pos, completion, sample, call indices)]``, each call's result comes
back as one fixed-size record (plus the error text, if any) written as soon as the call returns, so a
worker killed in the middle of a job has already delivered everything before the call it was running.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any

from llmrl.rewards.base import safe_check, safe_score

REWARD, CHECK = 0, 1
"""The kinds of call: a reward function (a float or None), a verdict (a bool, e.g. ``is_correct``)."""


def call(kind: int, fn: Callable[..., Any], completion: str, sample: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(value, error) of one call, never raising: :func:`safe_score` for a reward, :func:`safe_check` for a
    verdict (a failure reads False)."""
    try:
        if kind == CHECK:
            return safe_check(fn, completion, sample), None
        return safe_score(fn, completion, sample)
    except BaseException as exc:  # a KeyboardInterrupt the reward raised itself
        return (False, None) if kind == CHECK else (None, f"{type(exc).__name__}: {exc}")


def _child_setup(parent_pid: int) -> None:
    """In a freshly forked template / worker: die with the parent, leave Ctrl-C to the trainer, drop the
    trainer's Python signal handlers (they would e.g. write a checkpoint)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the prctl
        os._exit(0)


def _limit_memory(memory_mb: int) -> None:
    """RLIMIT_AS = this process's size now (its inherited mappings) + ``memory_mb`` MiB (Linux)."""
    if memory_mb <= 0:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = size + memory_mb * 2**20
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError, ImportError):
        pass  # no /proc (not Linux) or not allowed: no memory bound


# A result is one record (no pickling: a call costs the worker one write): position, call index, what, value;
# an error message follows its record as a length-prefixed UTF-8 string.
_RECORD, _LENGTH = struct.Struct("<iHBd"), struct.Struct("<I")
_VALUE, _NONE, _ERROR, _TRUE, _FALSE = range(5)


def _encode(pos: int, k: int, value: Any, err: str | None) -> bytes:
    if err is not None:
        msg = err.encode("utf-8", "replace")[:4000]
        return _RECORD.pack(pos, k, _ERROR, 0.0) + _LENGTH.pack(len(msg)) + msg
    if value is None:
        return _RECORD.pack(pos, k, _NONE, 0.0)
    if isinstance(value, bool):
        return _RECORD.pack(pos, k, _TRUE if value else _FALSE, 0.0)
    return _RECORD.pack(pos, k, _VALUE, value)


def decode(buf: bytearray) -> Iterator[tuple[int, int, Any, str | None]]:
    """The complete records at the start of ``buf`` (consumed; a partial one stays)."""
    at = 0
    while len(buf) - at >= _RECORD.size:
        pos, k, what, value = _RECORD.unpack_from(buf, at)
        end = at + _RECORD.size
        if what == _ERROR:
            if len(buf) - end < _LENGTH.size:
                break
            (n,) = _LENGTH.unpack_from(buf, end)
            if len(buf) - end - _LENGTH.size < n:
                break
            err = bytes(buf[end + _LENGTH.size : end + _LENGTH.size + n]).decode("utf-8", "replace")
            at = end + _LENGTH.size + n
            yield pos, k, None, err
            continue
        at = end
        yield pos, k, (value if what == _VALUE else None if what == _NONE else what == _TRUE), None
    del buf[:at]


def readable(fd: int) -> bool:
    """Whether reading ``fd`` would not block (data or end of file)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _worker_main(conn: Connection, calls: list[tuple[int, Callable[..., Any]]], memory_mb: int) -> None:
    """Score jobs ``[(pos, completion, sample, call indices)]``; write a record per call. A reward that
    segfaults is reported by the caller under its name; no Python fault dump (pytest enables faulthandler)
    fills the trainer's stderr. Torch, when loaded, runs on one thread here (as in DataLoader workers)."""
    faulthandler.disable()
    torch = sys.modules.get("torch")
    if torch is not None:  # torch's OpenMP pool does not survive a fork: a reward using torch would hang in it
        torch.set_num_threads(1)
    _limit_memory(memory_mb)
    while True:
        try:
            job = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        for pos, completion, sample, ks in job:
            for k in ks:
                _write(conn.fileno(), _encode(pos, k, *call(*calls[k], completion, sample)))


def _template_main(ctl: socket.socket, calls: list[tuple[int, Callable[..., Any]]], memory_mb: int) -> None:
    """Fork a worker per ``spawn`` (its socket arrives with the message), reap one per ``reap``; on ``exit``
    or when the pool goes away, kill and reap the rest."""
    children: set[int] = set()
    me = os.getpid()
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctl, 64, 1)
        except OSError:
            break
        if not msg or msg == b"exit":
            break
        if msg == b"spawn":
            pid = os.fork()
            if pid == 0:
                try:
                    ctl.close()
                    _child_setup(me)
                    _worker_main(Connection(fds[0]), calls, memory_mb)
                finally:
                    os._exit(0)
            os.close(fds[0])
            children.add(pid)
            ctl.sendall(f"{pid}\n".encode())
        elif msg.startswith(b"reap "):
            pid = int(msg[5:])
            try:
                _, status = os.waitpid(pid, 0)
                text = _describe(status)
            except ChildProcessError:
                text = "already reaped"
            children.discard(pid)
            ctl.sendall(f"{text}\n".encode())
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


# -- the caller's side
def runqueue_wait(pid: int) -> float | None:
    """Seconds process ``pid`` has spent runnable but waiting for a CPU (Linux ``/proc/PID/schedstat``), or
    None where that is not known."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class Worker:
    __slots__ = ("pid", "conn", "inflight", "jobs", "deadline", "buf", "started", "waited")

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid, self.conn, self.buf = pid, conn, bytearray()
        self.inflight: deque[tuple[int, int]] = deque()  # (pos, call index) in the order the worker runs them
        self.jobs: deque[int] = deque()  # calls left in each job sent
        self.deadline: float | None = None
        self.started = 0.0  # when the current call's clock started
        self.waited: float | None = None  # the worker's run-queue wait then

    def start_clock(self, timeout: float) -> None:
        """The current call's clock: ``timeout`` seconds from now, not counting time spent waiting for a CPU."""
        self.started = time.monotonic()
        self.deadline, self.waited = self.started + timeout, runqueue_wait(self.pid)

    def extend_for_load(self, cap: float) -> bool:
        """At the deadline: move it by the time the worker waited for a CPU since its clock started (a busy
        machine must not turn a fast reward into a timeout), up to ``cap`` seconds after the start; True if
        it moved."""
        now_wait = runqueue_wait(self.pid)
        if self.deadline is None or self.waited is None or now_wait is None:
            return False
        extra, self.waited = now_wait - self.waited, now_wait
        if extra < 1e-3:
            return False
        self.deadline = min(self.deadline + extra, self.started + cap)
        return self.deadline > time.monotonic()


class Processes:
    """The template process and its workers (no reference to the pool: the finalizer closes this)."""

    def __init__(self, calls: list[tuple[int, Callable[..., Any]]], names: list[tuple[int, str]],
                 memory_mb: int) -> None:
        self.names = names
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for stream in (sys.stdout, sys.stderr):  # or a child's first print repeats the parent's buffer
            try:
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass
        parent = os.getpid()
        with warnings.catch_warnings():  # Python >= 3.12 warns about forking a threaded (torch) process
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                _child_setup(parent)
                _template_main(theirs, calls, memory_mb)
            finally:
                os._exit(0)
        theirs.close()
        self.pid, self.ctl, self.workers = pid, ours, []  # type: list[Worker]
        self.owner = parent

    def _reply(self) -> str:
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = self.ctl.recv(256)
            if not chunk:
                raise OSError("reward pool template process died")
            buf += chunk
        return buf.decode().strip()

    def spawn(self) -> Worker:
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self.ctl, [b"spawn"], [theirs.fileno()])
        finally:
            theirs.close()
        return Worker(int(self._reply()), Connection(ours.detach()))

    def kill(self, w: Worker) -> str:
        """SIGKILL ``w`` (if alive) and reap it through the template; returns how it ended."""
        try:
            os.kill(w.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.reap(w)

    def reap(self, w: Worker) -> str:
        self.ctl.sendall(f"reap {w.pid}".encode())
        return self._reply()

    def close(self) -> None:
        if os.getpid() != self.owner:  # a forked copy of the caller (a worker's garbage collection): not ours
            return
        for w in self.workers:
            w.conn.close()
        self.workers = []
        try:
            self.ctl.sendall(b"exit")
        except OSError:
            pass
        self.ctl.close()
        deadline = time.monotonic() + 5.0
        while True:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return
            time.sleep(0.002)
