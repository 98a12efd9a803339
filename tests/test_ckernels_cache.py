"""The C kernels' cache is safe and never stalls or stops a run: untrusted libraries are not loaded, hanging
compilers are killed and remembered, leftovers of killed builds are removed, unusable libraries fall back to the
pure-torch ops with one warning."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from llmrl.models import TinyModelSpec, build_tiny_model
from llmrl.rollout import KVCacheSampler, SamplingParams, ckernels
from llmrl.rollout.ckernels import decode_kernels

LOGGER = "llmrl.rollout.ckernels"
STUB = """
#include <stdint.h>
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {{ FILE *f = fopen("{ran}", "w"); if (f) fclose(f); }}
int64_t tile_width(void) {{ return 16; }}
void rms_norm(void) {{}}
void swiglu(void) {{}}
{attn}
"""


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An isolated LLMRL_CACHE_DIR, default settings, decode_kernels' memo cleared before and after."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LLMRL_CACHE_DIR", str(root))
    monkeypatch.setenv("LLMRL_C_KERNELS", "1")
    for name in ("CC", ckernels.PROBE_TIMEOUT_ENV, ckernels.BUILD_TIMEOUT_ENV, ckernels.RETRY_AFTER_ENV):
        monkeypatch.delenv(name, raising=False)
    decode_kernels.cache_clear()
    yield root
    decode_kernels.cache_clear()


def _real_cc() -> str:
    cc = ckernels._compiler()
    if cc is None:
        pytest.skip("no C compiler here")
    return cc


def _plant(path: Path, ran: Path, with_attn: bool = True) -> bytes:
    """Compile a library whose constructor creates ``ran`` (so loading it shows) to ``path``; its bytes."""
    src = path.parent / "planted.c"
    src.write_text(STUB.format(ran=ran, attn="void attn_step(void) {}" if with_attn else ""))
    subprocess.run([_real_cc(), "-shared", "-fPIC", str(src), "-o", str(path)], check=True, timeout=60)
    src.unlink()
    return path.read_bytes()


def _cached_path(head_dim: int) -> Path:
    """Where decode_kernels looks for the library (creates the cache directory, runs the --version probe)."""
    cc = ckernels._compiler()
    assert cc is not None
    return ckernels._locate(cc, head_dim, [], ckernels._settings([]))[0]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _gone(pid: int, within: float = 3.0) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for its reaper counts as ended)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in "ZX":
                return True
            os.kill(pid, 0)
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


# ---- (1), (2): untrusted files and directories are not loaded -------------------------------------------------


def test_library_of_another_user_is_not_loaded_nor_deleted(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    lib = _cached_path(16)
    ran = cache / "planted-ran"
    planted = _plant(lib, ran)
    os.chown(lib, 12345, 12345)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        k = decode_kernels(16)
    assert not ran.exists()  # its constructor never ran
    assert k is not None and k.tile == 16  # built for this process in a private temporary directory
    assert lib.stat().st_uid == 12345 and lib.read_bytes() == planted  # left alone
    (msg,) = _warnings(caplog)
    assert "owned by uid 12345" in msg and "not loaded" in msg
    assert sorted(p.name for p in lib.parent.iterdir()) == [lib.name]  # no copy cached in its place


@pytest.mark.parametrize("how", ["file mode 0666", "symlink"])
def test_own_unsafe_file_is_not_loaded_but_rebuilt(cache: Path, caplog: pytest.LogCaptureFixture, how: str) -> None:
    lib = _cached_path(16)
    ran = cache / "planted-ran"
    if how == "symlink":
        target = cache / "elsewhere.so"
        _plant(target, ran)
        lib.symlink_to(target)
    else:
        _plant(lib, ran)
        lib.chmod(0o666)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        k = decode_kernels(16)
    assert not ran.exists()
    assert k is not None and k.tile == 16
    st = lib.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and lib.read_bytes()[:4] == b"\x7fELF"
    (msg,) = _warnings(caplog)
    assert ("writable by its group or others (mode 0o666)" if how != "symlink" else "symbolic link") in msg


def test_unsafe_cache_directory_is_replaced_by_a_per_user_one(cache: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    lib = _cached_path(16)
    ran = cache / "planted-ran"
    _plant(lib, ran)
    lib.parent.chmod(0o775)  # this user's own, but group-writable: someone else may have put the file there
    own = cache / f"kernels-{os.geteuid()}"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        k = decode_kernels(16)
    assert not ran.exists() and k is not None
    assert stat.S_IMODE(own.stat().st_mode) == 0o700 and (own / lib.name).is_file()
    (msg,) = _warnings(caplog)
    assert "writable by its group or others (mode 0o775)" in msg and "chmod go-w" in msg
    # another user's "kernels" (a shared LLMRL_CACHE_DIR): kernels-<uid> is used without a warning
    shutil.rmtree(own)
    lib.parent.chmod(0o755)
    os.chown(lib.parent, 12345, 12345)
    decode_kernels.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert decode_kernels(16) is not None
    assert not ran.exists() and not _warnings(caplog) and (own / lib.name).is_file()
    # and when kernels-<uid> is not private either: no kernels, one warning
    own.chmod(0o777)
    decode_kernels.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert decode_kernels(16) is None
    (msg,) = _warnings(caplog)
    assert "owned by uid 12345" in msg and "mode 0o777" in msg and not ran.exists()


def test_new_cache_is_private_under_a_permissive_umask(cache: Path) -> None:
    _real_cc()
    old = os.umask(0o002)
    try:
        k = decode_kernels(16)
    finally:
        os.umask(old)
    d = cache / "kernels"
    (lib,) = d.glob("*.so")
    assert k is not None and stat.S_IMODE(d.stat().st_mode) == 0o700 and stat.S_IMODE(lib.stat().st_mode) == 0o700


# ---- (3): hanging compilers are killed, remembered, and do not stall the next process ----------------------------


def test_compiler_hanging_on_the_build_falls_back_within_the_timeout(
        monkeypatch: pytest.MonkeyPatch, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls, pidfile = tmp_path / "calls", tmp_path / "sleep.pid"
    cc = _script(tmp_path / "hang-cc", f"""echo "$1" >> {calls}
