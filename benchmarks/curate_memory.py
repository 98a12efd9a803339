"""Peak memory and wall time of `llmrl data curate` (filters + exact + near dedup, no rollouts) on large inputs.

Generates a seeded JSONL file of Big-Math-like rows (``problem``, ``answer``, a worked ``solution``,
``source``, ``domain``; ~750 bytes a row) with realistic duplicate rates: about 9% exact duplicates
(case, spacing, punctuation changed), 9% near duplicates (a word added, dropped or replaced; a phrase
appended; the same answer written another way), 4% the same problem with one number changed (a different
problem, kept by default), 5% rows each filter removes, 2% without an answer, 0.5% malformed lines. Then
runs ``python -m llmrl.cli.main data curate --no-solvability`` on it in a subprocess and reads the child's
peak RSS (``os.wait4`` rusage, ru_maxrss) and CPU time. Cases:

* ``small`` (``--small-mb``, default 24): with this checkout's code (``after``) and, unless ``--skip-before``,
  with the code of ``git HEAD`` (``before``: ``git archive HEAD src`` unpacked into a temporary directory
  and put first on ``PYTHONPATH``; the checkout and its git state are not touched). The two outputs and
  reports (without timings) must be identical.
* ``large`` (``--size-mb``, default 1024), ``after`` only (``before`` would hold ~100× the input).

    python benchmarks/curate_memory.py [--size-mb 1024] [--small-mb 24] [--dir DIR] [--keep]
        [--skip-before] [--skip-large] [--seed 0] [--json]

Files go to ``--dir`` (default: a temporary directory, removed at the end unless ``--keep``); an existing
input file of the right name and size there is reused. Prints a table and the load average of the machine.

Measured (shared 2-core AMD EPYC VM, 23 GiB RAM, load average 5.4 at the start and 2.2 at the end, i.e.
other jobs on both cores; seed 0):

    case   code    input MiB      rows      kept peak RSS MiB RSS/input   wall s    CPU s   rows/s
    small  before       24.0     35418     25872        624.8     26.03     43.5     21.5    814.2
    small  after        24.0     35418     25872        117.8      4.91     23.8     11.9   1488.2
    large  after      1024.0   1510112   1044881        193.8      0.19    662.3    539.8   2280.1

(small: identical output and report before/after.) Where the large run's time goes (a 50 MB slice of the
same file, timed per pass): reading + screening (JSON, question/answer extraction, the seven filters) 42%,
queueing the dedup keys (near_form, answer_key) 14%, MinHash signatures 21% (the ``mod p`` of 128 hashes per
shingle), resolving candidates 7%, writing the output (second read) 10%, the rest < 2%.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llmrl.tasks.math_task import TEMPLATES  # noqa: E402

NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lucas", "Priya", "Omar", "Elena", "Sam", "Chen", "Fatima", "Noah"]
PLACES = ["school fair", "bakery", "library", "science club", "farm", "bike shop", "summer camp", "museum",
          "chess tournament", "garden", "train station", "bookstore"]
CONTEXTS = [
    "At the {place}, {name} is working through a practice sheet with {k} exercises.",
    "{name} found the following problem in a workbook from the {place}.",
    "During a visit to the {place}, {name} and {k} friends set themselves a challenge.",
    "The {place} runs a weekly puzzle corner, and this week {name} submitted problem {k}.",
    "While helping out at the {place}, {name} wrote down this question for the {k} students there.",
    "{name} is preparing for a math contest and practises problem {k} from the {place} booklet.",
]
FILLERS = ["Please", "Now,", "Quickly,", "Carefully", "In class,", "Again,"]
TAILS = [" Show your work.", " Give the exact value.", " Explain your reasoning briefly.", " Simplify fully."]
DOMAINS = [["Mathematics -> Algebra"], ["Mathematics -> Geometry"], ["Mathematics -> Applied Mathematics"],
           ["Mathematics -> Discrete Mathematics -> Probability"], ["Mathematics -> Number Theory"]]
BAD = [
    ("Which of the following is a prime number? (A) {n} (B) 6 (C) 7 (D) 9", "C"),
    ("Is {n} divisible by 3? Answer yes or no.", "yes"),
    ("True or false: {n} is an even number.", "true"),
    ("(a) Compute {n} + 1. (b) Compute {n} - 1.", "{n}"),
    ("Prove that {n}^2 + {n} is even.", "0"),
    ("See https://example.com/p{n} and compute {n} + {n}.", "{n}"),
    ("已知 $x = {n}$，求 $2x$ 的值。", "{n}"),
]
_NUMBER = re.compile(r"\d+")


def _fresh(rng: random.Random) -> tuple[str, str, str]:
    question, answer, solution = TEMPLATES[rng.choice(list(TEMPLATES))](rng)
    context = rng.choice(CONTEXTS).format(name=rng.choice(NAMES), place=rng.choice(PLACES), k=rng.randint(2, 999))
    steps = " ".join(f"Step {i}: we check the value {rng.randint(1, 10**5)} against the condition and keep the "
                     f"result." for i in range(1, rng.randint(4, 7)))
    return f"{context} {question}", answer, f"{steps} {solution} Therefore the answer is $\\boxed{{{answer}}}$."


def _reword(rng: random.Random, q: str) -> str:
    words = q.split(" ")
    k = rng.randrange(len(words))
    op = rng.randrange(4)
    if op == 0:
        words.insert(k, rng.choice(FILLERS))
    elif op == 1 and len(words) > 8:
        del words[k]
    elif op == 2:
        words[k] = rng.choice(FILLERS)
    else:
        return q + rng.choice(TAILS)
    return " ".join(words)


def generate(path: Path, size_mb: float, seed: int) -> dict[str, int]:
    """Write the input file (``size_mb`` MiB or a little more); returns the row counts per kind."""
    rng = random.Random(seed)
    recent: list[tuple[str, str, str]] = []  # the last 50,000 fresh problems, duplicated from
    seen: set[int] = set()
    kinds = dict.fromkeys(["fresh", "exact", "near", "number_changed", "filtered", "no_answer", "malformed"], 0)
    target, written = int(size_mb * 2**20), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            r = rng.random()
            extra = {"source": rng.choice(["amc_aime", "cn_k12", "orca_math", "olympiads", "synthetic"]),
                     "domain": rng.choice(DOMAINS)}
            if r < 0.705 or not recent:
                q, a, s = _fresh(rng)
                if hash(q) in seen:
                    continue
                seen.add(hash(q))
                if len(recent) < 50_000:
                    recent.append((q, a, s))
                else:
                    recent[rng.randrange(50_000)] = (q, a, s)
                kind, row = "fresh", {"problem": q, "answer": a, "solution": s, **extra}
            elif r < 0.795:
                q, a, s = rng.choice(recent)
                kind, row = "exact", {"problem": "  " + q.upper().replace(" ", "  ").rstrip("?.") + " ", "answer": a,
                                      "solution": s, **extra}
            elif r < 0.885:
                q, a, s = rng.choice(recent)
                a2 = a if rng.random() < 0.8 else f"\\boxed{{{a}}}"
                kind, row = "near", {"problem": _reword(rng, q), "answer": a2, "solution": s, **extra}
            elif r < 0.925:
                q, a, s = rng.choice(recent)
                q2 = _NUMBER.sub(lambda m: str(int(m[0]) + rng.randint(1, 9)), q, count=1)
                kind, row = "number_changed", {"problem": q2, "answer": a + "0", "solution": s, **extra}
            elif r < 0.975:
                k = rng.randrange(10**6)
                q, a = rng.choice(BAD)
                kind, row = "filtered", {"problem": q.replace("{n}", str(k)), "answer": a.replace("{n}", str(k)), **extra}
            elif r < 0.995:
                q, _, s = _fresh(rng)
                kind, row = "no_answer", {"problem": q, "answer": "", "solution": s.split("Therefore")[0], **extra}
            else:
                line = '{"problem": "truncated line' if rng.random() < 0.5 else "[1, 2, 3]"
                f.write(line + "\n")
                written += len(line) + 1
                kinds["malformed"] += 1
                continue
            line = json.dumps(row, ensure_ascii=False)
            f.write(line + "\n")
            written += len(line.encode()) + 1
            kinds[kind] += 1
    return kinds


def _run(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; its wall time, CPU time and peak RSS (MiB, from the child's own rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps the child: its own rusage
        wall = time.perf_counter() - t
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code:
            raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{err.read()[-3000:]}")
        return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "stdout": out.read()}


def _curate(src: Path, out: Path, pythonpath: Path, work: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    code = ("import sys, llmrl; assert llmrl.__file__.startswith(sys.argv[1]), llmrl.__file__; "
            "from llmrl.cli.main import main; sys.exit(main(sys.argv[2:]))")
    cmd = [sys.executable, "-c", code, str(pythonpath), "data", "curate", "--input", str(src), "--output", str(out),
           "--no-solvability"]
    if "--work-dir" in subprocess.run([sys.executable, "-c", code, str(pythonpath), "data", "curate", "--help"],
                                      env=env, capture_output=True, text=True).stdout:
        cmd += ["--work-dir", str(work)]
    result = _run(cmd, env)
    report = json.loads(out.with_name(f"{out.stem}.report.json").read_text())
    return {**result, "rows_in": report["rows_in"], "rows_kept": report["rows_kept"], "report": report}


def _timeless(report: dict[str, Any]) -> dict[str, Any]:
    skip = {"seconds", "rows_per_second_without_rollouts", "output", "report"}
    return {k: v for k, v in report.items() if k not in skip}


def _head_src(dest: Path) -> Path:
    """``src/`` of ``git HEAD`` unpacked under ``dest`` (``git archive``: reads the repository only)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=1024.0, help="large input size (MiB)")
    ap.add_argument("--small-mb", type=float, default=24.0, help="small input size (MiB), run before and after")
    ap.add_argument("--dir", default=None, help="where the inputs and outputs go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--skip-before", action="store_true", help="do not run git HEAD's code on the small input")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="curate-memory-"))
    base.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    try:
        cases = [("small", args.small_mb)] + ([] if args.skip_large else [("large", args.size_mb)])
        for name, size in cases:
            src = base / f"{name}_{size:g}mb_seed{args.seed}.jsonl"
            if not src.exists() or src.stat().st_size < size * 2**20:
                t = time.perf_counter()
                kinds = generate(src, size, args.seed)
                print(f"generated {src} ({src.stat().st_size / 2**20:.0f} MiB, {sum(kinds.values())} rows: "
                      f"{kinds}) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            versions = [("after", ROOT / "src")]
            if name == "small" and not args.skip_before:
                head = base / "head"
                shutil.rmtree(head, ignore_errors=True)
                head.mkdir()
                versions.insert(0, ("before", _head_src(head)))
            reports = {}
            for version, pythonpath in versions:
                out = base / f"{name}_{version}.jsonl"
                r = _curate(src, out, pythonpath, base)
                reports[version] = (out.read_bytes(), _timeless(r.pop("report")))
                r.pop("stdout")
                rows.append({"case": name, "code": version, "input_mib": round(src.stat().st_size / 2**20, 1), **r,
                             "rows_per_s": round(r["rows_in"] / r["wall_s"], 1),
                             "rss_per_input": round(r["peak_rss_mib"] / (src.stat().st_size / 2**20), 2)})
                print(json.dumps(rows[-1]), file=sys.stderr)
                out.unlink()
            if len(reports) == 2:
                same = reports["before"] == reports["after"]
                rows[-1]["identical_to_before"] = same
                if not same:
                    raise SystemExit("the output or report differs from git HEAD's on the small input")
    finally:
        if not args.dir and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()
    if args.json:
        print(json.dumps({"rows": rows, "loadavg_before": load_before, "loadavg_after": load_after,
                          "cpus": os.cpu_count()}, indent=2))
        return rows
    head = f"{'case':<6} {'code':<7} {'input MiB':>9} {'rows':>9} {'kept':>9} {'peak RSS MiB':>12} {'RSS/input':>9} " \
           f"{'wall s':>8} {'CPU s':>8} {'rows/s':>8}"
    print(head)
    for r in rows:
        print(f"{r['case']:<6} {r['code']:<7} {r['input_mib']:>9.1f} {r['rows_in']:>9d} {r['rows_kept']:>9d} "
              f"{r['peak_rss_mib']:>12.1f} {r['rss_per_input']:>9.2f} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} "
              f"{r['rows_per_s']:>8.1f}")
    if any("identical_to_before" in r for r in rows):
        print("small input: output and report (without timings) identical before/after:",
              all(r.get("identical_to_before", True) for r in rows))
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_after}; {os.cpu_count()} CPUs")
    return rows


if __name__ == "__main__":
    main()
