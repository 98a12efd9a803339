"""Run model-written Python in a sandbox: bubblewrap isolation plus CPU, memory, process, output and wall limits.

:func:`run_python` runs one program in a fresh interpreter (``python -I``) under `bubblewrap
<https://github.com/containers/bubblewrap>`_ (``bwrap``, Debian package ``bubblewrap``):

* ``--unshare-all``: new user, PID, network, IPC, UTS and cgroup namespaces; the network namespace has only
  a loopback device of its own, so no connection leaves the sandbox (not even to the host's localhost);
* ``--ro-bind / /``: the whole file system read-only; ``--tmpfs /tmp`` (size-limited to ``memory_mb``) is the
  only writable place; the program runs in ``/tmp/work``, which holds ``main.py`` and the ``files`` given;
  fresh ``/dev`` and ``/proc``;
* ``--clearenv``: no environment variable of the caller; only ``PATH``, ``HOME`` and ``LANG`` are set;
* ``--cap-drop ALL``, ``--new-session`` (no terminal injection), ``--die-with-parent``.

Resource limits (:class:`Limits`) are set by a small bootstrap inside the sandbox before it runs the program:
``RLIMIT_CPU`` (SIGXCPU at ``cpu_seconds``, SIGKILL a second later), ``RLIMIT_AS`` (``memory_mb``: allocation
fails, Python raises MemoryError), ``RLIMIT_FSIZE``, ``RLIMIT_NPROC`` (``processes``) and no core dumps. The
caller enforces ``wall_seconds`` and ``output_bytes`` and kills the whole sandbox (bwrap's process group; the
PID namespace dies with its init), so nothing the program started outlives the call.

``RLIMIT_NPROC`` counts processes per user and is not enforced for real uid 0: run as root (CI, containers),
bwrap maps the sandbox to uid 0 outside and a fork bomb would be unbounded. So where this process may create
a *pids cgroup* (cgroup v1 ``pids`` controller, or a v2 hierarchy with ``pids`` enabled), every call gets its
own cgroup with ``pids.max`` and is killed through it; otherwise (root without a writable pids cgroup) a
one-time warning says the process limit is not enforced.

Without a working bwrap (not installed, or no user namespaces, as in some containers) a one-time warning is
given and the program runs *unisolated*: a subprocess with a cleared environment, a temporary working
directory, the same rlimits and the same wall-clock and output limits (``isolated=False``). Set
``require_isolation=True`` (or the environment variable ``LLMRL_SANDBOX=require``) to raise
:class:`SandboxUnavailable` instead. Measured stop times: docs/sandbox.md.
"""

from __future__ import annotations

import itertools
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath

LIMIT_NAMES = ("cpu", "wall", "memory", "processes", "output")
"""Values of :attr:`SandboxResult.limit`."""
SANDBOX_TMP = "/tmp"
"""The sandbox's writable tmpfs (inside bwrap)."""
WORK_DIR = "/tmp/work"
"""The program's working directory inside bwrap: ``main.py`` plus the ``files`` given."""
_INPUT_DIR = "/tmp/.input"
_ENV_REQUIRE = "LLMRL_SANDBOX"
_PATH = "/usr/local/bin:/usr/bin:/bin"
_BWRAP_PROCESSES = 2
"""Processes of bwrap itself in the call's pids cgroup (the outer bwrap and the PID namespace's init)."""

