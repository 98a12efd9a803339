"""Data-parallel RL under torchrun (gloo, real processes): N ranks × B/N sequences == 1 rank × B, float64;
SIGKILL of one rank then ``--resume`` gives the uninterrupted run's weights, on the same or another world size."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from llmrl.models.tiny import TinyModelSpec, save_tiny_model

RECIPE = """seed: 3
task:
  name: hackable
  options: {base: arithmetic, exploit: length, bonus: 0.25, cap: 8}
"""
# rewards vary even for an untrained model (the length bonus): non-zero advantages from step 1
ARGS = [
    "model.dtype=float64", "steps=3", "save_every=1", "progress=false", "threads=1", "task.train_size=64",
    "task.test_size=8", "eval.samples=2", "eval.pass_k=[2]", "eval.every=0", "rollout.prompts_per_step=2",
    "rollout.samples_per_prompt=4", "rollout.max_new_tokens=6", "algo.kl_coef=0.04", "optim.lr=1e-3",
    "sft.steps=2", "sft.batch_size=8", "sft.num_examples=32",  # an SFT warm start: data-parallel too
]
DPO_ARGS = ["model.dtype=float64", "steps=2", "progress=false", "threads=1", "task.train_size=64",
            "task.test_size=8", "eval.samples=2", "eval.pass_k=[2]", "eval.every=0", "optim.lr=1e-3"]
DPO_RECIPE = """trainer: dpo
seed: 3
task:
  name: arithmetic
  options: {digits: 2, ops: ["+"], style: plain}
pref: {loss_type: sigmoid, beta: 0.1, batch_size: 8, max_length: 16, max_prompt_length: 8, pairs_from_task: 64,
       eval_pairs: 8}
"""
ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, out: Path, model: Path, *extra: str, recipe: str = "recipe.yaml",
             args: list[str] = ARGS) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "llmrl",
            "train", str(out.parent / recipe), *args, f"model.path={model}", f"output_dir={out}", *extra]


def run(cmd: list[str]) -> None:
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]


def weights(out: Path, which: str = "final_model") -> dict:
    return load_file(str(out / which / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny float64 model, and the uninterrupted runs on 1 rank (8 sequences) and 2 ranks (4 + 4)."""
    root = tmp_path_factory.mktemp("dist")
    (root / "recipe.yaml").write_text(RECIPE)
    (root / "dpo.yaml").write_text(DPO_RECIPE)
    model = save_tiny_model(root / "model", TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                                          intermediate_size=64, max_position_embeddings=64))
    for n in (1, 2):
        run(torchrun(n, root / f"ranks{n}", model))
    return root, model


def test_two_ranks_equal_one_rank(runs):
    root, _ = runs
    assert max_diff(weights(root / "ranks1", "sft_model"), weights(root / "ranks2", "sft_model")) <= 1e-6  # SFT
    assert max_diff(weights(root / "ranks1"), weights(root / "ranks2")) <= 1e-6  # + 3 RL steps
    rows = [[json.loads(x) for x in (root / f"ranks{n}" / "metrics.jsonl").read_text().splitlines()] for n in (1, 2)]
    train = [[r for r in rs if r["kind"] == "train"] for rs in rows]
    assert [r["step"] for r in train[1]] == [1, 2, 3]
    for a, b in zip(*train, strict=True):  # metrics reduced over the ranks: the one-rank values
        for key in ("reward", "accuracy", "loss", "grad_norm", "kl"):
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), (a["step"], key, a[key], b[key])
    out = root / "ranks2"  # rank 0 alone wrote the outputs; checkpoints are sharded (one DCP file per rank)
    assert {p.name for p in out.iterdir()} >= {"metrics.jsonl", "summary.json", "final_model", "checkpoints"}
    ckpt = out / "checkpoints" / "step_000003"
    assert sorted(p.name for p in (ckpt / "dcp").iterdir() if p.suffix == ".distcp") == ["__0_0.distcp", "__1_0.distcp"]
    assert not (ckpt / "model.safetensors").exists()


