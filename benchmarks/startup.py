"""Start-up time of the ``llmrl`` commands that do not train, before (a git revision) and after (this checkout).

Each command runs ``--runs`` times (default 7) in a fresh interpreter, the two sides taking turns so that a
change in the machine's load hits both; the table gives the median wall seconds (min-max) and which heavy
modules (torch, transformers, numpy) each side imported. "Before" is ``--baseline`` (default ``HEAD``),
checked out with ``git worktree add`` into a temporary directory (this checkout's branch, index and files are
not touched) and run with ``PYTHONPATH`` at its ``src``; the worktree is removed afterwards. ``--no-baseline``
times this checkout only. The command runs as the installed ``llmrl`` script does
(``from llmrl.cli import main``), with stdout and stderr to /dev/null, from the root of its checkout.

    python benchmarks/startup.py                  # table, with the load average before and after
    python benchmarks/startup.py --runs 15 --json

Target: under 1 s for each command (the task list in ``COMMANDS``), on a busy laptop too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revisions import add_worktree, remove_worktree  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    "--help",
    "tasks list",
    "tasks sample countdown --n 2",
    "config",
    "config trainer=dpo",
    "reward countdown --help",
    "train --help",
    "config recipes/countdown_grpo.yaml",
    "config recipes/dpo.yaml",
    "quickstart --print-config",
]
HEAVY = ("torch", "transformers", "numpy")
# what the llmrl script does, plus one line on stderr at exit naming the heavy modules that were imported
RUNNER = ("import atexit, sys\n"
          f"atexit.register(lambda: sys.stderr.write('\\n__heavy__ ' + ','.join(m for m in {HEAVY!r} "
          "if m in sys.modules) + '\\n'))\n"
          "from llmrl.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


def run_once(root: Path, command: str) -> tuple[float, int, str]:
    """(wall seconds, exit code, heavy modules imported) of one ``llmrl COMMAND`` with ``root/src`` on the path."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, *command.split()], cwd=root, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    seconds = time.perf_counter() - t
    marks = [line for line in proc.stderr.splitlines() if line.startswith("__heavy__")]
    return seconds, proc.returncode, marks[-1].split(" ", 1)[1].strip() if marks else "?"


def imported_from(root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    out = subprocess.run([sys.executable, "-c", "import llmrl; print(llmrl.__file__)"], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()



def measure(sides: dict[str, Path], commands: list[str], runs: int) -> dict[str, dict[str, Any]]:
    """``{command: {side: {"median", "min", "max", "rc", "heavy"}}}``; the sides take turns, run by run."""
    times: dict[str, dict[str, list[float]]] = {c: {s: [] for s in sides} for c in commands}
    info: dict[str, dict[str, tuple[int, str]]] = {c: {} for c in commands}
    for c in commands:
        for root in sides.values():  # warm the file cache / .pyc once, not timed
            run_once(root, c)
        for _ in range(runs):
            for side, root in sides.items():
                seconds, rc, heavy = run_once(root, c)
                times[c][side].append(seconds)
                info[c][side] = (rc, heavy)
    return {c: {s: {"median": statistics.median(v), "min": min(v), "max": max(v), "rc": info[c][s][0],
                    "heavy": info[c][s][1] or "-"} for s, v in by_side.items()} for c, by_side in times.items()}


def table(results: dict[str, dict[str, Any]], sides: list[str]) -> str:
    head = f"{'command':38s}" + "".join(f" {s + ' s (min-max)':>24s} {s + ' imports':>22s}" for s in sides)
    lines = [head, "-" * len(head)]
    for c, by_side in results.items():
        row = f"{'llmrl ' + c:38s}"
        for s in sides:
            r = by_side[s]
            cell = f"{r['median']:.3f} ({r['min']:.2f}-{r['max']:.2f})" + ("" if r["rc"] == 0 else f" rc={r['rc']}")
            row += f" {cell:>24s} {r['heavy']:>22s}"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs per command and side (the median is shown)")
    ap.add_argument("--baseline", default="HEAD", help="git revision timed as 'before' (default HEAD)")
    ap.add_argument("--no-baseline", action="store_true", help="time this checkout only")
    ap.add_argument("--command", action="append", default=None, help="time this command instead (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    commands = args.command or COMMANDS
    worktree = None if args.no_baseline else add_worktree(args.baseline, "llmrl_startup_")
    try:
        sides = {"after": REPO} if worktree is None else {"before": worktree, "after": REPO}
        for side, root in sides.items():
            where = imported_from(root)
            if not where.startswith(str(root / "src")):
                raise SystemExit(f"{side}: llmrl imported from {where}, not {root / 'src'}")
        load_before = os.getloadavg()
        results = measure(sides, commands, args.runs)
        load_after = os.getloadavg()
    finally:
        if worktree is not None:
            remove_worktree(worktree)
    report = {"results": results, "runs": args.runs, "baseline": None if worktree is None else args.baseline,
              "load_before": load_before, "load_after": load_after, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(results, list(sides)))
        print(f"median of {args.runs} runs per command; load average (1/5/15 min) before "
              f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {'/'.join(f'{x:.2f}' for x in load_after)} "
              f"on {os.cpu_count()} CPUs")
    return report


if __name__ == "__main__":
    main()
