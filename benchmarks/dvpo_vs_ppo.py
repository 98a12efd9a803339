"""Peak memory and seconds per RL step of DVPO (frozen value model) versus PPO (trained critic), one run.

Both methods run ``llmrl.rl.loop.train`` — the loop ``llmrl train`` runs — at identical settings: the
same tiny Llama policy (``--hidden-size``, ``--layers``; character tokenizer, float32), the same
arithmetic prompts (``--prompts`` x ``--samples`` per step, ``--max-new-tokens``), a frozen reference
model with the per-token KL penalty in the reward (k1, beta 0.05), GAE advantages (gamma 1, lambda 0.95,
whitened), PPO clip 0.2, AdamW, one optimizer step per batch, the same initial value model (a value head
on a copy of the policy, written once and loaded by both as ``critic.path``). The only differences are
DVPO's: the value model is frozen (``critic.frozen``: no value loss, no critic gradients, no critic
optimizer state) and the rewards are KL-only (``algo.sequence_reward: false``, no compute difference).

Each method runs in its own child process (this script with ``--child``), one after the other, so each
peak is its own.
Memory: resident set size (RSS), not tracemalloc (torch's CPU allocator is invisible to tracemalloc).
Reported: the process peak (``VmHWM`` from /proc/self/status on Linux, else ``getrusage`` ru_maxrss) and
the delta ``peak − RSS after imports``, i.e. what building the models and training added. Time: the
median over the timed steps (after ``--warmup`` untimed ones) of the loop's own per-step phase timings
(``time/generate`` + ``time/score`` + ``time/update`` in metrics.jsonl). The paper (DVPO, arXiv:2502.16944)
reports −40% GPU memory and −35% time versus PPO on 7B-class models; at tiny CPU scale the fixed cost of
the Python/torch process dominates the peak, so the delta is the comparable number.

Example: ``python benchmarks/dvpo_vs_ppo.py --threads 1`` (``--json`` for machine-readable output).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

METHODS = ("ppo", "dvpo")
KEYS = ("peak_rss_mb", "rss_delta_mb", "seconds_per_step", "generate_seconds", "score_seconds", "update_seconds")


def rss_mb(field: str = "VmHWM") -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process in MB; getrusage's peak where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def overrides(args: argparse.Namespace, method: str, out: str, critic_dir: str) -> list[str]:
    """The config of one method: everything shared, then DVPO's two differences."""
    common = [
        "progress=false", f"threads={args.threads}", "seed=0", f"steps={args.warmup + args.steps}",
        "save_every=0", "eval.every=0", "eval.size=2", "eval.samples=0", f"output_dir={out}",
        f"model.tiny.hidden_size={args.hidden_size}", f"model.tiny.num_layers={args.layers}",
        f"model.tiny.num_heads={max(1, args.hidden_size // 32)}",
        f"model.tiny.intermediate_size={4 * args.hidden_size}",
        f"model.tiny.max_position_embeddings={args.max_new_tokens + 32}",
        "task.name=arithmetic", "task.train_size=512", "task.test_size=2",
        f"rollout.prompts_per_step={args.prompts}", f"rollout.samples_per_prompt={args.samples}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        "algo.advantage=gae", "algo.kl_coef=0.05", "algo.kl_estimator=k1", "algo.kl_in_reward=true",
        "optim.lr=1e-5", "critic.lr=1e-5", f"critic.path={critic_dir}",
    ]
    return common + (["critic.frozen=true", "algo.sequence_reward=false"] if method == "dvpo" else [])


def run_method(method: str, args: argparse.Namespace, critic_dir: str) -> dict[str, float]:
    """Child process: train ``warmup + steps`` steps of ``method``; its memory and per-step times."""
    _quiet()
    from llmrl.config import load_config
    from llmrl.rl.loop import train
    from llmrl.train.metrics import read_metrics

    start_rss = rss_mb("VmRSS")  # after the imports: the delta is what building and training added
    with tempfile.TemporaryDirectory() as out:
        train(load_config(None, overrides(args, method, out, critic_dir)))
        peak = rss_mb("VmHWM")
        rows = read_metrics(Path(out) / "metrics.jsonl", "train")[args.warmup :]
    med = {k: statistics.median(r[f"time/{k}"] for r in rows) for k in ("generate", "score", "update")}
    return {"peak_rss_mb": peak, "rss_delta_mb": peak - start_rss,
            "seconds_per_step": statistics.median(sum(r[f"time/{k}"] for k in med) for r in rows),
            **{f"{k}_seconds": v for k, v in med.items()}, "timed_steps": float(len(rows)),
            "mean_length": statistics.mean(r["length"] for r in rows)}


