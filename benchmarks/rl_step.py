"""Seconds per RL step of llmrl versus TRL's GRPOTrainer, on one fixed configuration.

Configuration (fixed): the built-in tiny Llama (hidden 128, 4 layers, 4 heads, MLP 512, character tokenizer,
float32) or any local HF directory (``--model DIR``); 8 arithmetic prompts x 8 samples per step; exactly 64 new
tokens per sample; temperature 1; GRPO advantages; PPO-clip loss, token-mean; k3 KL to a frozen reference as a
loss term with beta 0.04; AdamW lr 1e-5 (constant), grad clip 1; one optimizer step per batch.

llmrl side (this process): the building blocks of ``llmrl train`` (see ``llmrl.rl.loop``), not a re-implementation:
``build_generator`` (the KVCacheSampler), ``generate_episodes`` with ``SamplingParams(ignore_eos=True)``,
``score_episodes``, ``Batch.collate``, ``sequence_logprobs`` on ``reference_policy(model)``, ``token_rewards``,
``ADVANTAGES["grpo"]`` and ``optimizer_step`` with a ``LossSpec``. A step is split into
generation (prompts -> episodes) / scoring (reward, collate, reference log-probs, advantages) /
training (forward + backward + optimizer step).

TRL side (a spawned child process, so its peak RSS is its own): ``GRPOTrainer`` with the same weights (the tiny
model is written with ``save_tiny_model`` and both sides load it), the same prompts in the same order
(``shuffle_dataset=False``), per_device_train_batch_size 64 = 8 prompts x num_generations 8,
gradient_accumulation_steps 1, num_iterations 1, max_completion_length 64 with ``generation_kwargs={"min_new_tokens":
64}`` (EOS is masked for all 64 steps, so no completion stops early; every completion's length is checked),
beta 0.04, loss_type "dapo" (token mean), epsilon 0.2, same lr / schedule / clip, use_cpu, no vLLM, bf16/fp16 off,
gradient_checkpointing off (TRL's default is on; llmrl does not recompute activations),
logging and saving off, report_to none, reward = the arithmetic task's reward. Step time = on_step_begin ->
on_step_end (TrainerCallback); generation = wall time of ``trainer._generate`` (tokenize, ``model.generate``,
decode); scoring = ``_generate_and_score_completions`` minus generation; training = step minus both.

Reported: median seconds per timed step and per phase (after ``--warmup`` untimed steps; medians because this
runs on shared CPUs), generated tokens / median generation seconds,
and process peak RSS in MB (``VmHWM`` on Linux, else ``resource.getrusage``; see ``peak_rss_mb``).
Example: ``python benchmarks/rl_step.py --threads 1`` (``--json`` for machine-readable output).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from llmrl.algos import ADVANTAGES, token_rewards
from llmrl.core.seed import derive_seed, seed_everything
from llmrl.core.types import Batch, Sample
from llmrl.models.loading import load_model, load_tokenizer, render_prompt
from llmrl.models.tiny import TinyModelSpec, save_tiny_model
from llmrl.rewards.base import combine_rewards
from llmrl.rollout.base import SamplingParams
from llmrl.rollout.episodes import generate_episodes
from llmrl.tasks import get_task
from llmrl.train.build import build_generator, reference_policy
from llmrl.train.collect import DataStream, score_episodes
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.update import LossSpec, optimizer_step, sequence_logprobs

PROMPTS, SAMPLES, BETA, LR, CLIP, TEMPERATURE, SEED = 8, 8, 0.04, 1e-5, 1.0, 1.0, 0
SPEC = TinyModelSpec(arch="llama", hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=512)
TARGET_GEN, TARGET_STEP = 3.0, 1.5
KEYS = ("seconds_per_step", "generation_seconds", "scoring_seconds", "training_seconds",
        "generation_tokens_per_second", "peak_memory_mb")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    ``getrusage(RUSAGE_SELF).ru_maxrss``, except on Linux where ``VmHWM`` of ``/proc/self/status`` is used
    when readable: Linux carries ``ru_maxrss`` over fork + exec, so a spawned child would report at least
    its parent's RSS; ``VmHWM`` is the high-water mark of the process's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def summarize(rows: list[dict[str, float]], tokens_per_step: int) -> dict[str, float]:
    """Median seconds of each phase over the timed steps (robust to a busy shared machine), and generated
    tokens per second of median generation time."""
    med = {k: statistics.median(r[k] for r in rows) for k in ("step", "generation", "scoring", "training")}
    return {
        "seconds_per_step": med["step"],
        "generation_seconds": med["generation"],
        "scoring_seconds": med["scoring"],
        "training_seconds": med["training"],
        "generation_tokens_per_second": tokens_per_step / max(med["generation"], 1e-12),
        "peak_memory_mb": peak_rss_mb(),
        "timed_steps": float(len(rows)),
    }


def prompt_schedule(samples: list[Sample], steps: int) -> list[list[Sample]]:
    """The prompts of every step, drawn exactly as ``llmrl train`` draws them (a seeded DataStream)."""
    data = DataStream(samples, SEED)
    return [data.next(PROMPTS) for _ in range(steps)]


def quiet() -> None:
    """Silence transformers' warnings and progress bars (saving / loading shards)."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def run_llmrl(model_dir: str, schedule: list[list[Sample]], warmup: int, max_new: int) -> dict[str, float]:
    """Time ``len(schedule)`` RL steps of llmrl (the first ``warmup`` untimed)."""
    seed_everything(SEED)
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    model.eval()  # as build_run: no dropout, sampler and trainer score the same policy
    ref, _ = reference_policy(model, lora=False)  # a frozen copy, as build_run without LoRA
    generator = build_generator(model, tok, "kvcache")
    task = get_task("arithmetic")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    optimizer = build_optimizer(model.parameters(), LR)
    scheduler = build_scheduler(optimizer, 0, len(schedule), "constant")
    spec = LossSpec(loss="ppo_clip", loss_options={}, agg="token-mean", agg_constant=float(max_new),
                    temperature=TEMPERATURE, kl_coef=BETA, kl_estimator="k3", entropy_coef=0.0)
    grpo = ADVANTAGES.get("grpo")
    rows: list[dict[str, float]] = []
    for step, prompts in enumerate(schedule, start=1):
        t0 = time.perf_counter()
        params = SamplingParams(max_new_tokens=max_new, temperature=TEMPERATURE, n=SAMPLES,
                                seed=derive_seed(SEED, "rollout", step), ignore_eos=True)
        episodes = generate_episodes(generator, tok, prompts, params, chat_template=None)
        t1 = time.perf_counter()
        score_episodes(episodes, task, 0.0, max_new)
        batch = Batch.collate(episodes, pad_id)
        batch.ref_logprobs = sequence_logprobs(ref, batch, TEMPERATURE)
        rewards = token_rewards(batch.scores, batch.mask)
        batch.advantages = grpo(rewards, batch.mask, group_ids=batch.group_ids, baseline=None)
        t2 = time.perf_counter()
        order = torch.randperm(batch.size, generator=torch.Generator().manual_seed(derive_seed(SEED, step, 0)))
        ok, _ = optimizer_step(model, optimizer, scheduler, batch.select(order), spec, 0, CLIP)
        t3 = time.perf_counter()
        lengths = {e.num_policy_tokens for e in episodes}
        if len(episodes) != PROMPTS * SAMPLES or lengths != {max_new} or not ok:
            raise RuntimeError(f"llmrl step {step}: {len(episodes)} episodes, lengths {lengths}, update ok={ok}")
        if step > warmup:
            rows.append({"step": t3 - t0, "generation": t1 - t0, "scoring": t2 - t1, "training": t3 - t2})
    return summarize(rows, PROMPTS * SAMPLES * max_new)  # every episode was checked to have max_new tokens


