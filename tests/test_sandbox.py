"""The sandbox for model-written code (llmrl.rollout.sandbox): isolation, limits, fallback, bad input."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
import warnings

import pytest

import llmrl.rollout.sandbox as sandbox
from llmrl.rewards.pool import PoolOptions, RewardPool
from llmrl.rollout.sandbox import Limits, SandboxUnavailable, run_python, sandbox_available

needs_bwrap = pytest.mark.skipif(not sandbox_available(),
                                 reason="bubblewrap (bwrap) is not installed or cannot create namespaces here "
                                        "(apt-get install bubblewrap)")
needs_nproc = pytest.mark.skipif(not sandbox.process_limit_enforced(),
                                 reason="root without a writable pids cgroup: the process limit is not enforced, "
                                        "a fork bomb would hit the machine")


@pytest.fixture
def unisolated(monkeypatch):
    """Pretend bwrap does not work: the fallback path, with its one-time warning re-armed."""
    monkeypatch.setattr(sandbox, "_bwrap_mode", lambda: None)
    monkeypatch.setattr(sandbox, "_warned", set())
    monkeypatch.delenv("LLMRL_SANDBOX", raising=False)


def _no_process_with(marker: str) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        return False
            except OSError:
                pass
    return True


# ------------------------------------------------------------------------------------------- basics
@needs_bwrap
def test_stdout_stdin_files_and_clean_environment(monkeypatch):
    monkeypatch.setenv("LLMRL_TEST_SECRET", "hunter2-sandbox")
    code = ("import os, sys\nprint(input().upper())\nprint(open('data/x.txt').read())\nprint(os.getcwd())\n"
            "print(sorted(os.environ))\nprint('secret' if 'hunter2' in open('/proc/self/environ').read() else '-')\n"
            f"print(os.path.exists('/proc/{os.getpid()}/environ') and 'hunter2' in open('/proc/{os.getpid()}/environ').read())\n"
            "print('err', file=sys.stderr)")
    r = run_python(code, stdin="hello\n", files={"data/x.txt": "payload"})
    assert (r.returncode, r.limit, r.isolated) == (0, None, True), r.stderr
    assert r.stdout.split("\n") == ["HELLO", "payload", sandbox.WORK_DIR, "['HOME', 'LANG', 'PATH']", "-", "False", ""]
    assert r.stderr == "err\n"
    assert "hunter2" not in r.stdout


@needs_bwrap
def test_no_network_not_even_to_the_hosts_localhost():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.1)
    port = server.getsockname()[1]
    code = ("import socket\n"
            f"for addr in [('1.1.1.1', 53), ('1.1.1.1', 443), ('127.0.0.1', {port})]:\n"
            "    try:\n"
            "        socket.create_connection(addr, timeout=2).close()\n"
            "        print('connected', addr)\n"
            "    except OSError as e:\n"
            "        print('failed', type(e).__name__)\n")
    try:
        r = run_python(code)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever reached the test's server
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("failed") == 3 and "connected" not in r.stdout


@needs_bwrap
def test_no_writes_outside_the_sandbox_tmp(tmp_path):
    name = f"llmrl-sandbox-probe-{uuid.uuid4().hex}"
    targets = [str(tmp_path / name), f"/work/{name}", os.path.join(os.getcwd(), name), f"/var/tmp/{name}"]
    code = ("import os\n"
            f"for path in {targets!r}:\n"
            "    try:\n"
            "        open(path, 'w').write('x')\n"
            "        print('wrote', path)\n"
            "    except OSError as e:\n"
            "        print('refused', e.errno)\n"
            f"open('/tmp/{name}', 'w').write('inside')\n"
            f"open('{name}', 'w').write('inside')\n"
            f"print(open('/tmp/{name}').read())")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("refused") == 4 and "wrote" not in r.stdout
    assert r.stdout.endswith("inside\n")  # the sandbox's own tmpfs is writable ...
    for path in [*targets, f"/tmp/{name}"]:  # ... and nothing reached the host
        assert not os.path.exists(path), path


# ------------------------------------------------------------------------------------------- limits
@needs_bwrap
@needs_nproc
def test_fork_bomb_is_stopped_by_the_process_limit():
    r = run_python("import os\nwhile True:\n    os.fork()", limits=Limits(processes=16, wall_seconds=20))
    assert r.limit == "processes", (r.returncode, r.stderr[-300:])
    assert r.seconds < 5.0
    assert run_python("print('next')").stdout == "next\n"  # the caller goes on


@needs_bwrap
def test_infinite_loop_is_stopped_by_the_cpu_limit():
    r = run_python("while True:\n    pass", limits=Limits(cpu_seconds=1, wall_seconds=20))
    assert (r.limit, r.returncode) == ("cpu", -24)  # SIGXCPU
    assert 1.0 <= r.seconds < 10.0  # >= 1 s of CPU; the wall clock is longer on a busy machine


@needs_bwrap
def test_sleep_is_stopped_by_the_wall_limit():
    r = run_python("import time\nprint('start', flush=True)\ntime.sleep(60)", limits=Limits(wall_seconds=1))
    assert (r.limit, r.returncode, r.stdout) == ("wall", None, "start\n")
    assert 1.0 <= r.seconds < 3.0


@needs_bwrap
def test_memory_hog_is_stopped_by_the_memory_limit():
    r = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))", limits=Limits(memory_mb=128))
    assert r.limit == "memory" and r.returncode == 1 and "MemoryError" in r.stderr
    assert r.seconds < 5.0


@needs_bwrap
def test_output_flood_is_truncated():
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('y' * 4096)", limits=Limits(output_bytes=10_000))
    assert (r.limit, r.returncode) == ("output", None)
    assert r.stdout == "y" * 10_000 and r.stderr == ""
    assert r.seconds < 5.0


@needs_bwrap
def test_nothing_outlives_the_call():
    marker = f"{time.time_ns() % 10**9}.123"
    code = ("import os, subprocess, time\n"
            f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            f"    os.execvp('sleep', ['sleep', '{marker}'])\n"
            "time.sleep(0.5)\n"
            "print('bye')")
    r = run_python(code, limits=Limits(wall_seconds=5))
    assert r.stdout == "bye\n" and r.returncode == 0
    deadline = time.monotonic() + 2.0
    while not _no_process_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _no_process_with(marker)


@needs_bwrap
def test_runs_inside_a_reward_pool_worker():
    def reward(completion, sample):
        r = run_python(completion, limits=Limits(wall_seconds=2, cpu_seconds=1))
        return float(r.stdout.strip() or -1.0) if r.limit is None else -2.0

    with RewardPool({"r": reward}, PoolOptions(workers=2, timeout=8)) as pool:
        outs = pool.score(["print(6 * 7)", "while True: pass", "import time; time.sleep(30)"], [{}, {}, {}])
    assert [o.total for o in outs] == [42.0, -2.0, -2.0]
    assert all(not o.timed_out and not o.failed for o in outs)


# ------------------------------------------------------------------------------------------- fallback
def test_fallback_warns_once_and_keeps_limits(unisolated, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMRL_TEST_SECRET", "hunter2-fallback")
    with pytest.warns(RuntimeWarning, match="UNISOLATED"):
        r = run_python("import os\nprint(sorted(os.environ), os.getcwd() != os.environ['HOME'])")
    assert (r.isolated, r.returncode) == (False, 0)
    assert r.stdout == "['HOME', 'LANG', 'PATH'] False\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call does not warn again
        loop = run_python("while True: pass", limits=Limits(cpu_seconds=1, wall_seconds=20))
        sleep = run_python("import time; time.sleep(60)", limits=Limits(wall_seconds=0.5))
        hog = run_python("x = bytearray(1 << 30)", limits=Limits(memory_mb=128))
    assert (loop.limit, loop.returncode) == ("cpu", -24)
    assert (sleep.limit, hog.limit) == ("wall", "memory")
    assert 0.5 <= sleep.seconds < 2.5


def test_require_isolation_refuses(unisolated, monkeypatch):
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        run_python("print(1)", require_isolation=True)
    monkeypatch.setenv("LLMRL_SANDBOX", "require")
    with pytest.raises(SandboxUnavailable, match="LLMRL_SANDBOX=require"):
        run_python("print(1)")
    with pytest.warns(RuntimeWarning):  # the argument wins over the environment variable
        assert run_python("print(1)", require_isolation=False).stdout == "1\n"
    monkeypatch.setenv("LLMRL_SANDBOX", "sometimes")
    with pytest.raises(ValueError, match="LLMRL_SANDBOX must be 'auto' or 'require'"):
        run_python("print(1)")


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("field,value", [("cpu_seconds", 0), ("wall_seconds", -1.0), ("memory_mb", 0.5),
                                         ("processes", True), ("output_bytes", 0), ("cpu_seconds", float("nan"))])
def test_limits_are_validated(field, value):
    with pytest.raises(ValueError, match=f"Limits.{field} must be"):
        Limits(**{field: value})


@pytest.mark.parametrize("kwargs,error,match", [
    ({"files": {"../x": ""}}, ValueError, "relative paths"),
    ({"files": {"/etc/x": ""}}, ValueError, "relative paths"),
    ({"files": {"main.py": ""}}, ValueError, "main.py"),
    ({"files": {"a.txt": b"bytes"}}, TypeError, r"files\['a.txt'\] must be a str"),
    ({"stdin": b"x"}, TypeError, "stdin must be a str"),
    ({"limits": {"cpu_seconds": 1}}, TypeError, "limits must be a Limits"),
    ({"require_isolation": "yes"}, TypeError, "require_isolation must be a bool or None"),
])
def test_bad_arguments(kwargs, error, match, monkeypatch):
    monkeypatch.setenv("LLMRL_SANDBOX", "sometimes")  # checked with or without bwrap
    with pytest.raises(ValueError, match="LLMRL_SANDBOX must be 'auto' or 'require'"):
        run_python("print(1)")
    monkeypatch.delenv("LLMRL_SANDBOX")
    with pytest.raises(error, match=match):
        run_python("print(1)", **kwargs)
    with pytest.raises(TypeError, match="code must be a str"):
        run_python(b"print(1)")  # type: ignore[arg-type]


def test_concurrent_calls_from_threads_are_independent():
    results = [None] * 4

    def go(i):
        results[i] = run_python(f"print({i} * 10)", limits=Limits(wall_seconds=20))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout for r in results] == ["0\n", "10\n", "20\n", "30\n"]