def _quiet() -> None:
    import warnings

    from transformers.utils import logging

    warnings.filterwarnings("ignore")
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def write_value_model(args: argparse.Namespace, path: str) -> None:
    """The initial value model both methods load: a value head on a copy of the seed-0 policy."""
    from llmrl.models.tiny import TinyModelSpec, build_tiny_model
    from llmrl.models.value_head import scalar_model_from_policy

    spec = TinyModelSpec(hidden_size=args.hidden_size, num_layers=args.layers,
                         num_heads=max(1, args.hidden_size // 32), num_kv_heads=max(1, args.hidden_size // 32),
                         intermediate_size=4 * args.hidden_size, max_position_embeddings=args.max_new_tokens + 32)
    policy, tok = build_tiny_model(spec, seed=0)
    scalar_model_from_policy(policy, seed=1).save(path, tok)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed RL steps per method")
    ap.add_argument("--warmup", type=int, default=1, help="untimed RL steps first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)  # internal: run one method, print JSON
    ap.add_argument("--critic-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    if args.child:
        out = run_method(args.child, args, args.critic_dir)
        print(json.dumps(out))
        return out
    _quiet()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        critic_dir = str(Path(tmp) / "value_model")
        write_value_model(args, critic_dir)
        for method in METHODS:  # one child at a time: each has the machine and its own peak
            results[method] = run_child(method, args, critic_dir)
    p, d = results["ppo"], results["dvpo"]
    results["ratio"] = {k: d[k] / p[k] for k in KEYS if p[k] > 0}
    results["config"] = {k: getattr(args, k) for k in ("hidden_size", "layers", "prompts", "samples", "max_new_tokens",
                                                         "steps", "warmup", "threads")}
    print(json.dumps(results, indent=2) if args.json else table(results))
    return results


def run_child(method: str, args: argparse.Namespace, critic_dir: str) -> dict[str, float]:
    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("hidden_size", "layers", "prompts", "samples",
                                                                    "max_new_tokens", "steps", "warmup", "threads")]
    proc = subprocess.run([sys.executable, __file__, *flags, f"--child={method}", f"--critic-dir={critic_dir}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(r: dict[str, Any]) -> str:
    c = r["config"]
    head = (f"DVPO vs PPO: tiny Llama hidden {c['hidden_size']} x {c['layers']} layers, {c['prompts']}x{c['samples']} "
            f"samples x {c['max_new_tokens']} new tokens, median of {c['steps']} steps after {c['warmup']} warm-up, "
            f"{c['threads']} thread(s)")
    cols = [("peak RSS MB", "peak_rss_mb", "{:10.1f}"), ("RSS delta MB", "rss_delta_mb", "{:10.1f}"),
            ("s/step", "seconds_per_step", "{:10.3f}"), ("generate s", "generate_seconds", "{:10.3f}"),
            ("score s", "score_seconds", "{:10.3f}"), ("update s", "update_seconds", "{:10.3f}")]
    lines = [head, f"{'':12s}" + "".join(f"{name:>14s}" for name, _, _ in cols)]
    for m in METHODS:
        lines.append(f"{m.upper():12s}" + "".join(f"{fmt.format(r[m][k]):>14s}" for _, k, fmt in cols))
    ratio = r["ratio"]
    lines.append(f"{'DVPO/PPO':12s}" + "".join(f"{ratio[k]:14.3f}" if k in ratio else f"{'-':>14s}"
                                               for _, k, _ in cols))
    lines.append(f"change: RSS delta {100 * (ratio.get('rss_delta_mb', float('nan')) - 1):+.0f}%, "
                 f"time per step {100 * (ratio['seconds_per_step'] - 1):+.0f}% (paper: -40% memory, -35% time)")
    lines.append("memory = resident set size (VmHWM); delta = peak minus RSS after imports, each method in its own "
                 "process")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
