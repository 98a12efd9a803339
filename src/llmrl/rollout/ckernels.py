"""The fast decoder's C kernels (``decode_kernels.c``): compiled on first use, cached, loaded with ctypes.

``decode_kernels(head_dim)`` returns a :class:`DecodeKernels` or None when they cannot be used, in which case the
decoder runs its pure-torch ops instead (same results up to float rounding; ``tests/test_ckernels.py`` checks
both). Nothing here is needed for correctness, only for speed: whatever goes wrong with the compiler or the cache
(an exception included) ends in the pure-torch ops and exactly one warning (``logging``, this module's logger) per
``decode_kernels`` call, which is memoised per head dim; ``LLMRL_C_KERNELS=0`` turns the kernels off.

* Compiler: ``$CC`` or ``cc``, with ``-O3 -march=native``, plus ``-fopenmp`` when this process already runs GNU
  OpenMP (torch's Linux wheels do): the library then links that same ``libgomp.so.1`` and shares torch's threads.
  Otherwise (another OpenMP runtime, or a compiler without OpenMP) it is built single-threaded. It runs in its own
  process group, killed as a whole (driver, cc1, as, ld, or a script's children) when it outlives its time:
  ``LLMRL_C_KERNELS_PROBE_TIMEOUT`` seconds (default 10) for ``$CC --version``, ``LLMRL_C_KERNELS_BUILD_TIMEOUT``
  (default 120) for the build, all attempts together.
* Cache: ``$LLMRL_CACHE_DIR/kernels`` (default ``~/.cache/llmrl/kernels``), one ``.so`` per source, head dim,
  compiler and CPU (``-march=native`` code must not move to another CPU), written atomically (``tmp-*`` names,
  renamed when complete). The directory is created with mode 0700. It is used only if it is owned by this user
  (effective uid) and not writable by group or others; otherwise ``kernels-<uid>`` next to it is used (created
  0700, same checks): silently (info) when ``kernels`` belongs to another user, i.e. ``LLMRL_CACHE_DIR`` is
  shared, with the warning when it is this user's own but group/world-writable (``chmod go-w`` it). If neither is
  private, no kernels.
* Loading: a library is loaded only if it is a regular file (not a symlink) owned by this user and not writable
  by group or others, in a directory that passes the same check; on Linux the checked file is opened once and
  loaded through ``/proc/self/fd``, so what was checked is what runs. A refused file of this user (e.g. mode
  0666) is rebuilt in its place; another user's file is left alone and the kernels are built in a private
  temporary directory for this process only (remove the file to cache again). A cached library that does not load
  or lacks a symbol is rebuilt once; if the fresh one fails too, pure torch.
* Failures are remembered: a build that fails or times out, or a ``--version`` probe that times out, leaves a
  ``*.failed`` marker (keyed by compiler, version, source, flags, head dim and CPU; the probe's by the compiler
  executable's path, size and mtime) that makes other processes skip the compiler for
  ``LLMRL_C_KERNELS_RETRY_AFTER`` seconds (default 86400; 0: no markers); delete it to retry sooner. A probe that
  fails at once (e.g. ``CC=false``) is not marked: it costs nothing to retry.
* Leftovers: ``tmp*`` files of this user in the cache directory are removed when their build process (same host
  and pid namespace) is gone, or when older than an hour (or the build timeout, if longer).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from llmrl.core.procs import pid_alive

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("decode_kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC"]
PROBE_TIMEOUT_ENV, BUILD_TIMEOUT_ENV = "LLMRL_C_KERNELS_PROBE_TIMEOUT", "LLMRL_C_KERNELS_BUILD_TIMEOUT"
RETRY_AFTER_ENV = "LLMRL_C_KERNELS_RETRY_AFTER"
STALE_AFTER_S = 3600.0  # a tmp* file this old is a leftover whatever its pid
_TMP_NAME = re.compile(r"tmp-(\d+)-([A-Za-z0-9._]*)-[A-Za-z0-9_]+\.(?:so|failed)")
_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_PINNED_FDS: list[int] = []  # fds of libraries loaded as /proc/self/fd/N: kept open, see _load


class _NoKernels(Exception):
    """Why the kernels are not used this time (reported by :func:`decode_kernels`, once)."""


class _Untrusted(Exception):
    """A cached file that must not be loaded; ``ours``: it belongs to this user (so it may be replaced)."""

    def __init__(self, msg: str, ours: bool) -> None:
        super().__init__(msg)
        self.ours = ours


class _BadLibrary(Exception):
    """A library that does not load, lacks a symbol or answers nonsense."""


def enabled() -> bool:
    """Whether the C kernels may be used at all (Linux/macOS, not turned off by ``LLMRL_C_KERNELS=0``)."""
    return os.environ.get("LLMRL_C_KERNELS", "1") != "0" and sys.platform != "win32"


def cache_dir() -> Path:
    """The nominal cache directory; :func:`_private_dir` says which one is used (``kernels-<uid>`` if this one is
    not private)."""
    root = os.environ.get("LLMRL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "llmrl")
    return Path(root) / "kernels"


@dataclass(frozen=True)
class _Settings:
    probe_timeout: float
    build_timeout: float
    retry_after: float


def _seconds(name: str, default: float, notes: list[str], allow_zero: bool) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if value > 0 or (allow_zero and value == 0):
        return value
    notes.append(f"{name}={raw!r} is not a number of seconds{'' if allow_zero else ' > 0'}: using {default:g}")
    return default


def _settings(notes: list[str]) -> _Settings:
    return _Settings(_seconds(PROBE_TIMEOUT_ENV, 10.0, notes, False),
                     _seconds(BUILD_TIMEOUT_ENV, 120.0, notes, False),
                     _seconds(RETRY_AFTER_ENV, 86400.0, notes, True))  # fmt: skip


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU model and feature flags (Linux), else the machine name."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        return "\n".join(sorted({ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return cc if shutil.which(cc) else None


def _gnu_openmp_loaded() -> bool:
    """Whether GNU OpenMP (libgomp) is mapped into this process (Linux; False where that cannot be read)."""
    try:
        return "libgomp" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


# ---- trust checks -------------------------------------------------------------------------------------------


def _problem(st: os.stat_result) -> str | None:
    """Why a file or directory with this status must not be trusted, or None."""
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"is writable by its group or others (mode {stat.S_IMODE(st.st_mode):#o})"
    return None


def _dir_problem(d: Path) -> tuple[str, bool] | None:
    """Create ``d`` (mode 0700) if missing; (why it is not private, whether it is this user's) or None."""
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(d, 0o700)
        os.chmod(d, 0o700)  # whatever the umask
    except FileExistsError:
        pass
    except OSError as e:
        return f"cannot be created ({e})", True
    try:
        st = os.stat(d)  # the directory itself may be a symlink the user made: its target is what is checked
    except OSError as e:
        return f"cannot be read ({e})", True
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory", st.st_uid == os.geteuid()
    problem = _problem(st)
    return None if problem is None else (problem, st.st_uid == os.geteuid())


def _private_dir(notes: list[str]) -> Path:
    """The cache directory to use: :func:`cache_dir` if private, else ``kernels-<uid>`` next to it."""
    nominal = cache_dir()
    found = _dir_problem(nominal)
    if found is None:
        return nominal
    other = nominal.with_name(f"kernels-{os.geteuid()}")
    msg = f"the kernel cache {nominal} {found[0]}: not used"
    if found[1]:
        notes.append(f"{msg}{'; `chmod go-w` it to use it again' if 'writable' in found[0] else ''}")
    else:  # a shared LLMRL_CACHE_DIR: expected, nothing was loaded from it
        log.info("llmrl: %s, using %s", msg, other)
    found_other = _dir_problem(other)
    if found_other is not None:
        raise _NoKernels(f"{msg}, and {other} {found_other[0]}")
    return other


def _open_trusted(path: Path) -> int:
    """A read-only fd of ``path`` after checking it and its directory (through fds: no swap in between)."""
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        problem = _problem(os.fstat(dfd))
        if problem is not None:
            raise _NoKernels(f"the kernel cache {path.parent} {problem}")
        try:  # O_NONBLOCK: a FIFO planted there must not block the open
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
        except OSError as e:
            st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise _Untrusted(f"{path} is a symbolic link", st.st_uid == os.geteuid()) from e
            raise
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    problem = _problem(st) or (None if stat.S_ISREG(st.st_mode) else "is not a regular file")
    if problem is not None:
        os.close(fd)
        raise _Untrusted(f"{path} {problem}", st.st_uid == os.geteuid())
    return fd


def _load(path: Path, head_dim: int) -> DecodeKernels:
    """Check and load ``path``: raises _Untrusted (not loaded), _BadLibrary (loaded or not, unusable)."""
    fd = _open_trusted(path)
    proc_path = f"/proc/self/fd/{fd}"
    try:
        lib = ctypes.CDLL(proc_path if os.path.exists(proc_path) else str(path))
    except OSError as e:
        os.close(fd)
        raise _BadLibrary(f"{path} does not load: {e}") from e
    # glibc's dlopen finds already loaded libraries by name first: were fd N closed, a later library opened as
    # /proc/self/fd/N would be answered with this one. The library stays mapped for good anyway.
    _PINNED_FDS.append(fd)
    try:
        return DecodeKernels(lib, head_dim)
    except (AttributeError, ValueError) as e:
        raise _BadLibrary(f"{path} is not usable: {e}") from e


# ---- compiler -----------------------------------------------------------------------------------------------


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a process group of its own, killed as a whole if it outlives ``timeout`` seconds or this
    process is interrupted (killing only the driver would leave cc1, ld or a script's children running)."""
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace", start_new_session=True) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            raise  # Popen.__exit__ closes the pipes and reaps the killed driver
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _host_tag() -> str:
    """This host and pid namespace: a pid in a temporary's name means something only there."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return re.sub(r"[^A-Za-z0-9.]", "_", f"{socket.gethostname()}.{ns}")[:80]


def _tmp_prefix() -> str:
    return f"tmp-{os.getpid()}-{_host_tag()}-"



def _remove_stale(d: Path, settings: _Settings) -> None:
    """Remove this user's ``tmp*`` files in ``d`` left by builds that were killed."""
    now, host, max_age = time.time(), _host_tag(), max(STALE_AFTER_S, settings.build_timeout + 60)
    with os.scandir(d) as entries:
        for e in entries:
            if not e.name.startswith("tmp"):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_uid != os.geteuid() or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                continue  # another user's file is left alone
            m = _TMP_NAME.fullmatch(e.name)
            if (m is not None and m[2] == host and not pid_alive(int(m[1]))) or now - st.st_mtime > max_age:
                try:
                    os.unlink(e.path)
                    log.debug("llmrl: removed the leftover %s", e.path)
                except OSError:
                    pass


def _earlier_failure(marker: Path, settings: _Settings) -> str | None:
    """The reason recorded in ``marker`` if it is this user's and recent enough to be honoured."""
    if settings.retry_after == 0:
        return None
    try:
        st = os.lstat(marker)
    except OSError:
        return None
    age = time.time() - st.st_mtime
    if not stat.S_ISREG(st.st_mode) or _problem(st) is not None or age >= settings.retry_after:
        return None
    try:
        reason = marker.read_text(errors="replace").strip()
    except OSError:
        reason = "?"
    return (f"an earlier attempt failed {max(age, 0) / 60:.0f} min ago and is not tried again for "
            f"{settings.retry_after:g} s ({RETRY_AFTER_ENV}; delete {marker} to retry now):\n{reason}")


def _mark_failed(marker: Path, reason: str, settings: _Settings) -> str:
    """Record a failure for other processes (best effort); the hint to append to the warning."""
    if settings.retry_after == 0:
        return ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(), suffix=".failed", dir=marker.parent)
        with os.fdopen(fd, "w") as f:
            f.write(reason[-4000:] + "\n")
        os.replace(tmp, marker)
    except OSError:
        return ""
    return f"\n(remembered in {marker}: not tried again for {settings.retry_after:g} s, {RETRY_AFTER_ENV})"


def _compiler_id(cc: str) -> str:
    """The compiler executable's identity (a new or upgraded compiler gets a new probe marker)."""
    exe = os.path.realpath(shutil.which(cc) or cc)
    try:
        st = os.stat(exe)
        return f"{cc}\0{exe}\0{st.st_size}\0{st.st_mtime_ns}"
    except OSError:
        return f"{cc}\0{exe}"


def _probe(cc: str, d: Path, settings: _Settings) -> str:
    """``cc --version`` (part of the cache key); raises _NoKernels on a timeout (marked) or a failure."""
    marker = d / f"probe_{hashlib.sha256(_compiler_id(cc).encode()).hexdigest()[:20]}.failed"
    earlier = _earlier_failure(marker, settings)
    if earlier is not None:
        raise _NoKernels(earlier)
    cmd = [cc, "--version"]
    try:
        res = _run(cmd, settings.probe_timeout)
    except subprocess.TimeoutExpired:
        reason = f"`{cc} --version` did not answer within {settings.probe_timeout:g} s ({PROBE_TIMEOUT_ENV})"
        raise _NoKernels(reason + _mark_failed(marker, reason, settings)) from None
    except OSError as e:
        raise _NoKernels(f"`{cc} --version` could not run: {e}") from e
    if res.returncode != 0:
        raise _NoKernels(f"`{cc} --version` failed (exit status {res.returncode}): {res.stderr.strip()[-500:]}")
    return res.stdout


def _locate(cc: str, head_dim: int, notes: list[str], settings: _Settings) -> tuple[Path, list[list[str]]]:
    """(the library's path in the private cache, the OpenMP options to try); cleans the cache of leftovers."""
    d = _private_dir(notes)
    _remove_stale(d, settings)
    src = SOURCE.read_bytes()
    omp_options = [["-fopenmp"], []] if _gnu_openmp_loaded() else [[]]
    version = _probe(cc, d, settings)
    key = hashlib.sha256(b"\0".join([src, str(head_dim).encode(), " ".join(FLAGS).encode(), str(omp_options).encode(),
                                     version.encode(), _cpu_id().encode()])).hexdigest()[:20]
    return d / f"decode_hd{head_dim}_{key}.so", omp_options


def _compile(cc: str, head_dim: int, omp_options: list[list[str]], out: Path, marker: Path,
             settings: _Settings) -> None:
    """Build ``out`` (atomically, mode 0700) unless ``marker`` says not to; raises _NoKernels on failure."""
    earlier = _earlier_failure(marker, settings)
    if earlier is not None:
        raise _NoKernels(earlier)
    deadline, errors, remember = time.monotonic() + settings.build_timeout, [], True
    for omp in omp_options:  # e.g. a compiler without -fopenmp: then the single-threaded build
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(), suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, *FLAGS, *omp, f"-DHD={head_dim}", str(SOURCE), "-o", tmp, "-lm"]
        try:
            res = _run(cmd, max(deadline - time.monotonic(), 0.001))
            if res.returncode == 0:
                os.chmod(tmp, 0o700)  # the linker applies the umask: 0775 under umask 002 would be refused
                os.replace(tmp, out)  # atomic: a concurrent build or a kill never leaves a half-written library
                marker.unlink(missing_ok=True)
                return
            errors.append(f"{' '.join(cmd)}\n{res.stderr.strip()}")
        except subprocess.TimeoutExpired:
            errors.append(f"{' '.join(cmd)}\ntimed out: the build took over {settings.build_timeout:g} s "
                          f"({BUILD_TIMEOUT_ENV})")
            break  # the other attempt would hang as well
        except FileNotFoundError as e:  # our temporary removed under us: not the compiler's fault
            errors.append(f"{' '.join(cmd)}\n{e}")
            remember = False
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    reason = "\n".join(errors)
    raise _NoKernels(reason + (_mark_failed(marker, reason, settings) if remember else ""))