def grpo_config(output_dir: str, **settings: Any) -> Any:
    """TRL's ``GRPOConfig`` for a CPU benchmark: ``settings`` (batch, lr, ...) on top of what every comparison here
    fixes: CPU, no vLLM, fp32 (bf16/fp16 off), gradient checkpointing off (TRL's default is on; llmrl does not
    recompute activations), the dataset in order (``shuffle_dataset=False``), no logging, saving or progress bar."""
    from trl import GRPOConfig

    fixed: dict[str, Any] = dict(use_cpu=True, use_vllm=False, bf16=False, fp16=False, gradient_checkpointing=False,
                                 shuffle_dataset=False, logging_strategy="no", save_strategy="no", report_to="none",
                                 disable_tqdm=True, log_completions=False, dataloader_num_workers=0)
    return GRPOConfig(output_dir=output_dir, **{**fixed, **settings})


def trl_rows(tokenizer: Any, samples: list[Sample], chat_template: bool | None = None) -> list[dict[str, str]]:
    """TRL dataset rows: each sample's prompt rendered as llmrl renders it (:func:`render_prompt`, so the same
    text and chat template), and the sample itself as JSON for :func:`trl_reward`."""
    return [{"prompt": render_prompt(tokenizer, s, chat_template), "sample_json": json.dumps(s)} for s in samples]


