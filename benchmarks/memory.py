"""Peak memory (RSS) and seconds per RL step of llmrl with and without chunked log-probs / a memory budget, and of
TRL's GRPOTrainer, each configuration in a fresh subprocess.

Configurations (``--configs``, default all, run one after the other, never two at once):

* ``a-before``: SmolLM2-135M-Instruct (``--model DIR``), float32, 8 prompts x 8 samples x 64 new tokens, the
  step of ``benchmarks/rl_step.py`` (GRPO, PPO-clip token-mean, k3 KL as a loss term beta 0.04 to a frozen
  reference copy, AdamW 1e-5) with the old path: full [B, T, V] logits (``model.logits_chunk_tokens=0``), the
  whole batch in one forward/backward, no activation checkpointing;
* ``a-after``: the same with the defaults (chunked log-probs, micro-batch and checkpointing from the default
  budget: 85% of the memory this process could use when training starts);
* ``a-after-4gb``: the same with ``optim.memory_budget_gb=4``;
* ``b-full`` / ``b-lora``: a Qwen2.5-0.5B-shaped model, random init (vocab 151,936, hidden 896, 24 layers,
  14 query / 2 key-value heads, MLP 4,864, tied embeddings; SmolLM2's tokenizer, whose ids are all in range),
  4 prompts x 4 samples x 256 new tokens, full fine-tune (budget 14 GB) and LoRA r=16 on every projection
  (budget 5 GB; the reference = adapters off);
* ``c-trl``: TRL's GRPOTrainer at (a) (``rl_step.run_trl``) with its memory settings: gradient checkpointing,
  8 completions per forward/backward x 8 accumulation steps (= one generation batch of 64).

Peak RSS = the child's ``VmHWM`` (its own high-water mark), cross-checked by polling ``/proc/PID/status``
every 0.2 s from this process, which kills a child past ``--max-rss-gb`` (default 18: the machine is shared)
and reports it as killed. Seconds per step = median of ``--steps`` timed steps after ``--warmup`` untimed ones
(``--steps 1 --warmup 1`` by default for (a), ``--steps 1 --warmup 0`` for (b) and (c)); a configuration still
running after ``--timeout`` seconds is stopped and reported with its peak so far. The memory floor printed beside
each llmrl run = weights + gradients + AdamW moments + a separate reference copy (not the runtime).

Example: ``python benchmarks/memory.py --model /work/cache/smollm2-hf`` (``--json`` for machine-readable output).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "a-before": {"model": "smollm2", "prompts": 8, "samples": 8, "new": 64, "chunk": 0, "micro": -1},
    "a-after": {"model": "smollm2", "prompts": 8, "samples": 8, "new": 64},
    "a-after-4gb": {"model": "smollm2", "prompts": 8, "samples": 8, "new": 64, "budget": 4.0},
    "b-full": {"model": "qwen05", "prompts": 4, "samples": 4, "new": 256, "budget": 14.0, "warmup": 0},
    "b-lora": {"model": "qwen05", "prompts": 4, "samples": 4, "new": 256, "budget": 5.0, "lora": True, "warmup": 0},
    "c-trl": {"model": "smollm2", "prompts": 8, "samples": 8, "new": 64, "trl": True, "warmup": 0},
}
GB = 1 << 30


def qwen05_config(tokenizer: Any, layers: int = 24) -> Any:
    """A Qwen2.5-0.5B-shaped config (random init)."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-6,
                       tie_word_embeddings=True, use_sliding_window=False, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def child_llmrl(cfg: dict[str, Any], model_dir: str, steps: int, warmup: int) -> dict[str, Any]:
    """One configuration's RL steps, in this (fresh) process; the building blocks of ``llmrl train``."""
    import torch
    from rl_step import BETA, CLIP, LR, SEED, TEMPERATURE, peak_rss_mb, prompt_schedule, quiet
    from transformers import AutoModelForCausalLM, GenerationConfig

    from llmrl.algos import ADVANTAGES, token_rewards
    from llmrl.core.seed import derive_seed, seed_everything
    from llmrl.core.types import Batch
    from llmrl.models.lm_head import set_logits_chunk_tokens
    from llmrl.models.loading import load_model, load_tokenizer
    from llmrl.rollout.base import SamplingParams
    from llmrl.rollout.episodes import generate_episodes
    from llmrl.tasks import get_task
    from llmrl.train.build import build_generator, reference_policy
    from llmrl.train.collect import score_episodes
    from llmrl.train.memory import AutoMicroBatch, GiB, ModelShape, floor_bytes
    from llmrl.train.optim import build_optimizer, build_scheduler
    from llmrl.train.update import LossSpec, optimizer_step, sequence_logprobs

    quiet()
    seed_everything(SEED)
    tok = load_tokenizer(model_dir)
    if cfg["model"] == "qwen05":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = AutoModelForCausalLM.from_config(qwen05_config(tok, 2 if cfg.get("quick") else 24),
                                                     dtype=torch.float32)
        model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                                   pad_token_id=tok.pad_token_id)
    else:
        model = load_model(model_dir)
    model.eval()
    if "chunk" in cfg:
        set_logits_chunk_tokens(model, cfg["chunk"])
    lora = bool(cfg.get("lora"))
    if lora:
        from llmrl.models.lora import apply_lora

        model = apply_lora(model, r=16, alpha=32).eval()
    ref, ref_ctx = reference_policy(model, lora=lora)
    auto = AutoMicroBatch(model, cfg.get("budget"), reference=not lora,
                          micro_batch_size=10**9 if cfg.get("micro") == -1 else 0)  # -1: the whole batch
    generator = build_generator(model, tok, "kvcache")
    task = get_task("arithmetic")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], LR)
    scheduler = build_scheduler(optimizer, 0, steps + warmup, "constant")
    spec = LossSpec(loss="ppo_clip", loss_options={}, agg="token-mean", agg_constant=float(cfg["new"]),
                    temperature=TEMPERATURE, kl_coef=BETA, kl_estimator="k3", entropy_coef=0.0)
    grpo = ADVANTAGES.get("grpo")
    import rl_step

    rl_step.PROMPTS = cfg["prompts"]
    schedule = prompt_schedule(task.samples(200, "train", SEED), warmup + steps)
    rows = []
    for step, prompts in enumerate(schedule, start=1):
        t0 = time.perf_counter()
        params = SamplingParams(max_new_tokens=cfg["new"], temperature=TEMPERATURE, n=cfg["samples"],
                                seed=derive_seed(SEED, "rollout", step), ignore_eos=True)
        episodes = generate_episodes(generator, tok, prompts, params, chat_template=None)
        t1 = time.perf_counter()
        score_episodes(episodes, task, 0.0, cfg["new"])
        batch = Batch.collate(episodes, pad_id)
        micro = auto(batch)
        batch.ref_logprobs = sequence_logprobs(ref, batch, TEMPERATURE, auto.scoring(batch), ref_ctx)
        batch.advantages = grpo(token_rewards(batch.scores, batch.mask), batch.mask, group_ids=batch.group_ids,
                                baseline=None)
        t2 = time.perf_counter()
        ok, _ = optimizer_step(model, optimizer, scheduler, batch, spec, micro, CLIP)
        t3 = time.perf_counter()
        if not ok or {e.num_policy_tokens for e in episodes} != {cfg["new"]}:
            raise RuntimeError(f"step {step}: update ok={ok}")
        if step > warmup:
            rows.append({"step": t3 - t0, "generation": t1 - t0, "scoring": t2 - t1, "training": t3 - t2})
    shape = ModelShape.of(model)
    plan = auto.last
    return {"seconds_per_step": statistics.median(r["step"] for r in rows),
            "training_seconds": statistics.median(r["training"] for r in rows),
            "generation_seconds": statistics.median(r["generation"] for r in rows),
            "peak_rss_mb": peak_rss_mb(), "floor_gb": (floor_bytes(shape, not lora) - GiB) / GiB,
            "estimate_gb": plan.estimate_bytes / GiB if plan is not None else None,
            "micro_batch_size": min(micro, batch.size), "checkpointing": auto.checkpointing,
            "budget_gb": auto.budget / GiB if cfg.get("micro") != -1 else None,
            "sequence_tokens": int(batch.input_ids.shape[1]), "threads": torch.get_num_threads()}


