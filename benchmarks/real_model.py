"""A real model on this machine: generation, RL step and bf16 on SmolLM2-135M-Instruct (or any local HF causal LM).

One run, one table per section, each ratio printed beside its target:

* ``matmul``: the machine's dense matmul rate (2048 x 2048, fp32 and bf16, ``--threads``), measured in this run;
  the arithmetic floor of generation is 2 x parameters x generated tokens / the fp32 rate.
* ``generation``: identical prompts (the arithmetic task's chat prompts, rendered with the model's chat template,
  the same token ids for every backend), ``--prompts`` x n=``--n`` samples, exactly ``--max-new-tokens`` new
  tokens each (EOS ignored), temperature 1, fp32: llmrl's KVCacheSampler, ``model.generate``
  (HFGenerateSampler: what TRL calls) and vLLM-CPU (``rollout.backend: vllm``, in the interpreter of
  ``--vllm-python``: the vLLM venv that ``.ci/vllm_tests.sh build`` makes; skipped if it is missing). Backends
  take turns (``--runs`` rounds after one warm-up) so background load hits each alike; medians reported.
  Targets: llmrl >= 3x vLLM-CPU, >= 10x ``model.generate``, within 1.5x of the floor.
* ``rl_step``: ``benchmarks/rl_step.py --model DIR`` (llmrl vs TRL's GRPOTrainer on identical settings, both
  described there) in a child process; target: llmrl's step >= 1.5x faster.
* ``bf16``: where the bf16 matmul rate beats fp32 (CPUs with AMX / AVX512-BF16, GPUs), the generation of the
  llmrl sampler in bf16 (target >= 3x fp32) and the per-token log-prob mismatch of the bf16 model against fp32
  on the generated tokens (what ``algo.rollout_correction`` TIS/MIS corrects); where bf16 is slower, the section
  says so and times a short bf16 forward instead of a generation run that would take hours.

Time to accuracy against TRL (same recipe, both evaluated alike) is benchmarks/time_to_accuracy.py (its own run:
tens of minutes); docs/real_models.md has what was measured.

    python benchmarks/real_model.py --model models/smollm2            # all sections
    python benchmarks/real_model.py --model models/smollm2 --sections generation --runs 3
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

import torch

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("matmul", "generation", "rl_step", "bf16")
SYSTEM_PROMPT = "Be concise."  # recipes/smollm2_arithmetic.yaml's task options
TARGET_VS_VLLM, TARGET_VS_GENERATE, TARGET_FLOOR, TARGET_STEP, TARGET_BF16 = 3.0, 10.0, 1.5, 1.5, 3.0


def matmul_rate(dtype: torch.dtype, size: int = 2048, reps: int = 3) -> float:
    """Best-of-``reps`` dense matmul rate in GFLOP/s for ``size`` x ``size`` matrices of ``dtype``. A dtype the CPU
    has no fast kernels for (bf16 without AMX / AVX512-BF16 runs ~100x slower) is timed at 256 x 256 only."""
    probe_a, probe_b = torch.randn(256, 256).to(dtype), torch.randn(256, 256).to(dtype)
    t0 = time.perf_counter()
    probe_a @ probe_b
    if time.perf_counter() - t0 > 0.05:  # > 0.05 s for 34 MFLOP: under 1 GFLOP/s, the 2048 case would take minutes
        t0 = time.perf_counter()
        probe_a @ probe_b
        return 2 * 256**3 / (time.perf_counter() - t0) / 1e9
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def chat_samples(count: int) -> list[Any]:
    """The smollm2_arithmetic recipe's held-out samples (two-digit sums, chat style, its system prompt)."""
    from llmrl.tasks import get_task

    task = get_task("arithmetic", style="chat", digits=2, ops=["+"], system_prompt=SYSTEM_PROMPT)
    return task.samples(count, "test", 0)


