"""Throughput with 1 vs 2 Ray workers on this machine (docs/scaling.md, "Ray workers: measured"):

* **reward-bound**: ``--completions`` completions scored by the reward pool's Ray backend
  (``PoolOptions(backend="ray")``) with a reward that burns ``--reward-ms`` ms of CPU per completion (a busy
  loop on ``time.process_time``, so a worker waiting for a core does not count as work done), 1 vs 2 workers;
  and with one that waits that long instead (a judge behind a network call: no CPU, so it shows the
  parallelism of the dispatch itself on a machine whose cores are taken);
* **generation**: ``--prompts`` prompts × ``--samples`` samples × ``--tokens`` new tokens from the quickstart's
  tiny model (hidden 128, 2 layers) by :class:`llmrl.rl.ray_workers.RayGenerator`, 1 vs 2 rollout actors
  (each actor one torch thread), after a warm-up call.

One local Ray cluster (``ray.init(num_cpus=--cpus)``) for the whole run; each measurement is the best of
``--repeat`` timed calls (the machine may be shared); prints a table and the 2-vs-1 ratios.

    python benchmarks/scaling.py
    python benchmarks/scaling.py --completions 64 --reward-ms 50 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import time


def burn_reward(completion: str, sample: dict) -> float:
    """~REWARD_MS ms of this process's CPU time, then the completion's length (a stand-in for a slow judge)."""
    end = time.process_time() + float(os.environ.get("LLMRL_BENCH_REWARD_MS", "50")) / 1000
    x = 0
    while time.process_time() < end:
        x += 1
    return float(len(completion))


def wait_reward(completion: str, sample: dict) -> float:
    """~REWARD_MS ms of waiting (a judge behind a network call): no CPU, so it shows the dispatch's parallelism
    even when other processes hold the cores."""
    time.sleep(float(os.environ.get("LLMRL_BENCH_REWARD_MS", "50")) / 1000)
    return float(len(completion))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--completions", type=int, default=64)
    ap.add_argument("--reward-ms", type=float, default=50.0)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    os.environ["LLMRL_BENCH_REWARD_MS"] = str(args.reward_ms)

    import ray
    import torch

    from llmrl.cli.quickstart import quickstart_config
    from llmrl.rewards.pool import PoolOptions, RewardPool
    from llmrl.rl.ray_workers import RayGenerator
    from llmrl.rollout.base import SamplingParams
    from llmrl.train.build import build_policy

    torch.set_num_threads(1)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"LLMRL_BENCH_REWARD_MS": str(args.reward_ms),
                                       "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}})
    rows: list[tuple[str, int, float, float, str, float]] = []
    texts = [f"completion {i}" for i in range(args.completions)]
    from scaling import burn_reward, wait_reward  # by module name, so the Ray workers import them

    for label, reward in ((f"reward {args.reward_ms:g} ms CPU", burn_reward),
                          (f"reward {args.reward_ms:g} ms wait", wait_reward)):
        for workers in (1, 2):
            pool = RewardPool({"slow": reward}, PoolOptions(workers=workers, timeout=30.0, backend="ray",
                                                            worker_cpus=args.cpus / 2))
            pool.score(texts[: 2 * workers], [{}] * (2 * workers))  # start the workers
            t = best(lambda p=pool: p.score(texts, [{}] * len(texts)), args.repeat)
            rows.append((label, workers, t, args.completions / t, "completions/s", os.getloadavg()[0]))
            pool.close()

    cfg = quickstart_config("/tmp/llmrl_scaling_bench", 0, ["threads=1"])
    model, tok = build_policy(cfg)
    prompts = [tok.encode(f"{10 + i}+{20 + i}=", add_special_tokens=False) for i in range(args.prompts)]
    params = SamplingParams(max_new_tokens=args.tokens, n=args.samples, seed=0, ignore_eos=True)
    for workers in (1, 2):
        gen = RayGenerator(model, tok, "kvcache", workers, cpus=args.cpus / 2, threads=1)
        gen.generate(prompts, params)  # warm-up: actors started, kernels compiled
        t = best(lambda g=gen: g.generate(prompts, params), args.repeat)
        tokens = args.prompts * args.samples * args.tokens
        rows.append(("generation (Ray actors)", workers, t, tokens / t, "tokens/s", os.getloadavg()[0]))
        gen.close()
    ray.shutdown()

    print(f"{os.cpu_count()} CPUs; load: the 1-minute load average after the measurement")
    print(f"{'workload':<26}{'workers':>8}{'seconds':>10}{'throughput':>14}  {'unit':<14}{'load':>6}")
    for name, w, t, thr, unit, load in rows:
        print(f"{name:<26}{w:>8}{t:>10.3f}{thr:>14.1f}  {unit:<14}{load:>6.1f}")
    for name in dict.fromkeys(r[0] for r in rows):
        one, two = (r[3] for r in rows if r[0] == name)
        print(f"{name}: 2 workers / 1 worker = {two / one:.2f}x")


if __name__ == "__main__":
    main()
