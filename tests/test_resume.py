"""Resume equals an uninterrupted run: 6 steps vs 3 steps, SIGKILL, resume for 3 more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from llmrl.train.metrics import read_metrics

ARGS = [
    "steps=6", "save_every=1", "progress=false", "threads=1", "task.name=arithmetic",
    "model.tiny.hidden_size=32", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "model.tiny.max_position_embeddings=64",
    "task.train_size=64", "task.test_size=8", "eval.samples=2", "eval.pass_k=[2]", "eval.every=2",
    "rollout.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=6",
    "sft.steps=5", "sft.batch_size=8", "algo.kl_coef=0.04", "algo.entropy_coef=0.01", "algo.minibatches=2",
    "optim.lr=1e-3", "optim.schedule=cosine", "optim.warmup_steps=2",
]


def cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llmrl.cli.main", "train", str(out / "recipe.yaml"), *ARGS, f"output_dir={out}", *extra]


def strip_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "recipe.yaml").write_text("seed: 3\n")
    subprocess.run(cli(a), check=True, env=env, capture_output=True, timeout=300)

    proc = subprocess.Popen(cli(b), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = b / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline:
        if latest.is_file() and latest.read_text().strip() == "step_000003":
            break
        if proc.poll() is not None:
            raise AssertionError("run ended before reaching step 3")
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest.read_text().strip()
    assert killed_at == "step_000003", f"killed after {killed_at}, not after step 3"
    subprocess.run(cli(b, "--resume"), check=True, env=env, capture_output=True, timeout=300)

    wa = load_file(str(a / "final_model" / "model.safetensors"))
    wb = load_file(str(b / "final_model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() <= 1e-6, k
    ma, mb = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert [r["step"] for r in ma if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert strip_times(ma) == strip_times(mb), killed_at
