#!/usr/bin/env python
"""llmrl from Python: load and override a config, train, evaluate the saved model, score completions.

Every step uses the public API documented in ``docs/python_api.md``; all of it runs offline on a CPU:

1. ``llmrl.config.load_config(None, overrides, base=...)``: sums of three digits (``"3+5+9="`` -> ``"17"``),
   the quickstart's recipe at a smaller scale: a tiny model warm-started by SFT on a sloppy teacher who
   forgets the carry half the time, then a few GRPO steps with the task's verifier as the reward.
2. ``llmrl.trainers.run_trainer(cfg)``: trains in ``--output-dir`` (a new temporary directory by default,
   removed at the end) and returns the run summary (held-out greedy accuracy before and after RL).
3. ``llmrl.cli.finetune.eval_command(cfg, model_dir)``: evaluates the saved ``final_model`` directory.
4. Samples one completion from the saved model and scores it with the task's reward functions, in this
   process (``llmrl.rewards.base.combine_rewards``) and in the worker pool RL collection uses
   (``llmrl.rewards.pool.task_pool(task).score``).
5. Registers a task with its own reward (``@TASKS.register``) and scores a completion with it.

    python examples/python_api.py --threads 1

With the defaults the whole script uses about 20 s of CPU time (one thread); on a shared 2-core VM at load
average ~9 it took about a minute of wall time. ``--rl-steps`` / ``--sft-steps`` change the run length,
``--keep`` keeps the temporary output directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output-dir", default=None, help="run directory (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the temporary output directory")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: the run chooses, see llmrl config)")
    p.add_argument("--seed", type=int, default=0, help="seed of the run")
    p.add_argument("--sft-steps", type=int, default=300, help="SFT warm-start steps")
    p.add_argument("--rl-steps", type=int, default=10, help="GRPO steps")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object at the end")
    args = p.parse_args(argv)
    if args.sft_steps < 0 or args.rl_steps < 1 or args.threads < 0:
        p.error("--sft-steps must be >= 0, --rl-steps >= 1 and --threads >= 0")
    return args


# The quickstart's recipe scaled down: three one-digit operands instead of two two-digit ones, a smaller tiny
# model, 300 SFT steps instead of 2000, 80 held-out prompts.
BASE: dict[str, Any] = {
    "trainer": "rl",
    "model": {"tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256,
                       "max_position_embeddings": 64}},
    "task": {"name": "arithmetic", "options": {"digits": 1, "num_operands": 3, "ops": ["+"], "style": "plain"},
             "train_size": 800, "test_size": 80},
    "sft": {"batch_size": 64, "lr": 3e-3, "schedule": "constant", "warmup_steps": 20, "noise": 0.5,
            "num_examples": 800},
    "rollout": {"prompts_per_step": 32, "samples_per_prompt": 8, "max_new_tokens": 6, "temperature": 1.0},
    "algo": {"advantage": "grpo", "loss": "ppo_clip"},
    "optim": {"lr": 5e-4, "warmup_steps": 2, "grad_clip": 1.0},
    "eval": {"every": 0, "samples": 0, "pass_k": []},
    "progress": False,
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from llmrl.cli.finetune import eval_command
    from llmrl.config import load_config
    from llmrl.rewards.base import combine_rewards
    from llmrl.rewards.pool import task_pool
    from llmrl.trainers import run_trainer

    if args.threads:
        torch.set_num_threads(args.threads)  # run_trainer applies cfg.threads itself; evaluation does not
    temporary = args.output_dir is None
    out = Path(tempfile.mkdtemp(prefix="llmrl_python_api_")) if temporary else Path(args.output_dir)
    t0 = time.time()
    try:
        # 1. a config: a base dict (or a recipe path as the first argument), then dotted overrides
        cfg = load_config(None, [f"output_dir={out / 'run'}", f"seed={args.seed}", f"threads={args.threads}",
                                 f"sft.steps={args.sft_steps}", f"steps={args.rl_steps}"], base=BASE)
        print(f"config: trainer {cfg.trainer}, task {cfg.task.name}, {cfg.sft.steps} SFT steps, {cfg.steps} "
              f"{cfg.algo.advantage} steps, output_dir {cfg.output_dir}")

        # 2. train: claims output_dir, returns the summary (also written to output_dir/summary.json)
        summary = run_trainer(cfg)
        before, after = summary["accuracy_before"], summary["accuracy_after"]
        print(f"held-out greedy accuracy: {before:.3f} after SFT -> {after:.3f} after RL "
              f"({summary['wall_seconds']:.1f} s)")

        # 3. evaluate a saved model directory (any local HF causal LM works the same way)
        model_dir = Path(cfg.output_dir) / "final_model"
        metrics = eval_command(cfg, str(model_dir))
        print(f"eval_command({model_dir.name}): accuracy {metrics['accuracy']:.3f}, "
              f"format rate {metrics['format_rate']:.3f}")

        # 4. one completion from the saved model, scored by the task's reward functions
        from llmrl.models.loading import load_model, load_tokenizer
        from llmrl.rollout.base import GENERATORS, SamplingParams
        from llmrl.rollout.episodes import generate_episodes
        from llmrl.tasks import get_task

        task = get_task(cfg.task.name, **cfg.task.options)
        sample = task.samples(1, "test", seed=123)[0]
        model, tok = load_model(model_dir), load_tokenizer(model_dir)
        generator = GENERATORS.get("kvcache")(model, tok)
        episode = generate_episodes(generator, tok, [sample], SamplingParams(max_new_tokens=6, temperature=0.0),
                                    chat_template=None)[0]
        completion = episode.completion
        local = combine_rewards(task.reward_functions(), completion, sample)
        pooled = task_pool(task).score([completion], [sample], checks=True)[0]
        print(f"prompt {sample['prompt']!r} gold {sample['answer']!r} -> completion {completion!r}: "
              f"reward {local.total:g} {local.components} (in-process), {pooled.total:g} "
              f"correct={pooled.checks['correct']} (worker pool)")

        # 5. a task of your own with its own reward, registered by name
        custom = register_even_task()
        text = "42"
        outcome = combine_rewards(custom.reward_functions(), text, {"prompt": "even?", "answer": "even"})
        print(f"registered task 'even_number': {text!r} scores {outcome.total:g} {outcome.components}")

        results = {"accuracy_before": before, "accuracy_after": after, "eval_accuracy": metrics["accuracy"],
                   "completion": completion, "gold": str(sample["answer"]), "reward": local.total,
                   "pool_reward": pooled.total, "correct": pooled.checks["correct"],
                   "custom_reward": outcome.total, "seconds": time.time() - t0}
        if args.json:
            print(json.dumps(results))
        return results
    finally:
        if temporary and not args.keep:
            shutil.rmtree(out, ignore_errors=True)


def register_even_task() -> Any:
    """Register (once) and build a minimal task: answer with an even number; its reward is a plain function."""
    import random

    from llmrl.tasks import TASKS, Task, get_task

    def even_reward(completion: str, sample: Mapping[str, Any]) -> float:
        text = completion.strip()
        return 1.0 if text.isdigit() and int(text) % 2 == 0 else 0.0

    if "even_number" not in TASKS:
        @TASKS.register("even_number")
        class EvenNumber(Task):
            name = "even_number"

            def make_sample(self, rng: random.Random) -> dict[str, Any]:
                return {"prompt": f"{rng.randrange(10**6)} even?", "answer": "even"}

            def reward_functions(self) -> dict[str, Any]:
                return {"even": even_reward}

            def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
                return even_reward(completion, sample) == 1.0

            def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
                return completion.strip().isdigit()

    return get_task("even_number")


if __name__ == "__main__":
    main(sys.argv[1:])