def child_trl(cfg: dict[str, Any], model_dir: str, steps: int, warmup: int) -> dict[str, Any]:
    import rl_step

    from llmrl.tasks import get_task

    rl_step.quiet()
    schedule = rl_step.prompt_schedule(get_task("arithmetic").samples(200, "train", rl_step.SEED), warmup + steps)
    r = rl_step.run_trl(model_dir, schedule, warmup, cfg["new"], 0, lean=True)
    return {"seconds_per_step": r["seconds_per_step"], "training_seconds": r["training_seconds"],
            "generation_seconds": r["generation_seconds"], "peak_rss_mb": r["peak_memory_mb"]}


def _rss_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter; poll its RSS, kill it past ``--max-rss-gb``."""
    cfg = CONFIGS[name]
    steps, warmup = args.steps, cfg.get("warmup", 1) if args.warmup is None else args.warmup
    with tempfile.TemporaryFile("w+") as out:
        cmd = [sys.executable, __file__, "--child", name, "--model", args.model, "--steps", str(steps),
               "--warmup", str(warmup), *(["--quick"] if args.quick else [])]
        path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL if not args.verbose else None, env=env)
        try:
            killed, timed_out, polled = _watch(proc, args, t0)
        finally:  # this process stopped (Ctrl-C, SIGTERM): the child goes too
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        lines = [x for x in out.read().splitlines() if x.startswith("{")]
    ok = lines and not killed and not timed_out and proc.returncode == 0
    res: dict[str, Any] = json.loads(lines[-1]) if ok else {}
    res.update(name=name, polled_peak_mb=polled / 1024, wall_seconds=time.time() - t0, killed=killed,
               timed_out=timed_out, returncode=proc.returncode)
    return res


def _watch(proc: subprocess.Popen, args: argparse.Namespace, t0: float) -> tuple[bool, bool, int]:
    """Poll the child's RSS until it exits; kill it past --max-rss-gb or --timeout. -> (killed, timed out,
    polled peak KiB)."""
    polled, killed, timed_out = 0, False, False
    while proc.poll() is None:
        polled = max(polled, _rss_kb(proc.pid, "VmRSS"))
        if polled > args.max_rss_gb * (1 << 20):
            proc.kill()
            killed = True
        if time.time() - t0 > args.timeout:
            proc.kill()
            timed_out = True
        time.sleep(0.2)
    return killed, timed_out, polled


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'config':13}{'s/step':>8}{'train s':>9}{'peak GiB':>10}{'floor':>10}{'estimate':>9}{'budget':>8}"
            f"{'micro':>7}{'ckpt':>6}")
    lines = [head, "-" * len(head)]

    def f(v: Any, spec: str) -> str:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        return format(v, spec) if ok else "-".rjust(int(spec.split(".")[0].rstrip("df")))

    for r in rows:
        if "seconds_per_step" not in r:
            why = (f"killed at {r['polled_peak_mb'] / 1024:.1f} GB RSS" if r["killed"] else
                   f"stopped after {r['wall_seconds']:.0f} s (--timeout), peak {r['polled_peak_mb'] / 1024:.1f} GB"
                   if r["timed_out"] else f"exit {r['returncode']}")
            lines.append(f"{r['name']:13}  {why}")
            continue
        peak = max(r["peak_rss_mb"], r["polled_peak_mb"]) / 1024
        ck = {True: "on", False: "off"}.get(r.get("checkpointing"), "-")
        lines.append(f"{r['name']:13}{f(r['seconds_per_step'], '8.1f')}{f(r['training_seconds'], '9.1f')}"
                     f"{peak:10.2f}{f(r.get('floor_gb'), '10.2f')}{f(r.get('estimate_gb'), '9.2f')}"
                     f"{f(r.get('budget_gb'), '8.1f')}{f(r.get('micro_batch_size'), '7d')}{ck:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="SmolLM2-135M-Instruct directory (its tokenizer also serves (b))")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    p.add_argument("--steps", type=int, default=1, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 1 for (a), 0 for (b) and (c))")
    p.add_argument("--max-rss-gb", type=float, default=18.0, help="kill a configuration past this RSS")
    p.add_argument("--timeout", type=float, default=1200.0, help="stop a configuration after this many seconds")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--verbose", action="store_true", help="show the children's stderr")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 prompts x 2 samples x 8 tokens, (b) with 2 "
                   "layers (the numbers mean nothing)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:  # inside the fresh subprocess
        cfg = CONFIGS[args.child]
        if args.quick:
            cfg = {**cfg, "prompts": 2, "samples": 2, "new": 8, "quick": True}
        fn = child_trl if cfg.get("trl") else child_llmrl
        warmup = cfg.get("warmup", 1) if args.warmup is None else args.warmup
        print(json.dumps(fn(cfg, args.model, args.steps, warmup)), flush=True)
        return []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the children's clean-up (run_config)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; valid: {list(CONFIGS)}")
    if "c-trl" in names:
        import importlib.util

        if importlib.util.find_spec("trl") is None:
            print("trl is not installed: c-trl skipped", file=sys.stderr)
            names.remove("c-trl")
    rows = []
    for n in names:
        rows.append(run_config(n, args))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # each result as soon as it is known
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"RL step memory, {os.cpu_count()} CPUs; peak = max(child VmHWM, polled RSS); floor = weights + "
              "grads + AdamW + reference; estimate = llmrl.train.memory's for the step (GiB)")
        print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