def trl_reward(task: Any) -> Any:
    """A TRL reward function scoring each completion with ``task``'s reward functions (llmrl's reward)."""
    fns = task.reward_functions()

    def task_reward(completions: list[str], sample_json: list[str], **_: Any) -> list[float]:
        return [combine_rewards(fns, c, json.loads(s)).total for c, s in zip(completions, sample_json, strict=True)]

    task_reward.__name__ = f"{task.name}_reward"  # TRL names the reward by its function name
    return task_reward


def run_trl(model_dir: str, schedule: list[list[Sample]], warmup: int, max_new: int, threads: int,
            lean: bool = False) -> dict[str, Any]:
    """Time GRPOTrainer on the same model, prompts and settings (runs in a spawned child process). ``lean``
    (benchmarks/memory.py): TRL's memory settings instead, gradient checkpointing and 8 completions per
    forward/backward x 8 accumulation steps (one generation batch of 64 per optimizer step)."""
    import warnings

    warnings.filterwarnings("ignore")
    quiet()
    if threads > 0:
        torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    rows = trl_rows(tok, [s for p in schedule for s in p])
    arithmetic_reward = trl_reward(get_task("arithmetic"))

    gen_s: list[float] = []
    gen_score_s: list[float] = []
    step_s: list[float] = []
    lengths: set[int] = set()
    completions = 0

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step_s.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as out:
        cfg = grpo_config(
            out, per_device_train_batch_size=SAMPLES if lean else PROMPTS * SAMPLES,
            num_generations=SAMPLES, gradient_accumulation_steps=PROMPTS if lean else 1, num_iterations=1,
            max_steps=len(schedule),
            max_completion_length=max_new, generation_kwargs={"min_new_tokens": max_new},
            temperature=TEMPERATURE, beta=BETA, loss_type="dapo", epsilon=0.2, scale_rewards="group",
            learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=CLIP,
            gradient_checkpointing=lean, seed=SEED,
        )  # fmt: skip
        trainer = GRPOTrainer(model=model, reward_funcs=arithmetic_reward, args=cfg,
                              train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[StepTimer()])
        generate, generate_and_score = trainer._generate, trainer._generate_and_score_completions

        def timed_generate(prompts: list[Any]) -> Any:
            nonlocal completions
            expected = [r["prompt"] for r in rows[len(gen_s) * PROMPTS : (len(gen_s) + 1) * PROMPTS]]
            if prompts[::SAMPLES] != expected:  # TRL must see llmrl's prompts of this step, in order
                raise RuntimeError(f"TRL step {len(gen_s) + 1}: prompts {prompts[::SAMPLES]} != {expected}")
            t = time.perf_counter()
            out = generate(prompts)
            gen_s.append(time.perf_counter() - t)
            lengths.update(len(ids) for ids in out[1])  # out[1]: completion token ids (after TRL's EOS cut)
            completions += len(out[1])
            return out

        def timed_generate_and_score(inputs: Any) -> Any:
            t = time.perf_counter()
            out = generate_and_score(inputs)
            gen_score_s.append(time.perf_counter() - t)
            return out

        trainer._generate = timed_generate  # type: ignore[method-assign]
        trainer._generate_and_score_completions = timed_generate_and_score  # type: ignore[method-assign]
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its final metrics dict; keep stdout clean
            trainer.train()
    n = len(schedule)
    if not (len(step_s) == len(gen_s) == len(gen_score_s) == n) or lengths != {max_new} or completions != n * PROMPTS * SAMPLES:
        raise RuntimeError(f"TRL: {len(step_s)} steps, {len(gen_s)} generations, lengths {lengths}, "
                           f"{completions} completions (expected {n} steps of {PROMPTS * SAMPLES} x {max_new} tokens)")
    timed = [{"step": s, "generation": g, "scoring": gs - g, "training": s - gs}
             for s, g, gs in list(zip(step_s, gen_s, gen_score_s))[warmup:]]
    return {**summarize(timed, PROMPTS * SAMPLES * max_new), "completion_lengths": sorted(lengths)}


