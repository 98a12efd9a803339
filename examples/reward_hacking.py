#!/usr/bin/env python
"""Reward hacking at tiny scale: vanilla PPO vs PAR-shaped PPO on an exploitable proxy reward
(PAR: Fu et al., 2025, arXiv:2502.18770).

The setup (all on a CPU, no network):

* Task: the quickstart's 2-digit addition (``"23+45="`` → ``"68"``), wrapped by the ``hackable`` task:
  the policy is trained on a PROXY reward = the true reward (1 if correct, −0.1 if malformed) + ``bonus``
  per non-whitespace character up to ``cap`` characters, a reward model that spuriously likes long
  answers. With the defaults (bonus 0.25, cap 8) a wrong 8-character answer earns 2.0, more than the
  correct ``"68"`` (1.5). The accuracy logged on rollouts and on held-out prompts is the TRUE verifier's.
* Warm start: the quickstart's SFT on a sloppy teacher (half of the demonstrations drop the carry); a
  ``ramble`` fraction of those sloppy answers is written 2-3 times in a row (``"73"`` → ``"7373"``), so the
  SFT policy sometimes writes long answers: the exploit is reachable. One SFT model per seed, shared by
  every method.
* RL: PPO with a critic (``algo.advantage=gae``, γ = 1, λ = 0.95, whitened advantages, clipped value loss)
  and PAR's per-token KL penalty in the reward (β = ``--kl-coef``), from the same SFT model, once per method:
  ``vanilla`` trains on the raw proxy; ``par`` on PAR's shaped proxy (1/M) Σ_m σ(k·(r − r_ref,m)) with M
  reference rewards per prompt sampled from the SFT policy. Other shaper names (centered, lsc, meanstd,
  clip, minmax) work too. Everything else is identical.

Outputs in ``--output-dir``: ``reward_hacking.png`` (proxy reward vs step; true accuracy on rollouts and on
held-out prompts vs step), ``results.json`` and ``results.md`` (the numbers), and one run directory per
(seed, method) with its ``metrics.jsonl``. Plotting needs matplotlib (``pip install llmrl[plot]``).

    python examples/reward_hacking.py --steps 60 --seeds 0 1 2 --output-dir runs/reward_hacking --threads 1

``--override KEY=VALUE`` (repeatable) applies a dotted config override to the SFT and every RL run
(e.g. ``--override rollout.temperature=1.2``). The SFT warm start is reused when
``<output-dir>/seed<S>/sft/sft_model`` exists (``--fresh-sft`` redoes it); with ``--reuse``, a finished run
whose saved config equals the one it would run is read back instead of trained again (add seeds to a
sweep without redoing the others).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

# The curves every run contributes: (label in results.json, metrics.jsonl key, record kind).
TRAIN_CURVES = {"proxy_reward": "reward", "rollout_accuracy": "accuracy", "exploit_reward": "reward/exploit",
                "length": "length", "shaped_reward": "reward/shaped", "kl": "kl"}
EVAL_CURVES = {"eval_accuracy": "accuracy", "eval_proxy_reward": "reward", "eval_length": "length"}
WINDOW = 5  # steps averaged for the "first" / "last" numbers of the rollout curves
COLLAPSED = 0.05  # "collapse step": the first step whose rollout accuracy is at most this


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="RL steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (one SFT model and one run per method each)")
    p.add_argument("--output-dir", default="runs/reward_hacking", help="where runs, the PNG and the tables go")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--methods", nargs="+", default=["vanilla", "par"],
                   help="reward shapers to compare (vanilla = the raw proxy; par, centered, lsc, meanstd, ...)")
    p.add_argument("--advantage", default="gae", help="advantage estimator (gae = PPO with a critic)")
    p.add_argument("--bonus", type=float, default=0.25, help="proxy: reward per non-whitespace character")
    p.add_argument("--cap", type=int, default=8, help="proxy: characters that count at most")
    p.add_argument("--ramble", type=float, default=0.2, help="fraction of the sloppy SFT answers written 2-3 times")
    p.add_argument("--max-new-tokens", type=int, default=10, help="longest completion")
    p.add_argument("--sft-steps", type=int, default=2000, help="SFT warm-start steps (the quickstart's 2000)")
    p.add_argument("--lr", type=float, default=2e-4, help="policy learning rate")
    p.add_argument("--critic-lr", type=float, default=1e-3, help="critic learning rate")
    p.add_argument("--kl-coef", type=float, default=0.005, help="per-token KL penalty in the reward (PAR: 0.005)")
    p.add_argument("--par-k", type=float, default=1.0, help="PAR's sigmoid slope k")
    p.add_argument("--reference-samples", type=int, default=4, help="PAR: SFT reference responses per prompt")
    p.add_argument("--prompts-per-step", type=int, default=64, help="prompts per RL step")
    p.add_argument("--samples-per-prompt", type=int, default=4, help="completions per prompt")
    p.add_argument("--eval-every", type=int, default=10, help="held-out greedy evaluation every N steps")
    p.add_argument("--fresh-sft", action="store_true", help="redo the SFT warm start even if it exists")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override for the SFT and every run (repeatable)")
    p.add_argument("--reuse", action="store_true", help="read back finished runs with an identical config")
    p.add_argument("--no-plot", action="store_true", help="write the tables only (no matplotlib needed)")
    args = p.parse_args(argv)
    from llmrl.rewards.shaping import SHAPERS

    for m in args.methods:
        if m not in SHAPERS:
            p.error(f"--methods: unknown shaper {m!r}; valid: {', '.join(SHAPERS.names())}")
    if len(set(args.methods)) != len(args.methods):
        p.error("--methods: each method once")
    if args.steps < 1 or args.sft_steps < 1:
        p.error("--steps and --sft-steps must be >= 1")
    return args


# ------------------------------------------------------------------------------------------------ configs
def task_overrides(args: argparse.Namespace) -> list[str]:
    options = {"base": "arithmetic", "base_options": {"digits": 2, "ops": ["+"], "style": "plain"},
               "exploit": "length", "bonus": args.bonus, "cap": args.cap, "ramble": args.ramble}
    return ["task.name=hackable", f"task.options={json.dumps(options)}", f"threads={args.threads}",
            "progress=false", f"rollout.max_new_tokens={args.max_new_tokens}"]


def sft_config(args: argparse.Namespace, seed: int) -> Any:
    from llmrl.cli.quickstart import quickstart_config

    out = Path(args.output_dir) / f"seed{seed}" / "sft"
    return quickstart_config(str(out), seed, [*task_overrides(args), "steps=0", f"sft.steps={args.sft_steps}",
                                              *args.override])


def rl_config(args: argparse.Namespace, seed: int, method: str, sft_model: Path) -> Any:
    from llmrl.cli.quickstart import quickstart_config

    out = Path(args.output_dir) / f"seed{seed}" / method
    rl = [f"steps={args.steps}", "sft.steps=0", f"model.path={sft_model}", f"algo.advantage={args.advantage}",
          f"algo.kl_coef={args.kl_coef}", "algo.kl_in_reward=true", "algo.epochs=2", "algo.minibatches=2",
          f"optim.lr={args.lr}", f"critic.lr={args.critic_lr}",
          f"algo.shaping={'null' if method == 'vanilla' else method}",  # vanilla: the raw proxy, no shaper at all
          f"rollout.prompts_per_step={args.prompts_per_step}", f"rollout.samples_per_prompt={args.samples_per_prompt}",
          f"eval.every={args.eval_every}", "eval.samples=0", "eval.pass_k=[]", "log_every=5"]
    if method == "par":
        rl.append(f"algo.shaping_options={{k: {args.par_k}}}")
    if method in ("par", "centered", "lsc"):
        rl.append(f"algo.reference_samples={args.reference_samples}")
    return quickstart_config(str(out), seed, [*task_overrides(args), *rl, *args.override])


def warm_start(args: argparse.Namespace, seed: int) -> Path:
    """The SFT model of ``seed`` (trained once; every method starts from it)."""
    from llmrl.train.run import build_run

    cfg = sft_config(args, seed)
    path = Path(cfg.output_dir) / "sft_model"
    if (path / "config.json").is_file() and not args.fresh_sft:
        print(f"seed {seed}: reusing the SFT warm start in {path}", flush=True)
        return path
    t = time.time()
    build_run(cfg, resume=False)  # SFT on the sloppy (and rambling) demonstrations, saved to sft_model/
    print(f"seed {seed}: SFT warm start ({cfg.sft.steps} steps) in {time.time() - t:.0f}s -> {path}", flush=True)
    gc.collect()
    return path


def finished(cfg: Any) -> bool:
    """True when ``cfg.output_dir`` holds a finished run (summary.json) of exactly this config."""
    import yaml

    from llmrl.core.config import to_dict

    out = Path(cfg.output_dir)
    if not (out / "summary.json").is_file() or not (out / "config.yaml").is_file():
        return False
    return yaml.safe_load((out / "config.yaml").read_text()) == yaml.safe_load(yaml.safe_dump(to_dict(cfg)))


# ------------------------------------------------------------------------------------------------ results
def read_curves(run_dir: Path) -> dict[str, Any]:
    """The run's curves from its metrics.jsonl: train curves per step, eval curves per eval step."""
    from llmrl.train.metrics import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    out: dict[str, Any] = {"step": [r["step"] for r in train], "eval_step": [r["step"] for r in evals]}
    for name, key in TRAIN_CURVES.items():
        if any(key in r for r in train):
            out[name] = [_num(r.get(key)) for r in train]
    for name, key in EVAL_CURVES.items():
        out[name] = [_num(r.get(key)) for r in evals]
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan


