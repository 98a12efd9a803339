"""The fast decoder's C kernels (``decode_kernels.c``): compiled on first use, cached, loaded with ctypes.

``decode_kernels(head_dim)`` returns a :class:`DecodeKernels` or None when they cannot be used, in which case the
decoder runs its pure-torch ops instead (same results up to float rounding; ``tests/test_ckernels.py`` checks
both). Nothing here is needed for correctness, only for speed.

* Compiler: ``$CC`` or ``cc``, with ``-O3 -march=native``, plus ``-fopenmp`` when this process already runs GNU
  OpenMP (torch's Linux wheels do): the library then links that same ``libgomp.so.1`` and shares torch's threads.
  Otherwise (another OpenMP runtime, or a compiler without OpenMP) it is built single-threaded.
* Cache: ``$LLMRL_CACHE_DIR/kernels`` (default ``~/.cache/llmrl/kernels``), one ``.so`` per source, head dim,
  compiler and CPU (``-march=native`` code must not move to another CPU), written atomically.
* ``LLMRL_C_KERNELS=0`` turns them off. A failed build is reported once (logging) and not retried in the process;
  a cached library that does not load is deleted and built again.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("decode_kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC"]
_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


def enabled() -> bool:
    """Whether the C kernels may be used at all (Linux/macOS, not turned off by ``LLMRL_C_KERNELS=0``)."""
    return os.environ.get("LLMRL_C_KERNELS", "1") != "0" and sys.platform != "win32"


def cache_dir() -> Path:
    root = os.environ.get("LLMRL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "llmrl")
    return Path(root) / "kernels"


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


def _build(cc: str, head_dim: int) -> Path:
    """Compile (or find in the cache) the library for ``head_dim``; raises on failure."""
    src = SOURCE.read_bytes()
    omp_options = [["-fopenmp"], []] if _gnu_openmp_loaded() else [[]]
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(b"\0".join([src, str(head_dim).encode(), " ".join(FLAGS).encode(), str(omp_options).encode(),
                                     version.encode(), _cpu_id().encode()])).hexdigest()[:20]
    out = cache_dir() / f"decode_hd{head_dim}_{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for omp in omp_options:  # e.g. a compiler without -fopenmp: then the single-threaded build
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, *FLAGS, *omp, f"-DHD={head_dim}", str(SOURCE), "-o", tmp, "-lm"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if res.returncode == 0:
            os.replace(tmp, out)  # atomic: a concurrent build or a kill never leaves a half-written library
            return out
        os.unlink(tmp)
        errors.append(f"{' '.join(cmd)}\n{res.stderr.strip()}")
    raise RuntimeError("\n".join(errors))


class DecodeKernels:
    """ctypes bindings of ``decode_kernels.c`` for one head dim. Arguments are float32 contiguous CPU tensors
    (not checked here: :class:`llmrl.rollout.fast_decoder.FastDecoder` allocates them)."""

    def __init__(self, path: Path, head_dim: int) -> None:
        self.head_dim = head_dim
        lib = ctypes.CDLL(str(path))
        self._rms, self._swiglu, self._attn = lib.rms_norm, lib.swiglu, lib.attn_step
        lib.tile_width.restype, lib.tile_width.argtypes = _I, []
        self.tile = int(lib.tile_width())  # keys per tile of the attention caches (see decode_kernels.c)
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
    """The kernels for ``head_dim`` (built on first call), or None when disabled or unbuildable."""
    if not enabled():
        return None
    cc = _compiler()
    if cc is None:
        log.info("llmrl: no C compiler ($CC or cc); the fast decoder uses its pure-torch ops")
        return None
    try:
        path = _build(cc, head_dim)
        try:
            return DecodeKernels(path, head_dim)
        except OSError:  # a cached library that does not load (e.g. cut short by a full disk): build it again
            path.unlink(missing_ok=True)
            return DecodeKernels(_build(cc, head_dim), head_dim)
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning("llmrl: could not build the decode kernels, using pure-torch ops instead:\n%s", e)
        return None


def usable(model_dtype: torch.dtype, device: torch.device) -> bool:
    """The kernels are float32 CPU code."""
    return model_dtype == torch.float32 and device.type == "cpu"
