"""What stops each hostile program in the sandbox, and how long it takes (docs/sandbox.md).

Runs each program of :data:`PROGRAMS` ``--repeat`` times through :func:`llmrl.rollout.sandbox.run_python` with
the default :class:`~llmrl.rollout.sandbox.Limits` (or ``--code-tests``: the limits of the ``code_tests`` task,
cpu 2 s / wall 3 s / 256 MiB / 8 processes; the "loop, cpu 1 wall 30" row always has cpu 1 s, wall 30 s) and
prints, per program: the limit that stopped it, its return code and the median / max seconds of the whole call;
``--unisolated`` runs the fallback instead of bwrap.

    python benchmarks/sandbox.py
    python benchmarks/sandbox.py --code-tests --repeat 5
    python benchmarks/sandbox.py --unisolated
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys

import llmrl.rollout.sandbox as sandbox
from llmrl.rollout.sandbox import Limits, run_python

PROBE = "/work/llmrl-sandbox-probe"
"""Written by the "write /work" program (it must fail under bwrap; the unisolated fallback succeeds, then it is
removed)."""
PROGRAMS = {
    "print(1)": "print(1)",
    "infinite loop": "while True:\n    pass",
    "loop, cpu 1 wall 30": "while True:\n    pass",
    "sleep": "import time\ntime.sleep(3600)",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "memory hog": "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))",
    "output flood": "import sys\nwhile True:\n    sys.stdout.write('y' * 4096)",
    "connect 1.1.1.1": "import socket\nsocket.create_connection(('1.1.1.1', 443), timeout=5)",
    "write /work": f"open({PROBE!r}, 'w')",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--code-tests", action="store_true", help="the code_tests task's limits")
    ap.add_argument("--unisolated", action="store_true", help="the fallback without bwrap")
    args = ap.parse_args()
    if args.unisolated:
        sandbox._bwrap_mode = lambda: None  # type: ignore[assignment]
    elif not sandbox.sandbox_available():
        print("bwrap is not available here", file=sys.stderr)
        return 1
    limits = (Limits(cpu_seconds=2.0, wall_seconds=3.0, memory_mb=256, processes=8) if args.code_tests
              else Limits())
    print(f"limits: {limits}; isolated: {not args.unisolated}; euid {os.geteuid()}; "
          f"process limit via {'pids cgroup' if sandbox._pids_parent() else 'RLIMIT_NPROC'}; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'program':18s} {'limit':10s} {'rc':>5s} {'median s':>9s} {'max s':>7s}  last stderr line")
    for name, code in PROGRAMS.items():
        lim = dataclasses.replace(limits, cpu_seconds=1, wall_seconds=30) if "cpu 1" in name else limits
        runs = [run_python(code, limits=lim) for _ in range(args.repeat)]
        times = [r.seconds for r in runs]
        limit = "/".join(sorted({str(r.limit) for r in runs}))
        rc = "/".join(sorted({str(r.returncode) for r in runs}))
        err = (runs[-1].stderr.strip().splitlines() or [""])[-1][:60]
        print(f"{name:18s} {limit:10s} {rc:>5s} {statistics.median(times):9.2f} {max(times):7.2f}  {err}")
    if os.path.exists(PROBE):
        os.remove(PROBE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
