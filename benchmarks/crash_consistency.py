"""Crash consistency: SIGKILL a run at every file-system operation of its last save, resume, compare.

A tiny RL run of ``--steps`` steps (checkpoint every step) is killed just before the n-th file-system operation
(``os.replace``, ``os.fsync``, ``shutil.rmtree``, ``Path.mkdir``, ``Path.write_text``, ``torch.save``, the
safetensors writes) counted from the start of its last checkpoint through the final model and ``summary.json``,
for n = 1, 2, ... until a run finishes without reaching n. Each killed run is resumed with ``--resume``; the
table shows where it was killed, which checkpoint the resume started from, the largest parameter difference
from an uninterrupted run, and whether ``metrics.jsonl`` equals the uninterrupted run's (no lost or duplicated
rows, times aside)::

    python benchmarks/crash_consistency.py            # every point (about 25; ~20 s each on 2 CPU cores)
    python benchmarks/crash_consistency.py --points 1 5 9
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["progress=false", "threads=1", "task.name=arithmetic", "model.tiny.hidden_size=32",
        "model.tiny.num_layers=2", "model.tiny.num_heads=2", "model.tiny.intermediate_size=64",
        "model.tiny.max_position_embeddings=64", "task.train_size=64", "task.test_size=8", "eval.samples=2",
        "eval.pass_k=[2]", "eval.every=2", "rollout.prompts_per_step=4", "rollout.samples_per_prompt=4",
        "rollout.max_new_tokens=6", "sft.steps=5", "sft.batch_size=8", "algo.kl_coef=0.04", "optim.lr=1e-3",
        "save_every=1"]


def child(kill_at: int, last_step: int, argv: list[str]) -> int:
    """Run ``llmrl train argv`` in this process, SIGKILLing itself before the ``kill_at``-th counted operation
    after the save of step ``last_step`` began."""
    import torch

    from llmrl.cli.main import main
    from llmrl.train import checkpoint as ck

    state = {"on": False, "n": 0}

    def counted(name: str, fn):  # noqa: ANN001, ANN202
        def wrapper(*a, **k):  # noqa: ANN002, ANN003, ANN202
            if state["on"]:
                state["n"] += 1
                if state["n"] == kill_at:
                    print(json.dumps({"killed_before": name, "arg": str(a[0]) if a else ""}), flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return wrapper

    os.replace = counted("os.replace", os.replace)
    os.fsync = counted("os.fsync", os.fsync)
    shutil.rmtree = counted("shutil.rmtree", shutil.rmtree)
    Path.mkdir = counted("Path.mkdir", Path.mkdir)
    Path.write_text = counted("Path.write_text", Path.write_text)
    torch.save = counted("torch.save", torch.save)
    ck.st_save_model = counted("safetensors.save_model", ck.st_save_model)
    real_save = ck.save_checkpoint

    def save(ckpt_dir, step, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        state["on"] = state["on"] or step == last_step
        return real_save(ckpt_dir, step, *a, **k)

    ck.save_checkpoint = save
    import llmrl.rl.loop as loop

    loop.save_checkpoint = save
    rc = main(["train", *argv])
    print(json.dumps({"finished": True, "ops": state["n"]}), flush=True)
    return rc


def run(argv: list[str], env: dict[str, str], kill_at: int | None = None, steps: int = 4) -> str:
    cmd = [sys.executable, __file__, "--child", str(kill_at), "--steps", str(steps), "--", *argv] if kill_at else [
        sys.executable, "-m", "llmrl.cli.main", "train", *argv]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if kill_at is None and res.returncode != 0:
        raise SystemExit(f"run failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout


def params(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "final_model" / "model.safetensors"))


def rows(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.startswith("time/")} for x in lines if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--points", type=int, nargs="*", help="kill points to try (default: all)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        raise SystemExit(child(args.child, args.steps, args.rest))
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    tmp = Path(tempfile.mkdtemp(prefix="llmrl-crash-"))
    recipe = tmp / "recipe.yaml"
    recipe.write_text("seed: 3\n")
    base = [str(recipe), *TINY, f"steps={args.steps}"]
    t0 = time.time()
    ref = tmp / "uninterrupted"
    run([*base, f"output_dir={ref}"], env)
    want_p, want_rows = params(ref), rows(ref)
    print(f"uninterrupted run: {time.time() - t0:.1f} s; machine: {os.cpu_count()} CPUs")
    print(f"{'point':>5s}  {'killed before':28s} {'resumed from':14s} {'max |dparam|':>12s} {'metrics':>8s}")
    n, worst, bad = 0, 0.0, 0
    points = iter(args.points) if args.points else None
    while True:
        n = next(points, None) if points is not None else n + 1
        if n is None:
            break
        out = tmp / f"kill{n}"
        info = run([*base, f"output_dir={out}"], env, kill_at=n, steps=args.steps).strip().splitlines()
        marks = [json.loads(x) for x in info if x.startswith('{"killed_before"') or x.startswith('{"finished"')]
        first = marks[0] if marks else {}
        if first.get("finished"):
            print(f"(point {n}: the run finished after {first['ops']} operations: every point tried)")
            break
        latest = out / "checkpoints" / "latest"
        start = latest.read_text().strip() if latest.is_file() else "-"
        run([*base, f"output_dir={out}", "--resume"], env)
        got_p = params(out)
        diff = max(float((want_p[k] - got_p[k]).abs().max()) for k in want_p)
        same = rows(out) == want_rows
        worst, bad = max(worst, diff), bad + (not same or diff > 1e-6)
        what = f"{first.get('killed_before', '?')} {Path(first.get('arg', '')).name}"[:28]
        print(f"{n:5d}  {what:28s} {start:14s} {diff:12.2e} {'equal' if same else 'DIFFER':>8s}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    print(f"worst max |dparam| {worst:.2e}; runs differing: {bad}; total {time.time() - t0:.0f} s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