def format_table(ours: dict[str, Any], trl: dict[str, Any] | None) -> str:
    head = f"{'':8}{'step s':>9}{'gen s':>9}{'score s':>9}{'train s':>9}{'gen tok/s':>11}{'peak MB':>9}"
    lines = [head, "-" * len(head)]
    for name, r in (("llmrl", ours), ("trl", trl)):
        if r is not None:
            lines.append(f"{name:8}{r['seconds_per_step']:9.3f}{r['generation_seconds']:9.3f}"
                         f"{r['scoring_seconds']:9.3f}{r['training_seconds']:9.3f}"
                         f"{r['generation_tokens_per_second']:11.0f}{r['peak_memory_mb']:9.0f}")
    if trl is not None:
        sp, sg = ours["speedup_step"], ours["speedup_generation_tokens_per_second"]
        lines += [f"ratio   {sp:9.2f}x{'':27}{sg:9.2f}x  (llmrl vs trl; >1 = llmrl faster)",
                  f"target: generation tokens/s >= {TARGET_GEN}x trl: {'MET' if sg >= TARGET_GEN else 'MISSED'}; "
                  f"whole step >= {TARGET_STEP}x faster: {'MET' if sp >= TARGET_STEP else 'MISSED'}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="local HF model directory (default: the built-in tiny Llama)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--no-trl", action="store_true", help="skip the TRL GRPOTrainer comparison")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--max-new-tokens", type=int, default=64, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.max_new_tokens < 1:
        p.error("need --steps >= 1, --warmup >= 0, --max-new-tokens >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table (or JSON) and return the results."""
    args = parse_args(argv)
    quiet()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    use_trl = not args.no_trl and importlib.util.find_spec("trl") is not None
    task = get_task("arithmetic")
    schedule = prompt_schedule(task.samples(200, "train", SEED), args.warmup + args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(save_tiny_model(Path(tmp) / "tiny", SPEC, seed=SEED))
        result: dict[str, Any] = run_llmrl(model_dir, schedule, args.warmup, args.max_new_tokens)
        if use_trl:
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                job = pool.submit(run_trl, model_dir, schedule, args.warmup, args.max_new_tokens, args.threads)
                trl = job.result()
            result["trl"] = trl
            result["speedup_step"] = trl["seconds_per_step"] / result["seconds_per_step"]
            result["speedup_generation_tokens_per_second"] = (
                result["generation_tokens_per_second"] / trl["generation_tokens_per_second"])
            result["targets_met"] = {"generation": result["speedup_generation_tokens_per_second"] >= TARGET_GEN,
                                     "step": result["speedup_step"] >= TARGET_STEP}
    result["config"] = {"model": args.model or "tiny-llama-h128-l4", "prompts": PROMPTS, "samples": SAMPLES,
                        "max_new_tokens": args.max_new_tokens, "beta": BETA, "warmup": args.warmup,
                        "steps": args.steps, "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        c = result["config"]
        print(f"RL step, {c['model']}, {PROMPTS} prompts x {SAMPLES} samples x {c['max_new_tokens']} tokens, "
              f"{c['threads']} threads, median of {args.steps} steps after {args.warmup} warm-up")
        print(format_table(result, result.get("trl")))
        if not use_trl and not args.no_trl:
            print("trl is not installed: TRL comparison skipped")
    return result


if __name__ == "__main__":
    main()
