"""``llmrl quickstart``: the whole pipeline on a laptop CPU in minutes, with no network.

1. Build a tiny Llama-architecture model and a character tokenizer offline.
2. Warm-start it by SFT on imperfect demonstrations of 2-digit addition: a sloppy teacher who forgets
   the carry half the time. The SFT model copies the teacher, mistakes included.
3. Run GRPO with the task's verifier as the reward. Sampling finds the carried answers the teacher
   sometimes gave; the verifier rewards them; greedy accuracy on held-out sums rises.
4. Print a before/after table and write ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmrl.config import Config, load_config

QUICKSTART: dict[str, Any] = {
    "steps": 80,
    "threads": 0,  # auto: 2 on an idle 2-core machine, 1 when another process keeps a core busy
    "model": {"tiny": {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 512,
                       "max_position_embeddings": 64}},
    "task": {"name": "arithmetic", "options": {"digits": 2, "ops": ["+"], "style": "plain"},
             "train_size": 8000, "test_size": 300},
    "sft": {"steps": 2000, "batch_size": 64, "lr": 1e-3, "schedule": "constant", "warmup_steps": 50, "noise": 0.5,
            "num_examples": 8000},
    "rollout": {"prompts_per_step": 32, "samples_per_prompt": 8, "max_new_tokens": 6, "temperature": 1.0},
    "algo": {"advantage": "grpo", "loss": "ppo_clip", "loss_agg": "token-mean"},
    "optim": {"lr": 2e-4, "warmup_steps": 5, "grad_clip": 1.0},
    "eval": {"every": 20, "samples": 8, "pass_k": [1, 8]},
}


def quickstart_config(output_dir: str = "runs/quickstart", seed: int = 0, overrides: list[str] | None = None) -> Config:
    base = {**QUICKSTART, "output_dir": output_dir, "seed": seed}
    return load_config(None, list(overrides or []), base=base)


def quickstart(output_dir: str = "runs/quickstart", seed: int = 0, overrides: list[str] | None = None,
               overwrite: bool = False) -> dict[str, Any]:
    """Run the quickstart into ``output_dir`` (an earlier run there is refused unless ``overwrite``)."""
    from llmrl.trainers import run_trainer

    cfg = quickstart_config(output_dir, seed, overrides)
    print(f"llmrl quickstart: tiny model, SFT on sloppy demonstrations ({cfg.sft.noise:.0%} drop the carry), "
          f"then {cfg.steps} RL steps ({cfg.algo.advantage} advantages) on {cfg.task.name}; output in {cfg.output_dir}")
    summary = run_trainer(cfg, overwrite=overwrite)
    print(format_table(summary))
    print(f"summary: {Path(cfg.output_dir) / 'summary.json'}")
    write_plot(cfg.output_dir, f"llmrl quickstart (seed {cfg.seed})")
    return summary


def write_plot(output_dir: str | Path, title: str) -> None:
    """``plot.png`` and ``plot.html`` (the run's curves) into ``output_dir``, paths printed; a failure to draw
    them is a warning: the run itself is complete."""
    import sys

    from llmrl.cli.plot import plot_run_dir

    try:
        png, page = plot_run_dir(output_dir, title)
    except (ImportError, OSError, ValueError) as exc:
        print(f"llmrl quickstart: warning: no plot written ({exc})", file=sys.stderr)
        return
    print(f"plot: {png} (and {page.name})")


def format_table(summary: dict[str, Any]) -> str:
    b, a = summary["before"], summary["after"]
    rows = [("held-out greedy accuracy", "accuracy"), ("mean reward (greedy)", "reward"),
            ("format rate", "format_rate"), ("mean length (tokens)", "length")]
    rows += [(f"pass@{k.split('@')[1]} (sampled)", k) for k in sorted(a) if k.startswith("pass@")]
    lines = [f"{'':28s} {'after SFT':>10s} {'after RL':>10s}", "-" * 50]
    for label, key in rows:
        if key in b and key in a:
            lines.append(f"{label:28s} {b[key]:10.3f} {a[key]:10.3f}")
    lines.append(f"{'wall time (s)':28s} {summary['sft_seconds']:10.1f} {summary['wall_seconds']:10.1f}")
    lines.append("(wall time: SFT alone | whole run incl. SFT, RL and evaluations)")
    return "\n".join(lines)


__all__ = ["QUICKSTART", "format_table", "quickstart", "quickstart_config", "write_plot"]