def _build(cc: str, head_dim: int, notes: list[str] | None = None) -> Path:
    """Compile (or find in the cache) the library for ``head_dim``; raises on failure. Nothing is loaded."""
    notes = [] if notes is None else notes
    settings = _settings(notes)
    out, omp_options = _locate(cc, head_dim, notes, settings)
    if not os.path.lexists(out):
        _compile(cc, head_dim, omp_options, out, out.with_suffix(".failed"), settings)
    return out


def _load_fresh(cc: str, head_dim: int, omp_options: list[list[str]], out: Path, marker: Path,
                settings: _Settings) -> DecodeKernels:
    _compile(cc, head_dim, omp_options, out, marker, settings)
    try:
        return _load(out, head_dim)
    except (_Untrusted, _BadLibrary) as e:  # it would fail the same way next time
        raise _NoKernels(f"the freshly built {e}{_mark_failed(marker, str(e), settings)}") from e


def _kernels(cc: str, head_dim: int, notes: list[str]) -> DecodeKernels:
    settings = _settings(notes)
    out, omp_options = _locate(cc, head_dim, notes, settings)
    marker = out.with_suffix(".failed")
    if os.path.lexists(out):
        try:
            return _load(out, head_dim)
        except _Untrusted as e:
            if not e.ours:  # not ours to delete: build this process's copy elsewhere
                notes.append(f"{e}: not loaded, left alone; the kernels are built for this process only "
                             "(remove that file to cache them again)")
                with tempfile.TemporaryDirectory(prefix="llmrl-kernels-") as tmp:
                    return _load_fresh(cc, head_dim, omp_options, Path(tmp) / out.name, marker, settings)
            notes.append(f"{e}: not loaded, built again")
        except _BadLibrary as e:  # e.g. cut short by a full disk
            notes.append(f"the cached {e}: built again")
        out.unlink(missing_ok=True)
    return _load_fresh(cc, head_dim, omp_options, out, marker, settings)