def chat_prompts(model_dir: str, count: int) -> list[list[int]]:
    """:func:`chat_samples` rendered with the model's chat template, as token ids (what every backend gets)."""
    from llmrl.models.loading import encode_prompt, load_tokenizer, render_prompt

    tok = load_tokenizer(model_dir)
    return [encode_prompt(tok, render_prompt(tok, s, None)) for s in chat_samples(count)]


def time_generation(gen: Any, prompts: list[list[int]], params: Any, expect: int) -> float:
    t0 = time.perf_counter()
    out = gen.generate(prompts, params)
    dt = time.perf_counter() - t0
    got = sum(len(g.token_ids) for gens in out for g in gens)
    if got != expect:
        raise RuntimeError(f"{type(gen).__name__}: {got} tokens generated, expected {expect}")
    return dt


def vllm_child(args: argparse.Namespace) -> None:
    """Runs in the vLLM venv: time llmrl's vllm backend on the prompts in ``--prompts-file``; print JSON."""
    from llmrl.models.loading import load_model, load_tokenizer
    from llmrl.rollout.base import GENERATORS, SamplingParams

    torch.set_num_threads(args.threads)
    prompts = json.loads(Path(args.prompts_file).read_text())
    model, tok = load_model(args.model, dtype="float32"), load_tokenizer(args.model)
    gen = GENERATORS.get("vllm")(model, tok)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, n=args.n, ignore_eos=True, seed=0)
    expect = len(prompts) * args.n * args.max_new_tokens
    times = [time_generation(gen, prompts, params, expect) for _ in range(1 + args.runs)][1:]
    print("__result__" + json.dumps({"times": times}))


