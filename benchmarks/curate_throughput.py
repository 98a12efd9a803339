"""How fast `llmrl data curate` filters and deduplicates (no rollouts) a Big-Math style file.

Builds N rows (default 10,000): distinct generated ``math`` problems with their answers, mixed with exact
duplicates (case/spacing/punctuation changed), near duplicates (a phrase added), rows that each filter
removes (multiple choice, yes/no, true/false, multi-part, proof, hyperlink, non-English), rows whose
answer is only a ``\\boxed{}`` in a ``solution`` column, rows without an answer and malformed lines. Writes
them as JSONL and times :func:`llmrl.data.curate.curate_file` with ``generate=None`` (what
``llmrl data curate --no-solvability`` runs). Prints the report table and rows/s; ``--json`` prints JSON.

    python benchmarks/curate_throughput.py [--rows 10000] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from pathlib import Path

from llmrl.data.curate import CurateOptions, curate_file, format_report
from llmrl.tasks.math_task import TEMPLATES

BAD = [
    ("Which of the following is a prime number? (A) 4 (B) 6 (C) 7 (D) 9", "C"),
    ("Is {n} divisible by 3? Answer yes or no.", "yes"),
    ("True or false: {n} is an even number.", "true"),
    ("(a) Compute {n} + 1. (b) Compute {n} - 1.", "{n}"),
    ("Prove that {n}^2 + {n} is even.", "0"),
    ("See https://example.com/p{n} and compute {n} + {n}.", "{n}"),
    ("已知 $x = {n}$，求 $2x$ 的值。", "{n}"),
]


def build_rows(n: int, seed: int) -> list[str]:
    """JSONL lines: about 70% distinct generated problems, the rest duplicates, filter hits and bad lines."""
    rng = random.Random(seed)
    lines: list[str] = []
    originals: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(lines) < n:
        r = rng.random()
        if r < 0.70 or not originals:
            question, answer, solution = TEMPLATES[rng.choice(list(TEMPLATES))](rng)
            if question in seen:
                continue
            seen.add(question)
            originals.append((question, answer))
            if rng.random() < 0.1:  # answer only inside the worked solution
                lines.append(json.dumps({"problem": question, "solution": f"{solution} \\boxed{{{answer}}}"}))
            else:
                lines.append(json.dumps({"problem": question, "answer": answer, "source": "generated"}))
        elif r < 0.80:
            q, a = rng.choice(originals)
            lines.append(json.dumps({"problem": "  " + q.upper().replace(" ", "  ").rstrip("?.") + " ", "answer": a}))
        elif r < 0.87:
            q, a = rng.choice(originals)
            lines.append(json.dumps({"problem": q + " Show your work.", "answer": a}))
        elif r < 0.97:
            k = rng.randrange(10**6)
            q, a = rng.choice(BAD)
            lines.append(json.dumps({"problem": q.replace("{n}", str(k)), "answer": a.replace("{n}", str(k))}))
        elif r < 0.99:
            lines.append(json.dumps({"problem": f"What is {rng.randrange(10**6)} squared?", "answer": ""}))
        else:
            lines.append('{"problem": "truncated line' if rng.random() < 0.5 else "[1, 2, 3]")
    return lines


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("\n".join(build_rows(args.rows, args.seed)) + "\n", encoding="utf-8")
        t = time.perf_counter()
        report = curate_file(src, dst, CurateOptions(), err=io.StringIO())
        seconds = time.perf_counter() - t
    result = {"rows": report["rows_in"], "kept": report["rows_kept"], "seconds": round(seconds, 3),
              "rows_per_second": round(report["rows_in"] / seconds, 1)}
    if args.json:
        print(json.dumps({**result, "steps": report["steps"]}, indent=2))
    else:
        print(format_report(report))
        print(f"{result['rows']} rows in {result['seconds']} s: {result['rows_per_second']} rows/s "
              f"(read, filter, dedup, write JSONL + report)")
    return {**result, "steps": report["steps"]}


if __name__ == "__main__":
    main()