def summarize(curves: dict[str, Any]) -> dict[str, float]:
    """First / last numbers of one run: rollout curves averaged over the first and last WINDOW steps;
    held-out numbers at step 0 (the SFT model) and at the end."""
    w = min(WINDOW, len(curves["step"]))
    out: dict[str, float] = {}
    for name in ("proxy_reward", "rollout_accuracy", "exploit_reward", "length"):
        if name in curves:
            out[f"{name}_first"], out[f"{name}_last"] = _mean(curves[name][:w]), _mean(curves[name][-w:])
    for name in EVAL_CURVES:
        out[f"{name}_start"], out[f"{name}_end"] = curves[name][0], curves[name][-1]
    low = [st for st, acc in zip(curves["step"], curves["rollout_accuracy"]) if acc <= COLLAPSED]
    out["collapse_step"] = float(low[0]) if low else math.nan  # NaN: never collapsed
    return out


def aggregate(per_seed: dict[int, dict[str, float]]) -> dict[str, float]:
    keys = next(iter(per_seed.values())).keys()
    return {k: _mean([s[k] for s in per_seed.values()]) for k in keys}


def _step(v: float, fmt: str) -> str:
    return "never" if math.isnan(v) else format(v, fmt)


def _jsonable(x: Any) -> Any:
    """NaN / inf → None (strict JSON), recursively."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_tables(results: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=2))
    cols = [("proxy reward (rollouts)", "proxy_reward"), ("accuracy (rollouts)", "rollout_accuracy"),
            ("mean length (tokens incl. EOS)", "length")]
    seeds = results["seeds"]
    lines = [f"# Reward hacking: {', '.join(results['methods'])} ({results['config']['advantage']}), "
             f"{results['config']['steps']} steps, seeds {seeds}", "",
             f"Rollout numbers: mean of the first / last {WINDOW} steps. Held-out: greedy accuracy on "
             f"{results['config']['test_size']} prompts at step 0 (the SFT model) and at the end. Collapse step: the "
             f"first step whose rollout accuracy is <= {COLLAPSED} (mean over the seeds that collapsed). "
             "Mean over seeds.", "",
             "| method | " + " | ".join(f"{c} first → last" for c, _ in cols)
             + " | held-out accuracy start → end | held-out proxy start → end | collapse step |",
             "|---|" + "---|" * (len(cols) + 3)]
    for m in results["methods"]:
        a = results["mean"][m]
        cells = [f"{a[f'{k}_first']:.3f} → {a[f'{k}_last']:.3f}" for _, k in cols]
        cells.append(f"{a['eval_accuracy_start']:.3f} → {a['eval_accuracy_end']:.3f}")
        cells.append(f"{a['eval_proxy_reward_start']:.3f} → {a['eval_proxy_reward_end']:.3f}")
        never = sum(math.isnan(v["collapse_step"]) for v in results["per_seed"][m].values())
        some = 0 < never < len(seeds)
        cells.append(_step(a["collapse_step"], ".1f") + (f" ({never} of {len(seeds)} seeds never)" if some else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if len(seeds) > 1:
        lines += ["", "Per seed (held-out accuracy end / proxy reward last / collapse step):", ""]
        for m in results["methods"]:
            per = results["per_seed"][m]
            lines.append(f"- {m}: " + ", ".join(f"seed {s}: {per[str(s)]['eval_accuracy_end']:.3f} / "
                                               f"{per[str(s)]['proxy_reward_last']:.3f} / "
                                               f"{_step(per[str(s)]['collapse_step'], '.0f')}" for s in seeds))
    (out / "results.md").write_text("\n".join(lines) + "\n")


def plot(curves: dict[str, dict[int, dict[str, Any]]], path: Path, title: str) -> None:
    """Two panels: proxy reward vs step; true accuracy (rollouts: solid, held-out greedy: dashed) vs step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_a) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (method, by_seed) in enumerate(curves.items()):
        c = colors[i % len(colors)]
        for j, cv in enumerate(by_seed.values()):
            lab = method if j == 0 else None
            ax_r.plot(cv["step"], cv["proxy_reward"], color=c, alpha=0.85, lw=1.3, label=lab)
            ax_a.plot(cv["step"], cv["rollout_accuracy"], color=c, alpha=0.85, lw=1.3,
                      label=f"{method}: rollouts" if j == 0 else None)
            ax_a.plot(cv["eval_step"], cv["eval_accuracy"], color=c, ls="--", marker="o", ms=4, alpha=0.85,
                      label=f"{method}: held-out (greedy)" if j == 0 else None)
    ax_r.set(xlabel="RL step", ylabel="proxy reward (what the policy is trained on)", title="proxy reward")
    ax_a.set(xlabel="RL step", ylabel="true task accuracy", title="true accuracy", ylim=(0, 1))
    for ax in (ax_r, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from llmrl.rl.loop import train

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in args.methods}
    per_seed: dict[str, dict[int, dict[str, float]]] = {m: {} for m in args.methods}
    test_size = 0
    for seed in args.seeds:
        sft_model = warm_start(args, seed)
        for method in args.methods:
            cfg = rl_config(args, seed, method, sft_model)
            test_size = cfg.eval.size or cfg.task.test_size
            if args.reuse and finished(cfg):
                print(f"seed {seed}: {method}: reusing the finished run in {cfg.output_dir}", flush=True)
            else:
                t = time.time()
                print(f"seed {seed}: {method} ({args.advantage}), {cfg.steps} steps -> {cfg.output_dir}", flush=True)
                train(cfg)
                print(f"seed {seed}: {method} done in {time.time() - t:.0f}s", flush=True)
            curves[method][seed] = read_curves(Path(cfg.output_dir))
            per_seed[method][seed] = summarize(curves[method][seed])
            gc.collect()
    config = {k: v for k, v in vars(args).items() if k not in ("seeds", "methods", "no_plot", "fresh_sft", "reuse")}
    config["test_size"] = test_size
    results = {"seeds": args.seeds, "methods": args.methods, "config": config,
               "mean": {m: aggregate(per_seed[m]) for m in args.methods},
               "per_seed": {m: {str(s): v for s, v in per_seed[m].items()} for m in args.methods},
               "curves": {m: {str(s): v for s, v in curves[m].items()} for m in args.methods}}
    write_tables(results, out)
    if not args.no_plot:
        title = (f"proxy = answer + {args.bonus:g}/char (cap {args.cap}); {args.advantage}, β={args.kl_coef:g}, "
                 f"PAR k={args.par_k:g}, M={args.reference_samples}; seeds {args.seeds}")
        plot(curves, out / "reward_hacking.png", title)
        print(f"plot: {out / 'reward_hacking.png'}")
    print((out / "results.md").read_text())
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