def section_generation(args: argparse.Namespace, rate: float) -> dict[str, Any]:
    from llmrl.models.loading import load_model, load_tokenizer
    from llmrl.rollout import HFGenerateSampler, KVCacheSampler, SamplingParams

    prompts = chat_prompts(args.model, args.prompts)
    model, tok = load_model(args.model, dtype="float32"), load_tokenizer(args.model)
    model.eval()
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, n=args.n, ignore_eos=True, seed=0)
    expect = len(prompts) * args.n * args.max_new_tokens
    backends = {"llmrl KVCacheSampler": KVCacheSampler(model, tok), "model.generate": HFGenerateSampler(model, tok)}
    times: dict[str, list[float]] = {name: [] for name in backends}
    for r in range(1 + args.runs):
        for name, gen in backends.items():
            dt = time_generation(gen, prompts, params, expect)
            if r:
                times[name].append(dt)
    python = Path(args.vllm_python)
    if python.exists():
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(prompts, f)
        cmd = [str(python), __file__, "--child-vllm", "--prompts-file", f.name, "--model", args.model,
               "--threads", str(args.threads), "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens),
               "--runs", str(args.runs)]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        os.unlink(f.name)
        line = [x for x in proc.stdout.splitlines() if x.startswith("__result__")]
        if proc.returncode or not line:
            raise RuntimeError(f"vLLM child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        times["vLLM-CPU (rollout.backend vllm)"] = json.loads(line[0][len("__result__"):])["times"]
    n_params = sum(p.numel() for p in model.parameters())
    floor = 2 * n_params * expect / (rate * 1e9)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ours = med["llmrl KVCacheSampler"]
    return {"tokens": expect, "params": n_params, "floor_seconds": floor, "seconds": med,
            "tokens_per_second": {k: expect / v for k, v in med.items()},
            "prompt_tokens": [min(map(len, prompts)), max(map(len, prompts))],
            "vs_generate": med["model.generate"] / ours,
            "vs_vllm": med.get("vLLM-CPU (rollout.backend vllm)", float("nan")) / ours,
            "vs_floor": ours / floor}


def section_rl_step(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(REPO / "benchmarks" / "rl_step.py"), "--model", args.model, "--json",
           "--steps", str(args.rl_steps), "--warmup", "1", "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"rl_step.py failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def section_bf16(args: argparse.Namespace, rate32: float, rate16: float) -> dict[str, Any]:
    """bf16 generation speed and log-prob mismatch where bf16 is faster; else a short timed forward."""
    from llmrl.core.types import Batch
    from llmrl.models.loading import load_model, load_tokenizer
    from llmrl.rollout import KVCacheSampler, SamplingParams
    from llmrl.rollout.episodes import generate_episodes
    from llmrl.train.update import policy_logprobs

    tok = load_tokenizer(args.model)
    m32 = load_model(args.model, dtype="float32").eval()
    m16 = load_model(args.model, dtype="bfloat16").eval()
    out: dict[str, Any] = {"matmul_ratio": rate16 / rate32}
    if rate16 <= rate32:  # a forward on 2 x 16 tokens: enough to show the cost without hours of generation
        ids = torch.randint(0, len(tok), (2, 16), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for name, m in (("fp32", m32), ("bf16", m16)):
                m(input_ids=ids)
                t0 = time.perf_counter()
                m(input_ids=ids)
                out[f"forward_seconds_{name}"] = time.perf_counter() - t0
        out["forward_ratio"] = out["forward_seconds_fp32"] / out["forward_seconds_bf16"]
        return out
    prompts = chat_prompts(args.model, args.prompts)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, n=args.n, ignore_eos=True, seed=0)
    expect = len(prompts) * args.n * args.max_new_tokens
    g32, g16 = KVCacheSampler(m32, tok), KVCacheSampler(m16, tok)
    t32, t16 = [], []
    for r in range(1 + args.runs):
        a, b = time_generation(g32, prompts, params, expect), time_generation(g16, prompts, params, expect)
        if r:
            t32.append(a)
            t16.append(b)
    out["generation_seconds"] = {"fp32": statistics.median(t32), "bf16": statistics.median(t16)}
    out["generation_speedup"] = out["generation_seconds"]["fp32"] / out["generation_seconds"]["bf16"]
    # the mismatch: the bf16 sampler's log-probs of its own tokens against the fp32 trainer's
    episodes = generate_episodes(g16, tok, chat_samples(4), params, None)
    batch = Batch.collate(episodes, tok.pad_token_id if tok.pad_token_id is not None else 0)
    with torch.no_grad():
        lp32, _ = policy_logprobs(m32, batch)
    diff = (lp32 - batch.old_logprobs).abs()[batch.mask > 0]
    out["logprob_mismatch"] = {"mean": float(diff.mean()), "max": float(diff.max()),
                               "frac_over_0.1": float((diff > 0.1).float().mean())}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("LLMRL_SMOLLM2_DIR"),
                   help="local HF directory (llmrl models import-gguf output; default $LLMRL_SMOLLM2_DIR)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=2, help="timed rounds per backend after one warm-up")
    p.add_argument("--rl-steps", type=int, default=2, help="timed RL steps (after one warm-up)")
    p.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--child-vllm", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.model:
        p.error("--model DIR is required (or set LLMRL_SMOLLM2_DIR); docs/real_models.md shows how to make it")
    if args.child_vllm:
        vllm_child(args)
        return {}
    torch.set_num_threads(args.threads)
    res: dict[str, Any] = {"model": args.model, "threads": args.threads, "load_start": os.getloadavg()}
    print(f"# benchmarks/real_model.py, {args.model}, {args.threads} threads, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {'/'.join(f'{x:.1f}' for x in os.getloadavg())} at the start\n")
    r32 = matmul_rate(torch.float32)
    r16 = matmul_rate(torch.bfloat16) if {"matmul", "bf16"} & set(args.sections) else float("nan")
    res["matmul_gflops"] = {"fp32": r32, "bf16": r16}
    print(f"matmul 2048x2048 (bf16 at 256x256 where slow): fp32 {r32:.1f} GFLOP/s, bf16 {r16:.1f} GFLOP/s ({r16 / r32:.2f}x)\n")
    if "generation" in args.sections:
        g = res["generation"] = section_generation(args, r32)
        lo, hi = g["prompt_tokens"]
        print(f"## generation: {args.prompts} chat prompts ({lo}-{hi} tokens) x n={args.n} x {args.max_new_tokens} "
              f"new tokens = {g['tokens']} tokens, fp32, temperature 1, median of {args.runs}")
        print("| backend | seconds | tokens/s |\n|---|---:|---:|")
        for name, s in g["seconds"].items():
            print(f"| {name} | {s:.2f} | {g['tokens'] / s:,.0f} |")
        print(f"| arithmetic floor (2 x {g['params'] / 1e6:.1f}M params x tokens / {r32:.0f} GFLOP/s) | "
              f"{g['floor_seconds']:.2f} | {g['tokens'] / g['floor_seconds']:,.0f} |")

        def verdict(ok: bool) -> str:
            return "met" if ok else "MISSED"

        print(f"\nllmrl vs model.generate {g['vs_generate']:.2f}x (target >= {TARGET_VS_GENERATE}x: "
              f"{verdict(g['vs_generate'] >= TARGET_VS_GENERATE)}); vs vLLM-CPU {g['vs_vllm']:.2f}x (target >= "
              f"{TARGET_VS_VLLM}x: {verdict(g['vs_vllm'] >= TARGET_VS_VLLM)}); {g['vs_floor']:.2f}x the floor "
              f"(target <= {TARGET_FLOOR}x: {verdict(g['vs_floor'] <= TARGET_FLOOR)})\n")
    if "rl_step" in args.sections:
        s = res["rl_step"] = section_rl_step(args)
        print(f"## RL step (benchmarks/rl_step.py --model, median of {args.rl_steps} after 1 warm-up)")
        print("| | step s | generation s | scoring s | training s | peak MB |\n|---|---:|---:|---:|---:|---:|")
        for name, r in (("llmrl", s), ("TRL GRPOTrainer", s.get("trl"))):
            if r:
                print(f"| {name} | {r['seconds_per_step']:.2f} | {r['generation_seconds']:.2f} | "
                      f"{r['scoring_seconds']:.2f} | {r['training_seconds']:.2f} | {r['peak_memory_mb']:.0f} |")
        if "speedup_step" in s:
            print(f"\nllmrl step {s['speedup_step']:.2f}x faster than TRL (target >= {TARGET_STEP}x: "
                  f"{'met' if s['speedup_step'] >= TARGET_STEP else 'MISSED'})\n")
    if "bf16" in args.sections:
        b = res["bf16"] = section_bf16(args, r32, r16)
        print("## bf16")
        if "generation_speedup" in b:
            print(f"generation bf16 {b['generation_speedup']:.2f}x fp32 (target >= {TARGET_BF16}x); log-prob "
                  f"mismatch bf16 sampler vs fp32 trainer: mean {b['logprob_mismatch']['mean']:.2e}, max "
                  f"{b['logprob_mismatch']['max']:.2e}, {b['logprob_mismatch']['frac_over_0.1']:.1%} of tokens > 0.1")
        else:
            print(f"bf16 matmuls run at {b['matmul_ratio']:.3f}x fp32 on this CPU (no AMX / AVX512-BF16): a forward "
                  f"of 2 x 16 tokens takes {b['forward_seconds_bf16']:.2f} s in bf16 against "
                  f"{b['forward_seconds_fp32']:.2f} s in fp32 ({b['forward_ratio']:.3f}x); the bf16 target "
                  f"(>= {TARGET_BF16}x) is MISSED here by the hardware; bf16 generation not run")
    res["load_end"] = os.getloadavg()
    print(f"\nload average at the end {'/'.join(f'{x:.1f}' for x in res['load_end'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
