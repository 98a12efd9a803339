"""How fast `llmrl reward` scores Knights & Knaves completions (issue target: 10,000 in under 30 s).

Builds N completions (default 10,000) over 500 generated puzzles — correct demonstrations, answers with
the roles flipped, broken tags, unparsable answers and long rambling ones — writes them as JSONL, and times
`llmrl.tasks.scoring.score_file` (exactly what `llmrl reward knights_knaves --input ... --output ...` runs).
Prints one table row; `--json` prints a JSON object instead.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from pathlib import Path

from llmrl.tasks import get_task
from llmrl.tasks.scoring import score_file


def completions(sample: dict, rng: random.Random, task) -> list[str]:
    demo = task.demonstration(sample)
    flipped = demo.replace("knight", "K#").replace("knave", "knight").replace("K#", "knave")
    return [
        demo,
        flipped,
        demo.replace("</think>", ""),
        " thinking </think> <answer> (1) everyone is a knight </answer>",
        " " + "Let me think again. " * rng.randint(50, 400) + demo,
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    task = get_task("knights_knaves")
    rng = random.Random(0)
    t0 = time.perf_counter()
    puzzles = task.samples(500, "test", 0)
    gen_s = time.perf_counter() - t0
    rows = []
    while len(rows) < args.n:
        s = puzzles[len(rows) // 5 % len(puzzles)]
        rows += [{**s, "completion": c} for c in completions(s, rng, task)]
    rows = rows[: args.n]
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.jsonl", Path(d) / "out.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        t = time.perf_counter()
        summary = score_file(task, src, dst, err=io.StringIO())
        score_s = time.perf_counter() - t
    result = {"completions": summary.scored, "seconds": score_s, "per_second": summary.scored / score_s,
              "mean_reward": summary.as_dict()["mean_reward"], "puzzle_generation_seconds": gen_s,
              "target_met": score_s < 30.0 * args.n / 10_000}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"scored {summary.scored} K&K completions in {score_s:.2f} s ({result['per_second']:,.0f}/s); "
              f"mean reward {result['mean_reward']:.3f}; target < 30 s per 10,000: "
              f"{'MET' if result['target_met'] else 'MISSED'}  (puzzle generation {gen_s:.1f} s, not timed)")
    return result


if __name__ == "__main__":
    main()