case "$1" in --version) echo fakecc 1.0; exit 0;; esac
sleep 1000 &
echo $! > {pidfile}
wait
""")
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv(ckernels.BUILD_TIMEOUT_ENV, "1")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        t0 = time.monotonic()
        assert decode_kernels(16) is None
        first = time.monotonic() - t0
        decode_kernels.cache_clear()  # as a new process would
        t0 = time.monotonic()
        assert decode_kernels(16) is None
        second = time.monotonic() - t0
    print(f"\nbuild hangs: fallback after {first:.2f} s (timeout 1 s); next process {second:.3f} s")
    assert 1.0 <= first < 4.0 and second < 0.5
    assert _gone(int(pidfile.read_text()))  # the compiler's whole process group was killed
    assert calls.read_text().split().count("--version") == 2 and len(calls.read_text().split()) == 3
    msgs = _warnings(caplog)
    assert len(msgs) == 2 and "timed out" in msgs[0] and "not tried again" in msgs[1]
    d = cache / "kernels"
    (marker,) = d.glob("decode_hd16_*.failed")
    assert not list(d.glob("tmp*")) and not list(d.glob("*.so"))
    old = time.time() - 2 * 86400  # an expired marker: the build is tried again
    os.utime(marker, (old, old))
    decode_kernels.cache_clear()
    assert decode_kernels(16) is None and len(calls.read_text().split()) == 5


def test_compiler_hanging_on_version_falls_back_within_the_timeout(
        monkeypatch: pytest.MonkeyPatch, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls, pidfile = tmp_path / "calls", tmp_path / "sleep.pid"
    cc = _script(tmp_path / "hang-cc", f"""echo "$1" >> {calls}