# Runs in the sandbox (``python -I -S -c``): copy the input into the work dir, set the rlimits, then run main.py
# as ``python -I main.py`` would (site-packages, its directory on sys.path, __main__) in the same interpreter.
# argv: input dir, work dir, cpu s, memory bytes, processes (0 = no RLIMIT_NPROC), file bytes.
_BOOTSTRAP = r"""
import os, resource, shutil, sys
src, work = sys.argv[1], sys.argv[2]
cpu, mem, nproc, fsize = (int(a) for a in sys.argv[3:7])
if os.path.join(src, "work") != work:
    shutil.copytree(os.path.join(src, "work"), work, dirs_exist_ok=True)
os.chdir(work)
fd = os.open(os.path.join(src, "stdin"), os.O_RDONLY)
os.dup2(fd, 0)
os.close(fd)
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL: die with the caller (unisolated mode)
except Exception:
    pass
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
if nproc:
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
for key in [k for k in os.environ if k not in ("PATH", "HOME", "LANG")]:
    del os.environ[key]  # bwrap's PWD
import site, traceback, types
site.main()  # the site-packages `python -I main.py` sees (-S kept them out of the bootstrap)
sys.path.insert(0, work)  # as `python main.py`: the program's directory first, its files importable
sys.argv = ["main.py"]
main = types.ModuleType("__main__")
main.__file__ = os.path.join(work, "main.py")
sys.modules["__main__"] = main
with open("main.py", encoding="utf-8") as f:
    source = f.read()
try:
    exec(compile(source, main.__file__, "exec"), main.__dict__)
except SystemExit:
    raise
except BaseException as e:  # the traceback without this bootstrap's frame
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    sys.exit(1)
"""


class SandboxUnavailable(RuntimeError):
    """Isolation was required (``require_isolation`` / ``LLMRL_SANDBOX=require``) but bwrap does not work."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one :func:`run_python` call (all must be > 0)."""

    cpu_seconds: float = 5.0
    """CPU time of each process (RLIMIT_CPU, rounded up to whole seconds): SIGXCPU, then SIGKILL 1 s later."""
    wall_seconds: float = 10.0
    """Wall-clock time of the whole call, enforced by the caller, which then kills the sandbox."""
    memory_mb: int = 512
    """Address space of each process (RLIMIT_AS, MiB; Python raises MemoryError), also the size of the
    sandbox's tmpfs and the largest file it may write (RLIMIT_FSIZE)."""
    processes: int = 32
    """Processes the program may run at once, itself included (pids cgroup, or RLIMIT_NPROC)."""
    output_bytes: int = 65536
    """stdout + stderr kept; the program is killed when it writes more."""

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "wall_seconds", "memory_mb", "processes", "output_bytes"):
            value = getattr(self, name)
            integral = name in ("memory_mb", "processes", "output_bytes")
            kind = (int,) if integral else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value <= 0:
                need = "an integer > 0" if integral else "a finite number > 0"
                raise ValueError(f"sandbox Limits.{name} must be {need}, got {value!r}")


@dataclass
class SandboxResult:
    """What a :func:`run_python` call did."""

    stdout: str
    """The program's standard output (UTF-8, undecodable bytes replaced), cut at the output limit."""
    stderr: str
    """Its standard error, likewise."""
    returncode: int | None
    """Exit status; -N when killed by signal N (bwrap reports a signal death as 128 + N, read back as -N);
    None when the caller killed it (``limit`` "wall" or "output")."""
    seconds: float
    """Wall-clock seconds of the call, sandbox setup included."""
    limit: str | None
    """The limit that stopped it: "cpu" | "wall" | "memory" | "processes" | "output" | None."""
    isolated: bool
    """True when bubblewrap ran it; False in the unisolated fallback."""


# -- bwrap ------------------------------------------------------------------------------------------------
def _interpreter() -> str:
    """The Python that runs sandboxed code: the real interpreter behind ``sys.executable`` (a virtualenv's
    ``bin/python`` is a link to it; the code runs with ``-I -S``, so the venv's packages are not needed)."""
    return os.path.realpath(sys.executable)


def _hidden_by_tmpfs(path: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), SANDBOX_TMP]) == SANDBOX_TMP


def _bwrap_args(tmp_mb: int, *, size: bool = True) -> list[str]:
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if size:
        args += ["--size", str(tmp_mb << 20)]
    args += ["--tmpfs", SANDBOX_TMP]
    # an interpreter installed under /tmp would be hidden by the fresh /tmp: bind its installation back, read-only
    for where in dict.fromkeys(os.path.realpath(p) for p in (sys.base_prefix, os.path.dirname(_interpreter()))):
        if _hidden_by_tmpfs(where):
            args += ["--ro-bind", where, where]
    return args + ["--chdir", SANDBOX_TMP, "--hostname", "sandbox", "--clearenv",
                   "--setenv", "PATH", _PATH, "--setenv", "HOME", WORK_DIR, "--setenv", "LANG", "C.UTF-8"]