def _rank_pids(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (the torchrun agent's workers)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(d.name))
    return sorted(pids)


def test_sigkill_one_rank_then_resume(runs, tmp_path):
    root, model = runs
    out = root / "killed"
    proc = subprocess.Popen(torchrun(2, out, model), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline:
        if latest.is_file() and latest.read_text().strip() in ("step_000001", "step_000002"):
            break
        assert proc.poll() is None, "the run ended before its first checkpoint was seen"
        time.sleep(0.002)
    ranks = _rank_pids(proc.pid)
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGKILL)  # one rank dies; torchrun stops the other and fails
    assert proc.wait(timeout=120) != 0
    killed_at = latest.read_text().strip()
    assert killed_at != "step_000003" and not (out / "final_model").exists(), killed_at
    other = tmp_path / "other_world"
    shutil.copytree(out, other)
    shutil.copy(root / "recipe.yaml", tmp_path / "recipe.yaml")
    # resume on the same world size, through the `llmrl train --nproc N` shortcut
    cmd = torchrun(2, out, model, "--resume")
    run([sys.executable, "-m", "llmrl", "train", "--nproc", "2", *cmd[cmd.index("train") + 1 :]])
    assert max_diff(weights(root / "ranks2"), weights(out)) <= 1e-6, killed_at
    # the same checkpoint resumed on 1 rank: DCP reshards it; sampling does not depend on the world size
    run(torchrun(1, other, model, "--resume"))
    assert max_diff(weights(root / "ranks2"), weights(other)) <= 1e-6, killed_at


def test_sharded_checkpoint_refused_in_one_process(runs, tmp_path):
    root, model = runs
    out = tmp_path / "single"
    shutil.copytree(root / "ranks2", out)
    (out / "final_model").rename(out / "final_model.old")
    p = subprocess.run([sys.executable, "-m", "llmrl", "train", str(root / "recipe.yaml"), *ARGS, "steps=4",
                        f"model.path={model}", f"output_dir={out}", "--resume"], env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    msg = p.stderr.strip().splitlines()[-1]
    assert "sharded checkpoint written by 2 torchrun ranks; resume it under torchrun" in msg, msg


def test_dpo_two_ranks_equal_one_rank(runs):
    root, model = runs
    for n in (1, 2):  # 2 DPO steps of 8 pairs: 1 rank x 8, 2 ranks x 4
        run(torchrun(n, root / f"dpo{n}", model, recipe="dpo.yaml", args=DPO_ARGS))
    assert max_diff(weights(root / "dpo1"), weights(root / "dpo2")) <= 1e-6


def test_float32_two_ranks(runs):
    """The default dtype: FSDP2's float32 gradient reduction on gloo (a plain SUM, no PREMUL_SUM)."""
    root, model = runs
    args = [a for a in ARGS if not a.startswith(("model.dtype", "sft.", "steps"))] + ["steps=1"]
    run(torchrun(2, root / "f32", model, args=args))
    assert (root / "f32" / "final_model" / "model.safetensors").is_file()


def test_prompt_seeds_sample_each_prompt_as_alone():
    """In-process: the kvcache sampler with one RNG per prompt draws, in one batch, what each prompt draws
    alone with its seed (what makes the ranks' shares world-size invariant without losing batching)."""
    from llmrl.models.tiny import build_char_tokenizer, build_tiny_model
    from llmrl.rollout.base import SamplingParams
    from llmrl.rollout.sampler import KVCacheSampler

    model, tok = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                                intermediate_size=64), build_char_tokenizer(), seed=0)
    gen = KVCacheSampler(model, tok)
    prompts = [tok(t)["input_ids"] for t in ("12+3=", "7+88=", "1=")]
    batched = gen.generate(prompts, SamplingParams(max_new_tokens=8, n=4, seed=0, prompt_seeds=[11, 22, 33]))
    for p, seed, got in zip(prompts, (11, 22, 33), batched, strict=True):
        alone = gen.generate([p], SamplingParams(max_new_tokens=8, n=4, seed=seed))[0]
        assert [g.token_ids for g in got] == [g.token_ids for g in alone]


def test_metadata_declaring_byte_stream_items_is_refused(tmp_path):
    """DCP unpickles a byte-stream item's data without restriction: a tampered ``.metadata`` declaring one is
    refused before anything is read (as is one referring to a class outside DCP's metadata)."""
    import pickle

    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata

    from llmrl.core.errors import CheckpointError
    from llmrl.train.dist_checkpoint import SafeReader

    (tmp_path / ".metadata").write_bytes(pickle.dumps(Metadata(state_dict_metadata={"model.x": BytesStorageMetadata()})))
    with pytest.raises(CheckpointError, match="byte-stream items"):
        SafeReader(str(tmp_path)).read_metadata()
    (tmp_path / ".metadata").write_bytes(pickle.dumps(Metadata(state_dict_metadata={"o": os.getcwd})))
    with pytest.raises(CheckpointError, match="may not hold"):
        SafeReader(str(tmp_path)).read_metadata()
