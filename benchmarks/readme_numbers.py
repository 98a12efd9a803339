"""Regenerate the README's measured numbers that are cheap enough to rerun, printed as markdown.

Each section runs what the README says produced its numbers, in a fresh process, and prints markdown to paste:

* ``quickstart``: ``llmrl quickstart --output-dir DIR --seed S`` for each ``--seeds`` (default 0 1 2), one after
  another: held-out greedy accuracy after SFT and after GRPO (from ``summary.json``), the gain, the wall time of
  the whole process and its peak RSS (``ru_maxrss`` of ``wait4``, the kbytes ``/usr/bin/time -v`` reports,
  / 1000 as MB), then the first seed's table as printed. About a minute per seed on an idle 2-core CPU.
* ``startup``: ``python benchmarks/startup.py --no-baseline --json`` (the commands that do not train, each in a
  fresh interpreter, median of ``--startup-runs``, and the heavy modules each imported); without that script,
  ``llmrl tasks list`` and ``llmrl --help`` timed here.
* ``reward_throughput``: ``python benchmarks/reward_throughput.py --json`` (``llmrl reward`` on 10,000 Knights &
  Knaves completions).
* ``generation``: ``python benchmarks/generation.py --threads 1`` and ``--threads 2`` (the backend table).
* ``rl_step`` (not run by default: it times TRL too, about half a minute per run): ``--rl-step-runs`` runs of
  ``python benchmarks/rl_step.py --json``, one table row each, and the medians of the two speed-ups.
* ``busy_machine`` (not run by default: several quickstarts, minutes): ``python benchmarks/busy_machine.py
  --no-baseline``, its output as printed.

The header gives the date, ``git rev-parse --short HEAD`` (``+dirty`` when the work tree has changes), the CPU
count and the load average, which decides how much these wall times mean on a shared machine.

    python benchmarks/readme_numbers.py                                  # the default sections
    python benchmarks/readme_numbers.py --sections startup reward_throughput
    python benchmarks/readme_numbers.py --sections quickstart --seeds 0
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("quickstart", "startup", "reward_throughput", "generation", "rl_step", "busy_machine")
DEFAULT_SECTIONS = ("startup", "reward_throughput", "generation", "quickstart")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(DEFAULT_SECTIONS),
                   help="sections to run, in this order")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="quickstart seeds")
    p.add_argument("--quickstart-override", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override passed to every quickstart run (repeatable), e.g. threads=1")
    p.add_argument("--startup-runs", type=int, default=10, help="runs of each start-up command")
    p.add_argument("--rl-step-runs", type=int, default=3, help="runs of benchmarks/rl_step.py (section rl_step)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the raw results to PATH")
    args = p.parse_args(argv)
    if args.startup_runs < 1 or args.rl_step_runs < 1:
        p.error("--startup-runs and --rl-step-runs must be >= 1")
    return args


# ----------------------------------------------------------------------------------------------- helpers
def llmrl_command() -> list[str]:
    """The installed ``llmrl`` script next to this interpreter, else the same entry point through ``-c``."""
    script = shutil.which("llmrl", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-c", "import sys; from llmrl.cli import main; sys.exit(main())"]


def run_measured(cmd: list[str], cwd: Path = ROOT) -> dict[str, Any]:
    """Run ``cmd`` to completion: its stdout, stderr, exit code, wall seconds and peak RSS (kbytes, ``ru_maxrss``
    of ``wait4``, as ``/usr/bin/time -v`` reports it)."""
    with tempfile.TemporaryFile(mode="w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        output = proc.stdout.read()
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
        proc.stdout.close()
        err.seek(0)
        stderr = err.read()
    return {"cmd": cmd, "returncode": proc.returncode, "output": output, "stderr": stderr, "seconds": wall,
            "peak_rss_kb": usage.ru_maxrss, "user_seconds": usage.ru_utime, "sys_seconds": usage.ru_stime}


def check(run: dict[str, Any]) -> None:
    if run["returncode"] != 0:
        tail = "\n".join((run["output"] + run["stderr"]).splitlines()[-20:])
        raise SystemExit(f"readme_numbers: {' '.join(run['cmd'])} exited {run['returncode']}:\n{tail}")


COMMIT = ""  # set once by main(): the revision every section reports


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def revision() -> str:
    """``git rev-parse --short HEAD``, with ``+dirty`` when tracked files have changes."""
    dirty = "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def header() -> list[str]:
    import torch

    return [f"# README numbers, {datetime.date.today().isoformat()}, commit {COMMIT}", "",
            f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, torch {torch.__version__} "
            f"(default {torch.get_num_threads()} threads), load average (1/5/15 min) {load()} at the start.", ""]


# ----------------------------------------------------------------------------------------------- sections
def section_startup(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    script = ROOT / "benchmarks" / "startup.py"
    if script.is_file():
        return startup_script(script, args.startup_runs)
    base = llmrl_command()
    lines = ["## Start-up (`llmrl tasks list`, `llmrl --help`)", "",
             f"Wall time of the whole process, {args.startup_runs} runs each, one after another "
             f"(load average {load()} before):", "",
             "| command | median s | best s |", "|---|---:|---:|"]
    raw: dict[str, Any] = {}
    for name, extra in (("llmrl tasks list", ["tasks", "list"]), ("llmrl --help", ["--help"])):
        times = []
        for _ in range(args.startup_runs):
            run = run_measured(base + extra)
            check(run)
            times.append(run["seconds"])
        raw[name] = times
        lines.append(f"| `{name}` | {statistics.median(times):.3f} | {min(times):.3f} |")
    return lines + [""], raw


def startup_script(script: Path, runs: int) -> tuple[list[str], dict[str, Any]]:
    run = run_measured([sys.executable, str(script), "--no-baseline", "--json", "--runs", str(runs)])
    check(run)
    lines = run["output"].splitlines()
    start = max(i for i, ln in enumerate(lines) if ln == "{")  # the JSON report (indent 2) is printed last
    report = json.loads("\n".join(lines[start:]))
    rows = [f"| `llmrl {c}` | {r['median']:.3f} ({r['min']:.2f}–{r['max']:.2f}) | {r['heavy']} |"
            + ("" if r["rc"] == 0 else f" exit {r['rc']}") for c, by_side in report["results"].items()
            for r in [by_side["after"]]]
    medians = [by_side["after"]["median"] for by_side in report["results"].values()]
    load_before = "/".join(f"{x:.1f}" for x in report["load_before"])
    load_after = "/".join(f"{x:.1f}" for x in report["load_after"])
    out = ["## Start-up (`python benchmarks/startup.py --no-baseline`)", "",
           f"Each command in a fresh interpreter, median (min–max) of {runs} runs; load average {load_before} "
           f"before, {load_after} after:", "",
           "| command | seconds | heavy modules imported |", "|---|---:|---|", *rows, "",
           f"Medians from {min(medians):.2f} to {max(medians):.2f} s.", ""]
    return out, report


def section_reward_throughput(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    run = run_measured([sys.executable, str(ROOT / "benchmarks" / "reward_throughput.py"), "--json"])
    check(run)
    r = json.loads(run["output"].strip().splitlines()[-1])
    lines = ["## Reward throughput (`python benchmarks/reward_throughput.py`)", "",
             f"`python benchmarks/reward_throughput.py` times `llmrl reward` on {r['completions']:,} Knights & "
             f"Knaves completions: {r['seconds']:.2f} s ({r['per_second']:,.0f} completions/s) on "
             f"{datetime.date.today().isoformat()} (mean reward {r['mean_reward']:.3f}; load average {load()} "
             "after).", ""]
    return lines, r


def section_generation(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    lines = ["## Generation backends (`python benchmarks/generation.py`)", ""]
    raw: dict[str, Any] = {}
    for threads in (1, 2):
        run = run_measured([sys.executable, str(ROOT / "benchmarks" / "generation.py"), "--threads", str(threads)])
        check(run)
        out = [ln for ln in run["output"].splitlines() if ln.strip()]
        raw[f"threads={threads}"] = out
        lines += [f"`--threads {threads}` (load average {load()} after):", "", *out, ""]
    return lines, raw


def quickstart_table(output: str) -> list[str]:
    """The before/after table the quickstart printed (header line to the wall-time note)."""
    lines = output.splitlines()
    start = next((i for i, ln in enumerate(lines) if "after SFT" in ln and "after RL" in ln), None)
    if start is None:
        return []
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("(wall time")), len(lines) - 1)
    return lines[start : end + 1]


def section_quickstart(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    rows, raw, printed = [], {}, []
    steps = test_size = None
    with tempfile.TemporaryDirectory(prefix="readme_numbers_") as tmp:
        for seed in args.seeds:
            out = Path(tmp) / f"qs{seed}"
            run = run_measured([*llmrl_command(), "quickstart", "--output-dir", str(out), "--seed", str(seed),
                                *args.quickstart_override])
            check(run)
            s = json.loads((out / "summary.json").read_text())
            task = yaml_load(out / "config.yaml").get("task", {})
            steps, test_size = s.get("steps"), task.get("test_size")
            before, after = s["accuracy_before"], s["accuracy_after"]
            rows.append(f"| {seed} | {100 * before:.1f}% | {100 * after:.1f}% | {100 * (after - before):+.1f} pts | "
                        f"{minutes(run['seconds'])} | {run['peak_rss_kb'] / 1000:.0f} MB |")
            raw[str(seed)] = {k: v for k, v in run.items() if k not in ("output", "stderr")} | {"summary": s}
            if not printed:
                printed = quickstart_table(run["output"])
    overrides = f" {' '.join(args.quickstart_override)}" if args.quickstart_override else ""
    lines = ["## Quickstart (`llmrl quickstart`)", "",
             f"`llmrl quickstart --output-dir DIR --seed S{overrides}`, S = {', '.join(map(str, args.seeds))}, run "
             f"one after another on {datetime.date.today().isoformat()}, commit {COMMIT} (load average {load()} "
             f"after). Held-out greedy accuracy on {test_size} unseen sums:", "",
             f"| seed | after SFT | after GRPO ({steps} steps) | gain | wall time (whole process) | peak RSS |",
             "|---:|---:|---:|---:|---:|---:|", *rows, ""]
    if printed:
        lines += [f"Seed {args.seeds[0]}'s table as printed:", "", "```", *printed, "```", ""]
    return lines, raw


RL_STEP_COLUMNS = ("| run | llmrl s/step | gen s | score s | train s | gen tok/s | TRL s/step | TRL gen s "
                   "| step speed-up | gen tok/s ratio |")


def section_rl_step(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    rows, results = [], []
    for i in range(1, args.rl_step_runs + 1):
        run = run_measured([sys.executable, str(ROOT / "benchmarks" / "rl_step.py"), "--json"])
        check(run)
        lines = run["output"].splitlines()
        start = max(i for i, ln in enumerate(lines) if ln == "{")  # the JSON object (indent 2) is printed last
        r = json.loads("\n".join(lines[start:]))
        results.append(r)
        trl = r.get("trl")
        cells = [f"{r['seconds_per_step']:.3f}", f"{r['generation_seconds']:.3f}", f"{r['scoring_seconds']:.3f}",
                 f"{r['training_seconds']:.3f}", f"{r['generation_tokens_per_second']:,.0f}"]
        cells += ([f"{trl['seconds_per_step']:.3f}", f"{trl['generation_seconds']:.3f}",
                   f"{r['speedup_step']:.2f}×", f"{r['speedup_generation_tokens_per_second']:.2f}×"]
                  if trl else ["–"] * 4)
        rows.append(f"| {i} | " + " | ".join(cells) + " |")
    lines = ["## RL step (`python benchmarks/rl_step.py --json`)", "",
             f"{args.rl_step_runs} runs, one after another (load average {load()} after):", "",
             RL_STEP_COLUMNS, "|---:|" + "---:|" * 9, *rows, ""]
    with_trl = [r for r in results if r.get("trl")]
    if with_trl:
        step = statistics.median(r["speedup_step"] for r in with_trl)
        gen = statistics.median(r["speedup_generation_tokens_per_second"] for r in with_trl)
        lines += [f"Medians over the {len(with_trl)} runs: step **{step:.2f}×**, generation tokens/s "
                  f"**{gen:.2f}×**.", ""]
    else:
        lines += ["trl is not installed: no TRL columns.", ""]
    return lines, {"runs": results}


def section_busy_machine(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    run = run_measured([sys.executable, str(ROOT / "benchmarks" / "busy_machine.py"), "--no-baseline"])
    check(run)
    out = [ln for ln in run["output"].splitlines() if ln.strip()]
    return ["## Busy machine (`python benchmarks/busy_machine.py --no-baseline`)", "", "```", *out, "```", ""], \
        {"output": out}


def yaml_load(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


RUNNERS = {"quickstart": section_quickstart, "startup": section_startup,
           "reward_throughput": section_reward_throughput, "generation": section_generation,
           "rl_step": section_rl_step, "busy_machine": section_busy_machine}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    global COMMIT
    args = parse_args(argv)
    COMMIT = revision()
    print("\n".join(header()), flush=True)
    results: dict[str, Any] = {"date": datetime.date.today().isoformat(), "commit": COMMIT}
    for name in dict.fromkeys(args.sections):  # in the order given, each once
        t0 = time.perf_counter()
        lines, raw = RUNNERS[name](args)
        results[name] = raw
        print("\n".join(lines) + f"\n_{name}: {time.perf_counter() - t0:.0f} s_\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