sleep 1000 &
echo $! > {pidfile}
wait
""")
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv(ckernels.PROBE_TIMEOUT_ENV, "1")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        t0 = time.monotonic()
        assert decode_kernels(16) is None
        first = time.monotonic() - t0
        decode_kernels.cache_clear()
        t0 = time.monotonic()
        assert decode_kernels(32) is None
        second = time.monotonic() - t0
    print(f"\n--version hangs: fallback after {first:.2f} s (timeout 1 s); next process {second:.3f} s")
    assert 1.0 <= first < 4.0 and second < 0.5
    assert _gone(int(pidfile.read_text()))
    assert calls.read_text().split() == ["--version"]  # the second process did not run the compiler at all
    msgs = _warnings(caplog)
    assert len(msgs) == 2 and "did not answer within 1 s" in msgs[0] and "not tried again" in msgs[1]
    assert len(list((cache / "kernels").glob("probe_*.failed"))) == 1
    monkeypatch.setenv(ckernels.RETRY_AFTER_ENV, "0")  # markers off: tried again
    decode_kernels.cache_clear()
    assert decode_kernels(16) is None and calls.read_text().split() == ["--version"] * 2


# ---- (4): libraries that load but are unusable, and any other error: pure torch, one warning ----------------------


def test_cached_library_lacking_a_symbol_is_rebuilt(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    lib = _cached_path(16)
    _plant(lib, cache / "planted-ran", with_attn=False)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        k = decode_kernels(16)
    assert k is not None and k.tile == 16
    (msg,) = _warnings(caplog)
    assert "attn_step" in msg and "built again" in msg
    assert b"attn_step" in lib.read_bytes()


def test_library_lacking_a_symbol_falls_back_without_crashing(
        monkeypatch: pytest.MonkeyPatch, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    real = shutil.which(_real_cc())
    stub = tmp_path / "stub.c"
    stub.write_text(STUB.format(ran=tmp_path / "ran", attn=""))
    cc = _script(tmp_path / "stub-cc", f"""case "$1" in --version) echo stub-cc 1.0; exit 0;; esac
out=; prev=
for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
exec {real} -shared -fPIC {stub} -o "$out"
""")
    monkeypatch.setenv("CC", str(cc))
    lib = _cached_path(16)
    _plant(lib, tmp_path / "ran", with_attn=False)  # cached and lacking attn_step; so is every rebuild
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert decode_kernels(16) is None
        assert decode_kernels(16) is None  # memoised: reported once
    (msg,) = _warnings(caplog)
    assert "could not build" in msg and msg.count("attn_step") >= 2
    assert lib.with_suffix(".failed").is_file()  # the next process does not rebuild it
    model, tok = build_tiny_model(TinyModelSpec(hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=2,
                                                intermediate_size=128), seed=0)  # fmt: skip
    gens = KVCacheSampler(model, tok).generate([tok.encode("1+1=")], SamplingParams(max_new_tokens=4, n=2, seed=0))
    assert len(gens[0]) == 2


def test_unexpected_error_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch, cache: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    _real_cc()

    def broken(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ckernels, "_locate", broken)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert decode_kernels(16) is None
    (msg,) = _warnings(caplog)
    assert "RuntimeError: disk on fire" in msg


# ---- (5): leftovers of killed builds -----------------------------------------------------------------------------


def test_leftovers_of_killed_builds_are_removed(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    d = cache / "kernels"
    d.mkdir(parents=True, mode=0o700)
    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that has ended: a build that was killed
    dead, host, hours_ago = proc.pid, ckernels._host_tag(), time.time() - 2 * 3600
    removed = [f"tmp-{dead}-{host}-abc123.so", f"tmp-{dead}-{host}-x_9.failed", "tmpk2j4h5.so"]
    kept = [f"tmp-{os.getpid()}-{host}-live12.so", f"tmp-{dead}-otherhost-abc123.so", "tmpfresh1.so",
            "tmp-old-of-another-user.so", "decode_hd16_0123456789abcdef0123.so"]
    for name in removed + kept:
        (d / name).write_bytes(b"x")
    for name in ("tmpk2j4h5.so", "tmp-old-of-another-user.so", "decode_hd16_0123456789abcdef0123.so"):
        os.utime(d / name, (hours_ago, hours_ago))
    os.chown(d / "tmp-old-of-another-user.so", 12345, 12345)
    monkeypatch.setenv("CC", "false")  # fails at once: no kernels, but the cache is cleaned on the way
    assert decode_kernels(16) is None
    assert sorted(p.name for p in d.iterdir()) == sorted(kept)
