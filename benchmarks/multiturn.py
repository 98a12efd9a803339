"""Multi-turn rollout throughput: episodes/s of a 3-turn environment vs the same tokens single-turn, same run.

The tiny Llama with the char tokenizer (KVCacheSampler, float32, temperature 1, ignore_eos so every turn has
exactly ``--turn-tokens`` tokens). Multi-turn: a fixed environment message after turns 1 and 2
(:func:`llmrl.rollout.multiturn.rollout_episodes`: one generate call per turn for all episodes, each call
prefilling the whole conversation so far). Single-turn: one generate call of 3 x ``--turn-tokens`` tokens from
the prompt extended by the same number of tokens as the environment messages, so both produce sequences of
the same length with the same number of sampled tokens. Runs are interleaved; the table gives the median
and best of the timed rounds.

    python benchmarks/multiturn.py [--threads 1] [--prompts 8] [--n 4] [--turn-tokens 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from llmrl.models.tiny import TinyModelSpec, build_tiny_model
from llmrl.rollout import KVCacheSampler, SamplingParams
from llmrl.rollout.episodes import generate_episodes
from llmrl.rollout.multiturn import Observation, StepResult

TURNS = 3
MESSAGE = "\nCheck it and answer again: "


class FixedReply:
    """Answers every turn with :data:`MESSAGE` and never ends the episode itself."""

    def reset(self, sample: dict[str, Any]) -> Observation:
        return sample["prompt"]

    def step(self, action: str) -> StepResult:
        return StepResult(observations=MESSAGE)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1 = most stable on 2 cores)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4, help="episodes per prompt")
    ap.add_argument("--turn-tokens", type=int, default=16, help="sampled tokens per turn")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = build_tiny_model(TinyModelSpec(arch="llama", max_position_embeddings=512), seed=0)
    gen = KVCacheSampler(model, tok)
    prompts = [{"prompt": f"Question {i}: what is {3 * i + 7} + {5 * i + 11}? Answer:"} for i in range(args.prompts)]
    padded = [{"prompt": p["prompt"] + MESSAGE * (TURNS - 1)} for p in prompts]  # same length as the env turns
    multi = SamplingParams(max_new_tokens=args.turn_tokens, n=args.n, ignore_eos=True, seed=0)
    single = SamplingParams(max_new_tokens=TURNS * args.turn_tokens, n=args.n, ignore_eos=True, seed=0)

    def run_multi() -> list[Any]:
        return generate_episodes(gen, tok, prompts, multi, False, env=FixedReply, max_turns=TURNS)

    def run_single() -> list[Any]:
        return generate_episodes(gen, tok, padded, single, False)

    a, b = run_multi()[0], run_single()[0]
    assert len(a.tokens) == len(b.tokens) and a.num_policy_tokens == b.num_policy_tokens, "unequal work"
    times: dict[str, list[float]] = {"3-turn environment": [], "single turn, same tokens": []}
    for r in range(args.warmup + args.runs):
        for name, fn in (("3-turn environment", run_multi), ("single turn, same tokens", run_single)):
            t = time.perf_counter()
            fn()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t)
    episodes = args.prompts * args.n
    result = {"episodes": episodes, "sequence_tokens": len(a.tokens), "sampled_tokens": a.num_policy_tokens,
              "threads": args.threads,
              "rows": {k: {"median_s": statistics.median(v), "best_s": min(v),
                           "episodes_per_s": episodes / statistics.median(v),
                           "sampled_tokens_per_s": episodes * a.num_policy_tokens / statistics.median(v)}
                       for k, v in times.items()}}
    m, s = (result["rows"][k]["median_s"] for k in times)
    result["multi_over_single_time"] = m / s
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"{episodes} episodes of {len(a.tokens)} tokens ({a.num_policy_tokens} sampled), "
          f"threads={args.threads}, median of {args.runs} runs")
    print("| rollout | episodes/s | sampled tokens/s | median s | best s |")
    print("|---|---:|---:|---:|---:|")
    for k, row in result["rows"].items():
        print(f"| {k} | {row['episodes_per_s']:.1f} | {row['sampled_tokens_per_s']:.0f} | {row['median_s']:.3f} | "
              f"{row['best_s']:.3f} |")
    print(f"3-turn / single-turn time: {m / s:.2f}x")
    return result


if __name__ == "__main__":
    main()