@lru_cache(maxsize=1)
def _bwrap_mode() -> bool | None:
    """None: bwrap unusable; True / False: it works with / without ``--size`` (bwrap < 0.7 lacks it)."""
    if shutil.which("bwrap") is None:
        return None
    for size in (True, False):
        try:
            proc = subprocess.run([*_bwrap_args(16, size=size), _interpreter(), "-I", "-S", "-c", "pass"],
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode == 0:
            return size
    return None


def sandbox_available() -> bool:
    """Whether bwrap is installed and can create its namespaces here (probed once, then cached)."""
    return _bwrap_mode() is not None


def process_limit_enforced() -> bool:
    """Whether ``Limits.processes`` is enforced here: a pids cgroup is writable, or this process is not root
    (RLIMIT_NPROC then applies)."""
    return _pids_parent() is not None or os.geteuid() != 0


# -- pids cgroup ------------------------------------------------------------------------------------------
def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per hierarchy key: the v1 controller list (e.g. "pids") or "" for v2."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if hid != "0" else [""]:
                out[c] = path
    return out


def _pids_dirs() -> list[str]:
    """Candidate cgroup directories (ours, in each hierarchy that may have the pids controller)."""
    own = _own_cgroups()
    dirs = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            root, mount, fstype, options = fields[3], fields[4], rfields[0], rfields[2].split(",")
            key = "pids" if fstype == "cgroup" and "pids" in options else "" if fstype == "cgroup2" else None
            if key is None or key not in own:
                continue
            path = own[key]
            if root != "/" and (path == root or path.startswith(root + "/")):
                path = path[len(root):]
            dirs.append(mount + path)
    return dirs


def _remove_stale(parent: str) -> None:
    """Remove the empty call cgroups of processes that died mid-call (``llmrl-sandbox-PID-N``, PID gone)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) == 4 and name.startswith("llmrl-sandbox-") and parts[2].isdigit():
            if not os.path.exists(f"/proc/{parts[2]}"):
                try:
                    os.rmdir(os.path.join(parent, name))
                except OSError:
                    pass


@lru_cache(maxsize=1)
def _pids_parent() -> str | None:
    """A cgroup directory under which this process may create pids-limited children (probed once)."""
    try:
        candidates = _pids_dirs()
    except OSError:
        return None
    for parent in candidates:
        _remove_stale(parent)
        probe = os.path.join(parent, f"llmrl-sandbox-probe-{os.getpid()}")
        try:
            os.mkdir(probe)
        except OSError:
            continue
        try:
            with open(os.path.join(probe, "pids.max"), "w") as f:
                f.write("8")
            return parent
        except OSError:
            continue
        finally:
            try:
                os.rmdir(probe)
            except OSError:
                pass
    return None


_counter = itertools.count()


class _PidsCgroup:
    """One call's pids cgroup: ``pids.max`` = ``limit``; :meth:`kill` stops every process in it."""

    def __init__(self, parent: str, limit: int) -> None:
        self.path = os.path.join(parent, f"llmrl-sandbox-{os.getpid()}-{next(_counter)}")
        os.mkdir(self.path)
        try:
            with open(os.path.join(self.path, "pids.max"), "w") as f:
                f.write(str(limit))
        except OSError:
            os.rmdir(self.path)
            raise
        self.procs = os.path.join(self.path, "cgroup.procs")
        self.limited = False
        """Whether a fork failed because of ``pids.max`` (set by :meth:`kill`)."""

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run by a shell that first moves itself into the cgroup (no ``preexec_fn``, which is unsafe
        in a process with threads such as a trainer's)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', self.procs, *argv]

    def _hit_limit(self) -> bool:
        """Whether pids.events counts a fork refused at ``pids.max`` ("max N", N > 0)."""
        try:
            with open(os.path.join(self.path, "pids.events")) as f:
                return any(line.split()[:1] == ["max"] and int(line.split()[1]) > 0 for line in f)
        except (OSError, ValueError, IndexError):
            return False

    def kill(self) -> None:
        """SIGKILL everything left in the cgroup, wait until it is empty, remove it."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                with open(self.procs) as f:
                    pids = [int(p) for p in f.read().split()]
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        self.limited = self.limited or self._hit_limit()
        try:
            os.rmdir(self.path)
        except OSError:
            pass


# -- warnings -----------------------------------------------------------------------------------------------
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _require_isolation(value: bool | None) -> bool:
    if value is not None:
        if not isinstance(value, bool):
            raise TypeError(f"run_python: require_isolation must be a bool or None, got {value!r}")
        return value
    env = os.environ.get(_ENV_REQUIRE, "auto").strip().lower()
    if env not in ("auto", "require"):
        raise ValueError(f"environment variable {_ENV_REQUIRE} must be 'auto' or 'require', got {env!r}")
    return env == "require"


def _check_files(files: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, text in (files or {}).items():
        parts = PurePosixPath(name).parts if isinstance(name, str) else ()
        if not parts or PurePosixPath(name).is_absolute() or any(p in ("..", ".") for p in parts):
            raise ValueError(f"run_python: files keys must be relative paths without '..', got {name!r}")
        if name == "main.py":
            raise ValueError("run_python: files must not hold 'main.py' (the program itself)")
        if not isinstance(text, str):
            raise TypeError(f"run_python: files[{name!r}] must be a str, got {type(text).__name__}")
        out[name] = text
    return out


# -- run ------------------------------------------------------------------------------------------------------
def run_python(code: str, *, stdin: str = "", limits: Limits | None = None, files: Mapping[str, str] | None = None,
               require_isolation: bool | None = None) -> SandboxResult:
    """Run ``code`` as ``main.py`` in the sandbox with ``stdin`` and ``files`` (relative path -> text, put next
    to it) under ``limits`` (default :class:`Limits`); never raises for anything the program does.

    ``require_isolation``: True raises :class:`SandboxUnavailable` where bwrap does not work, False falls back
    to an unisolated subprocess with a warning; None (default) reads ``LLMRL_SANDBOX`` (``require`` | ``auto``).
    """
    if not isinstance(code, str):
        raise TypeError(f"run_python: code must be a str, got {type(code).__name__}")
    if not isinstance(stdin, str):
        raise TypeError(f"run_python: stdin must be a str, got {type(stdin).__name__}")
    limits = Limits() if limits is None else limits
    if not isinstance(limits, Limits):
        raise TypeError(f"run_python: limits must be a Limits, got {type(limits).__name__}")
    extra = _check_files(files)
    required = _require_isolation(require_isolation)
    mode = _bwrap_mode()
    if mode is None:
        if required:
            raise SandboxUnavailable("bubblewrap (bwrap) is missing or cannot create namespaces here, and isolation "
                                     f"is required ({_ENV_REQUIRE}=require / require_isolation=True); install the "
                                     "'bubblewrap' package or allow unprivileged user namespaces")
        _warn_once("bwrap", "bubblewrap (bwrap) is missing or cannot create namespaces here: model-written code runs "
                            "UNISOLATED (resource limits and a timeout only; it can use the network and read and "
                            "write files). Install the 'bubblewrap' package, or set LLMRL_SANDBOX=require to refuse.")
    cgroup_parent = _pids_parent()
    root = os.geteuid() == 0
    if cgroup_parent is None and root:
        _warn_once("nproc", "running as root without a writable pids cgroup: the sandbox's process limit is not "
                            "enforced (RLIMIT_NPROC does not apply to uid 0)")
    host = tempfile.mkdtemp(prefix="llmrl-sandbox-")
    try:
        work = os.path.join(host, "work")
        for name, text in {"main.py": code, **extra}.items():
            path = os.path.join(work, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        with open(os.path.join(host, "stdin"), "w", encoding="utf-8") as f:
            f.write(stdin)
        cgroup = None
        if cgroup_parent is not None:
            try:
                cgroup = _PidsCgroup(cgroup_parent, limits.processes + (_BWRAP_PROCESSES if mode is not None else 0))
            except OSError:
                cgroup = None
        # RLIMIT_NPROC under bwrap counts per user namespace, bwrap's init (PID 1) included
        nproc = 0 if cgroup is not None else limits.processes + (1 if mode is not None else 0)
        if mode is not None:
            src, dst, cwd = _INPUT_DIR, WORK_DIR, None
            prefix = [*_bwrap_args(limits.memory_mb, size=mode), "--ro-bind", host, _INPUT_DIR]
            env = None
        else:
            src, dst, cwd = host, work, work
            prefix = []
            env = {"PATH": _PATH, "HOME": work, "LANG": "C.UTF-8"}
            if nproc and not root:  # RLIMIT_NPROC counts all of this uid's processes outside a user namespace
                nproc += _processes_of(os.getuid())
        memory = limits.memory_mb << 20
        argv = [*prefix, _interpreter(), "-I", "-S", "-c", _BOOTSTRAP, src, dst, str(math.ceil(limits.cpu_seconds)),
                str(memory), str(nproc), str(memory)]
        return _execute(argv, env, cwd, limits, cgroup, isolated=mode is not None)
    finally:
        shutil.rmtree(host, ignore_errors=True)


def _processes_of(uid: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                n += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return n


def _execute(argv: list[str], env: dict[str, str] | None, cwd: str | None, limits: Limits,
             cgroup: _PidsCgroup | None, *, isolated: bool) -> SandboxResult:
    start = time.monotonic()
    deadline = start + limits.wall_seconds
    try:
        proc = subprocess.Popen(cgroup.wrap(argv) if cgroup is not None else argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                env=env if env is not None else {"PATH": _PATH}, cwd=cwd)
    except BaseException:
        if cgroup is not None:
            cgroup.kill()
        raise
    out = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    total, stopped = 0, None
    try:
        with selectors.DefaultSelector() as sel:
            for pipe in out:
                sel.register(pipe, selectors.EVENT_READ)
            while sel.get_map() and stopped is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    stopped = "wall"
                    break
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    out[key.fileobj] += chunk[: max(0, limits.output_bytes - total)]  # type: ignore[index]
                    total += len(chunk)
                    if total > limits.output_bytes:
                        stopped = "output"
                        break
        if stopped is None:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stopped = "wall"
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        if cgroup is not None:
            cgroup.kill()  # also whatever left bwrap's process group (unisolated mode: setsid daemons)
        for pipe in out:
            pipe.close()  # type: ignore[union-attr]
    seconds = time.monotonic() - start
    stdout, stderr = (bytes(out[p]).decode("utf-8", "replace") for p in (proc.stdout, proc.stderr))
    returncode = None if stopped is not None else proc.returncode
    if isolated and returncode is not None and 128 < returncode <= 128 + 64:
        returncode = 128 - returncode  # bwrap: 128 + N = killed by signal N
    limit = stopped or _which_limit(returncode, stderr, limits, seconds, cgroup)
    return SandboxResult(stdout, stderr, returncode, seconds, limit, isolated)


def _which_limit(returncode: int | None, stderr: str, limits: Limits, seconds: float,
                 cgroup: _PidsCgroup | None) -> str | None:
    """The rlimit that ended a program that exited by itself (None: none did, as far as can be told)."""
    if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and seconds >= limits.cpu_seconds):
        return "cpu"
    if returncode in (0, None):
        return None
    if cgroup is not None and cgroup.limited:
        return "processes"
    if cgroup is None and "BlockingIOError: [Errno 11]" in stderr:
        return "processes"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory"
    return None


__all__ = ["LIMIT_NAMES", "Limits", "SandboxResult", "SandboxUnavailable", "process_limit_enforced", "run_python",
           "sandbox_available"]