class DecodeKernels:
    """ctypes bindings of ``decode_kernels.c`` for one head dim. Arguments are float32 contiguous CPU tensors
    (not checked here: :class:`llmrl.rollout.fast_decoder.FastDecoder` allocates them). Raises AttributeError
    for a library that lacks a symbol, ValueError for one whose tile width does not fit ``head_dim``."""

    def __init__(self, lib: ctypes.CDLL, head_dim: int) -> None:
        self.head_dim = head_dim
        self._rms, self._swiglu, self._attn = lib.rms_norm, lib.swiglu, lib.attn_step
        lib.tile_width.restype, lib.tile_width.argtypes = _I, []
        self.tile = int(lib.tile_width())  # keys per tile of the attention caches (see decode_kernels.c)
        if self.tile not in (1, 4, 8, 16) or head_dim % self.tile:
            raise ValueError(f"tile width {self.tile} for head dim {head_dim}")
        self._rms.argtypes = [_P, _P, _I, _I, _F]
        self._swiglu.argtypes = [_P, _P, _I]
        self._attn.argtypes = [_P] * 9 + [_I] * 7 + [_F]
        for f in (self._rms, self._swiglu, self._attn):
            f.restype = None

    def rms_norm(self, x: Tensor, out: Tensor, d_eps: float) -> Tensor:
        """out = x / sqrt(sum(x^2, -1) + d_eps) over the rows of ``x`` [rows, D]."""
        self._rms(x.data_ptr(), out.data_ptr(), x.shape[0], x.shape[1], d_eps)
        return out

    def swiglu(self, gu: Tensor, out: Tensor) -> Tensor:
        """out = silu(gu[0]) * gu[1] for ``gu`` [2, ...]."""
        self._swiglu(gu.data_ptr(), out.data_ptr(), out.numel())
        return out

    def attn_step(self, qkv: Tensor, cos: Tensor, sin: Tensor, pk: Tensor, pv: Tensor, plen: Tensor, gk: Tensor,
                  gv: Tensor, out: Tensor, n: int, heads: int, kv_heads: int, step: int, scale: float) -> Tensor:
        """Rotary + cache write + attention of generated token ``step`` (layouts in ``decode_kernels.c``)."""
        B, P, S = qkv.shape[0], pv.shape[2], gv.shape[2]
        assert P % self.tile == 0 and S % self.tile == 0 and pk.shape[2:] == (P // self.tile, self.head_dim, self.tile)
        self._attn(qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), pk.data_ptr(), pv.data_ptr(), plen.data_ptr(),
                   gk.data_ptr(), gv.data_ptr(), out.data_ptr(), B, n, heads, kv_heads, P, S, step, scale)
        return out


@cache
def decode_kernels(head_dim: int) -> DecodeKernels | None:
    """The kernels for ``head_dim`` (built on first call), or None when disabled or unusable (one warning)."""
    if not enabled():
        return None
    cc = _compiler()
    if cc is None:
        log.info("llmrl: no C compiler ($CC or cc); the fast decoder uses its pure-torch ops")
        return None
    notes: list[str] = []
    kernels = None
    try:
        kernels = _kernels(cc, head_dim, notes)
    except _NoKernels as e:
        notes.append(str(e))
    except Exception as e:  # the kernels are optional: nothing here may stop a run
        notes.append(f"{type(e).__name__}: {e}")
    if kernels is None:
        log.warning("llmrl: could not build the decode kernels, using pure-torch ops instead:\n%s", "\n".join(notes))
    elif notes:
        log.warning("llmrl: decode kernels: %s", "\n".join(notes))
    return kernels


def usable(model_dtype: torch.dtype, device: torch.device) -> bool:
    """The kernels are float32 CPU code."""
    return model_dtype == torch.float32 and device.type == "cpu"
