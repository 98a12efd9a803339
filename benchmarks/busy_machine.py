"""The quickstart on an idle machine and on one where another process keeps cores busy, before and after
``threads: 0`` (auto) replaced torch's default of every core.

For each side ("before": a git revision, default ``HEAD``, checked out with ``git worktree add`` into a temporary
directory and run with ``PYTHONPATH`` at its ``src`` — this checkout's git state is not touched, the worktree is
removed afterwards; "after": this checkout) and each condition ("idle"; "busy": ``--spinners`` processes running
``while True: pass``, started 2 s before the run and stopped after it), runs ``llmrl quickstart`` with the same
overrides (``--overrides``, default a shortened run: 200 SFT steps, 10 RL steps, 100 held-out prompts;
``--full`` for the real quickstart) in a fresh process, and prints:

    side    condition  threads  load  SFT it/s  RL s  process s

(threads: what torch used; load: the 1-minute load average when the run started; SFT it/s: SFT steps / SFT
seconds from summary.json; RL s: the rest of the run, RL steps and evaluations; process s: the whole command)
and, per side, the busy/idle ratio of the process time and of SFT it/s. ``--repeat`` runs everything that many
times (the conditions and sides taking turns) and gives the median and the spread.

    python benchmarks/busy_machine.py                 # shortened, before = HEAD
    python benchmarks/busy_machine.py --full --repeat 2
    python benchmarks/busy_machine.py --no-baseline --overrides "sft.steps=100 steps=4"

Target: busy/idle within 2x (torch's default of 2 threads on 2 cores was ~100x slower with one core busy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revisions import add_worktree, remove_worktree  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHORT = "sft.steps=200 steps=10 task.test_size=100"
# llmrl quickstart as the script runs it, plus torch's thread count on stderr at the end
RUNNER = ("import atexit, sys\n"
          "def _threads():\n"
          "    if 'torch' in sys.modules:\n"
          "        sys.stderr.write('\\n__threads__ %d\\n' % sys.modules['torch'].get_num_threads())\n"
          "atexit.register(_threads)\n"
          "from llmrl.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")



def run_quickstart(root: Path, out: Path, overrides: list[str], spinners: int, timeout: float) -> dict[str, Any]:
    """One quickstart with ``root/src`` on the path, ``spinners`` busy processes beside it."""
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(spinners)]
    try:
        if spin:
            time.sleep(2.0)
        load = os.getloadavg()[0]
        env = {**os.environ, "PYTHONPATH": str(root / "src")}
        argv = ["quickstart", "--output-dir", str(out), "--overwrite", "progress=false", *overrides]
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", RUNNER, *argv], cwd=root, env=env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"load": load, "timeout": True, "process_s": timeout}
        seconds = time.perf_counter() - t
    finally:
        for p in spin:
            p.kill()
            p.wait()
    if proc.returncode != 0:
        raise SystemExit(f"quickstart failed in {root} ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    marks = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("__threads__")]
    sft_steps = int(next((o.split("=", 1)[1] for o in overrides if o.startswith("sft.steps=")), 2000))
    return {"load": load, "timeout": False, "threads": int(marks[-1]) if marks else None,
            "sft_it_s": sft_steps / summary["sft_seconds"] if summary["sft_seconds"] else float("nan"),
            "rl_s": summary["wall_seconds"] - summary["sft_seconds"], "process_s": seconds,
            "accuracy_after": summary.get("accuracy_after")}


def _spread(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def report(results: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    head = (f"{'side':8s} {'condition':10s} {'threads':>7s} {'load':>12s} {'SFT it/s':>20s} {'RL s':>20s} "
            f"{'process s':>22s}")
    lines = [head, "-" * len(head)]
    for (side, cond), runs in results.items():
        done = [r for r in runs if not r["timeout"]]
        threads = sorted({r["threads"] for r in done})
        row = (f"{side:8s} {cond:10s} {','.join(map(str, threads)) or '-':>7s} "
               f"{_spread([r['load'] for r in runs], '.2f'):>12s} ")
        if done:
            row += (f"{_spread([r['sft_it_s'] for r in done], '.2f'):>20s} {_spread([r['rl_s'] for r in done], '.1f'):>20s} "
                    f"{_spread([r['process_s'] for r in done], '.1f'):>22s}")
        timeouts = len(runs) - len(done)
        lines.append(row + (f"  ({timeouts} run(s) stopped at the time limit)" if timeouts else ""))
    for side in dict.fromkeys(s for s, _ in results):
        idle = [r for r in results.get((side, "idle"), []) if not r["timeout"]]
        busy = [r for r in results.get((side, "busy"), []) if not r["timeout"]]
        if idle and busy:
            t = statistics.median(r["process_s"] for r in busy) / statistics.median(r["process_s"] for r in idle)
            s = statistics.median(r["sft_it_s"] for r in idle) / statistics.median(r["sft_it_s"] for r in busy)
            lines.append(f"{side}: busy/idle process time {t:.2f}x, SFT it/s idle/busy {s:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overrides", default=SHORT, help=f"quickstart overrides, both sides (default: {SHORT!r})")
    ap.add_argument("--full", action="store_true", help="the whole quickstart (no overrides)")
    ap.add_argument("--spinners", type=int, default=1, help="busy processes in the busy condition")
    ap.add_argument("--repeat", type=int, default=1, help="runs per side and condition")
    ap.add_argument("--baseline", default="HEAD", help="git revision timed as 'before' (default HEAD)")
    ap.add_argument("--no-baseline", action="store_true", help="time this checkout only")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one quickstart may take")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    overrides = [] if args.full else args.overrides.split()
    worktree = None if args.no_baseline else add_worktree(args.baseline, "llmrl_busy_")
    sides = {"after": REPO} if worktree is None else {"before": worktree, "after": REPO}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {(s, c): [] for s in sides for c in ("idle", "busy")}
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="llmrl_busy_runs_") as tmp:
            for _ in range(args.repeat):
                for cond in ("idle", "busy"):
                    for side, root in sides.items():
                        r = run_quickstart(root, Path(tmp) / f"{side}_{cond}", overrides,
                                           args.spinners if cond == "busy" else 0, args.timeout)
                        results[(side, cond)].append(r)
                        print(f"# {side} {cond}: {json.dumps(r)}", file=sys.stderr, flush=True)
    finally:
        if worktree is not None:
            remove_worktree(worktree)
    load_after = os.getloadavg()
    out = {"results": {f"{s}/{c}": v for (s, c), v in results.items()}, "overrides": overrides,
           "spinners": args.spinners, "load_before": load_before, "load_after": load_after, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(report(results))
        print(f"quickstart {' '.join(overrides) or '(full)'}; busy = {args.spinners} spinning process(es); "
              f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, after "
              f"{'/'.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} CPUs")
    return out


if __name__ == "__main__":
    main()
