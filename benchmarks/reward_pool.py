"""What the reward pool (llmrl.rewards.pool) costs and buys: a slow reward on 1 vs 2 workers vs in-process,
and the overhead per batch on a cheap reward.

1. Slow reward: ``--ms`` (default 20) milliseconds of pure-Python CPU work per completion (a loop until the
   thread's CPU clock has advanced that much), over ``--n`` (default 256) completions; seconds per call of a
   warm pool (best of ``--repeat``, the modes taking turns) and the first call (which starts the processes),
   speed-ups; the results of every mode are checked equal.
2. Cheap reward: the arithmetic task's reward functions (answer + format, microseconds each) and its two
   verdicts on a batch of ``--batch`` (default 128) completions: milliseconds per batch (median of 30) and
   the overhead vs in-process.

Prints two tables and the load average (this is a shared machine); ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Mapping
from typing import Any

from llmrl.rewards.pool import PoolOptions, RewardPool, task_calls
from llmrl.tasks import get_task

MS = 20.0


def slow_reward(completion: str, sample: Mapping[str, Any]) -> float:
    """``MS`` ms of CPU in pure Python, then a value that depends on the completion only."""
    end, x = time.thread_time() + MS / 1000, 0
    while time.thread_time() < end:
        for i in range(200):
            x += i * i % 7
    return float(len(completion) % 10)


def _time(pool: RewardPool, comps: list[str], samples: list[Any], repeat: int, checks: bool = False) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        pool.score(comps, samples, checks=checks)
        out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    global MS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="completions of the slow reward")
    ap.add_argument("--ms", type=float, default=20.0, help="CPU milliseconds of the slow reward per completion")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128, help="completions per batch of the cheap reward")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    MS = args.ms
    load_before = os.getloadavg()
    comps = [f"completion {i} " + "x" * (i % 13) for i in range(args.n)]
    samples: list[Any] = [{}] * args.n
    slow: dict[str, dict[str, float]] = {}
    modes = {"in-process": 0, "1 worker": 1, "2 workers": 2}
    pools = {label: RewardPool({"slow": slow_reward}, PoolOptions(workers=w)) for label, w in modes.items()}
    reference: list[float] | None = None
    for label, pool in pools.items():
        t = time.perf_counter()
        got = [o.total for o in pool.score(comps, samples)]
        slow[label] = {"workers": modes[label], "first_call_seconds": time.perf_counter() - t, "seconds": math.inf}
        reference = reference or got
        assert got == reference, f"{label}: results differ from in-process"
    for _ in range(args.repeat):  # the modes take turns, so a neighbour's load hits them alike
        for label, pool in pools.items():
            slow[label]["seconds"] = min(slow[label]["seconds"], _time(pool, comps, samples, 1)[0])
    for pool in pools.values():
        pool.close()
    for row in slow.values():
        row["speedup_vs_in_process"] = slow["in-process"]["seconds"] / row["seconds"]
        row["speedup_vs_1_worker"] = slow["1 worker"]["seconds"] / row["seconds"]

    task = get_task("arithmetic")
    ss = task.samples(args.batch, "train", 0)
    cc = [task.demonstration(s) if i % 2 else f"{i}" for i, s in enumerate(ss)]
    cheap: dict[str, dict[str, float]] = {}
    cheap_pools = {label: RewardPool(lambda: task_calls(task), PoolOptions(workers=w)) for label, w in modes.items()}
    times: dict[str, list[float]] = {label: [] for label in modes}
    for pool in cheap_pools.values():
        _time(pool, cc, ss, 3, checks=True)  # start the processes, warm up
    for _ in range(30):
        for label, pool in cheap_pools.items():
            times[label] += _time(pool, cc, ss, 1, checks=True)
    for label, pool in cheap_pools.items():
        pool.close()
        cheap[label] = {"workers": modes[label], "ms_per_batch": 1000 * statistics.median(times[label])}
    for row in cheap.values():
        row["overhead_ms"] = row["ms_per_batch"] - cheap["in-process"]["ms_per_batch"]
        row["overhead_us_per_completion"] = 1000 * row["overhead_ms"] / args.batch

    result = {"slow": slow, "cheap": cheap, "n": args.n, "ms": args.ms, "batch": args.batch,
              "cpus": len(os.sched_getaffinity(0)), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    if args.json:
        print(json.dumps(result))
        return result
    print(f"slow reward: {args.ms:g} ms CPU per completion, {args.n} completions "
          f"(warm pool: best of {args.repeat}, modes taking turns; the first call starts the processes)")
    print(f"{'':12s} {'seconds':>8s} {'first call':>10s} {'vs in-process':>14s} {'vs 1 worker':>12s}")
    for label, r in slow.items():
        print(f"{label:12s} {r['seconds']:8.2f} {r['first_call_seconds']:10.2f} {r['speedup_vs_in_process']:13.2f}x "
              f"{r['speedup_vs_1_worker']:11.2f}x")
    print(f"\ncheap reward: arithmetic (answer + format rewards, correct + well_formed verdicts), "
          f"batch of {args.batch} (median of 30)")
    print(f"{'':12s} {'ms/batch':>9s} {'overhead ms':>12s} {'µs/completion':>14s}")
    for label, r in cheap.items():
        print(f"{label:12s} {r['ms_per_batch']:9.2f} {r['overhead_ms']:12.2f} {r['overhead_us_per_completion']:14.1f}")
    print(f"\n{result['cpus']} CPUs; load average before {load_before[0]:.2f}, after {result['loadavg_after'][0]:.2f}")
    return result


if __name__ == "__main__":
    main()
