"""Generation throughput of the backends on the tiny Llama with the char tokenizer.

KVCacheSampler's fast path (with its C kernels, and with pure-torch ops), its generic HF-forward path, and
HFGenerateSampler (``model.generate``, what TRL's GRPOTrainer calls): 8 prompts x n=8 samples, exactly 64 new
tokens each (ignore_eos), float32, temperature 1.

Runs are interleaved (one run of each backend per round) so that background load on a shared machine
hits every backend alike; the table reports the median and best of the timed rounds.

    python benchmarks/generation.py [--threads 1] [--warmup 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from llmrl.models.tiny import TinyModelSpec, build_tiny_model
from llmrl.rollout import HFGenerateSampler, KVCacheSampler, SamplingParams

PROMPTS = [
    "Question: What is 17 + 25? Think step by step, then give the answer.\nAnswer:",
    "Question: Sort the letters of 'planet' alphabetically.\nAnswer:",
    "Question: What is 6 * 7 - 5? Show your work.\nAnswer:",
    "Question: Reverse the word 'generation'.\nAnswer:",
    "Question: Is 91 a prime number? Explain briefly.\nAnswer:",
    "Question: Count the vowels in 'reinforcement learning'.\nAnswer:",
    "Question: What is 144 / 12 + 3?\nAnswer:",
    "Question: Write the next number: 2, 4, 8, 16, ...\nAnswer:",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (1 = most stable on 2 cores)"
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, tok = build_tiny_model(TinyModelSpec(arch="llama"), seed=0)
    prompts = [tok.encode(p, add_special_tokens=False) for p in PROMPTS]
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=1.0, n=args.n, ignore_eos=True, seed=0
    )
    backends = {
        "KVCacheSampler (fast path)": KVCacheSampler(model, tok, fast_path=True),
        "KVCacheSampler (fast path, pure torch)": KVCacheSampler(model, tok, fast_path=True, kernels=False),
        "KVCacheSampler (generic path)": KVCacheSampler(model, tok, fast_path=False),
        "HFGenerateSampler (model.generate)": HFGenerateSampler(model, tok),
    }
    n_tokens = len(prompts) * args.n * args.max_new_tokens
    times: dict[str, list[float]] = {name: [] for name in backends}
    for r in range(args.warmup + args.runs):
        for name, sampler in backends.items():
            t0 = time.perf_counter()
            out = sampler.generate(prompts, params)
            dt = time.perf_counter() - t0
            assert sum(len(g.token_ids) for gens in out for g in gens) == n_tokens
            if r >= args.warmup:
                times[name].append(dt)

    lens = [len(p) for p in prompts]
    print(
        f"tiny llama (hidden 128, 4 layers, 4 heads, MLP 512, vocab {len(tok)}), float32, "
        f"threads={args.threads}, {len(prompts)} prompts x n={args.n} "
        f"(prompt tokens {min(lens)}-{max(lens)}), "
        f"{args.max_new_tokens} new tokens, {args.warmup} warm-up + {args.runs} timed rounds"
    )
    base = statistics.median(times["HFGenerateSampler (model.generate)"])
    cols = f"| {'median s':>8} | {'tokens/s (median)':>17} | {'tokens/s (best)':>15} | {'vs generate':>11} |"
    print(f"| {'backend':<38} {cols}")
    print(f"|{'-' * 40}|{'-' * 9}:|{'-' * 18}:|{'-' * 16}:|{'-' * 12}:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"| {name:<38} | {med:8.3f} | {n_tokens / med:17,.0f} | {n_tokens / min(ts):15,.0f} | "
            f"{base / med:10.2f}x |"
        )


if __name__ == "__main__":
    main()
