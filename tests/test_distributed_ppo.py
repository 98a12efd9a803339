"""PPO under torchrun (gloo, real processes, float64): the critic (a value model sharded by FSDP2 like the
policy), GAE's batch whitening over every rank, DAPO dynamic sampling across the ranks, a length penalty and
running-statistics reward shaping. 2 ranks x 4 sequences equal 1 rank x 8 (policy AND critic), and a sharded
checkpoint resumes the critic (weights and AdamW states) on another world size. One pair of runs for all
of it (CI time); docs/scaling.md has the numbers of the critic alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from llmrl.models.tiny import TinyModelSpec, save_tiny_model
from tests.test_distributed import max_diff, run, torchrun, weights

RECIPE = """seed: 3
task:
  name: hackable
  options: {base: arithmetic, exploit: length, bonus: 0.25, cap: 8}
algo:
  advantage: gae
  advantage_options: {gamma: 1.0, lam: 0.95, whiten: true}
  loss: ppo_clip
  loss_agg: token-mean
  kl_coef: 0.04
  kl_in_reward: true
  epochs: 2
  length_penalty: {threshold: 4, coef: 0.1}  # per episode
  shaping: meanstd  # running mean / std of every rank's scores
critic: {lr: 1.0e-3, value_clip: 0.2, vf_coef: 1.0}
"""
# 3 steps of 2 prompt groups x 4 samples; dynamic sampling drops a group with equal rewards at step 2 and
# samples a second round (groups_dropped / sampling_rounds below): that path is exercised, not only allowed
ARGS = [
    "model.dtype=float64", "steps=3", "save_every=1", "progress=false", "threads=1", "task.train_size=64",
    "task.test_size=8", "eval.samples=2", "eval.pass_k=[2]", "eval.every=0", "rollout.prompts_per_step=2",
    "rollout.samples_per_prompt=4", "rollout.max_new_tokens=6", "optim.lr=1e-3", "rollout.dynamic_sampling=true",
]

DVPO_RECIPE = """trainer: dvpo
seed: 3
task:
  name: arithmetic
  options: {digits: 1, ops: ["+"], style: plain}
gvm: {num_pairs: 32, eval_pairs: 8, steps: 4, batch_size: 8, lr: 1.0e-3, max_length: 16, max_prompt_length: 8}
algo:
  advantage: gae
  advantage_options: {gamma: 1.0, lam: 0.95, whiten: true}
  loss: ppo_clip
  sequence_reward: false
  kl_in_reward: true
  kl_coef: 0.2
  kl_target: 0.1
critic: {frozen: true}
"""


def critic_weights(out: Path) -> dict:
    """The saved value model: backbone and scalar head together."""
    head = load_file(str(out / "critic_model" / "scalar_head.safetensors"))
    return {**weights(out, "critic_model"), **{f"head.{k}": v for k, v in head.items()}}


def train_rows(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


@pytest.fixture(scope="module")
def ppo_runs(tmp_path_factory):
    """The tiny float64 model, and the uninterrupted PPO runs on 1 rank (8 sequences) and 2 ranks (4 + 4)."""
    root = tmp_path_factory.mktemp("dist_ppo")
    (root / "recipe.yaml").write_text(RECIPE)
    model = save_tiny_model(root / "model", TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                                          intermediate_size=64, max_position_embeddings=64))
    for n in (1, 2):
        run(torchrun(n, root / f"ranks{n}", model, args=ARGS))
    return root, model


def test_ppo_two_ranks_equal_one_rank(ppo_runs):
    root, model = ppo_runs
    one, two = root / "ranks1", root / "ranks2"
    assert max_diff(weights(one), weights(two)) <= 1e-6  # the policy after 3 PPO steps
    assert max_diff(critic_weights(one), critic_weights(two)) <= 1e-6  # the critic
    start = load_file(str(model / "model.safetensors"))  # the critic starts as a copy of the policy's backbone
    moved = max(float((critic_weights(two)[k] - start[f"model.{k}"]).abs().max()) for k in weights(two, "critic_model"))
    assert moved > 1e-4, moved  # it trained
    rows = [train_rows(one), train_rows(two)]
    assert [(r["groups_dropped"], r["sampling_rounds"]) for r in rows[1]] == [
        (r["groups_dropped"], r["sampling_rounds"]) for r in rows[0]]
    assert sum(r["groups_dropped"] for r in rows[1]) >= 1 and max(r["sampling_rounds"] for r in rows[1]) == 2
    assert all(r["groups_kept"] == 2 for r in rows[1])
    for a, b in zip(*rows, strict=True):  # reduced over the ranks: the one-rank values (token means such as
        for key in ("reward", "loss", "grad_norm", "critic/vf_loss", "critic/grad_norm"):  # value_error: not)
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), (a["step"], key, a[key], b[key])
    from llmrl.train.dist_checkpoint import SafeReader  # the critic's shards and AdamW states are in DCP

    meta = SafeReader(str(two / "checkpoints" / "step_000003" / "dcp")).read_metadata()
    keys = set(meta.state_dict_metadata)
    assert any(k.startswith("critic/model.") for k in keys) and any(k.startswith("critic/optim.") for k in keys)


def test_ppo_resume_on_another_world_size(ppo_runs, tmp_path):
    """The 2-rank run's step-2 checkpoint resumed on 1 rank (DCP reshards policy and critic): step 3 gives the
    uninterrupted run's policy and critic. A critic restarted from the policy (not restored) would not."""
    root, model = ppo_runs
    out = tmp_path / "resumed"
    shutil.copytree(root / "ranks2", out)
    for name in ("final_model", "critic_model", "summary.json"):
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    shutil.rmtree(out / "checkpoints" / "step_000003")
    (out / "checkpoints" / "latest").write_text("step_000002")
    shutil.copy(root / "recipe.yaml", tmp_path / "recipe.yaml")
    run(torchrun(1, out, model, "--resume", args=ARGS))
    assert [r["step"] for r in train_rows(out)][-1] == 3
    assert max_diff(weights(root / "ranks2"), weights(out)) <= 1e-6
    assert max_diff(critic_weights(root / "ranks2"), critic_weights(out)) <= 1e-6


@pytest.mark.slow  # three torchrun launches
def test_shared_backbone_critic_two_ranks_equal_one_rank(ppo_runs, tmp_path):
    """critic.share_backbone under torchrun: the value head (sharded like the policy) on the FSDP2 trainer's
    last hidden states, stepped with the policy by one optimizer, after a warm-up step that trains the head
    alone. 2 ranks = 1 rank for the policy and the saved critic (backbone = the policy, + head); the 2-rank
    step-2 checkpoint (trainer + head + both AdamW states in one DCP state) resumed on 1 rank gives the same."""
    root, model = ppo_runs
    shutil.copy(root / "recipe.yaml", tmp_path / "recipe.yaml")
    args = [*ARGS, "critic.share_backbone=true", "critic.warmup_steps=1"]
    for n in (1, 2):
        run(torchrun(n, tmp_path / f"shared{n}", model, args=args))
    one, two = tmp_path / "shared1", tmp_path / "shared2"
    assert max_diff(weights(one), weights(two)) <= 1e-6
    assert max_diff(critic_weights(one), critic_weights(two)) <= 1e-6
    backbone = weights(two, "critic_model")
    policy = weights(two)
    assert max(float((backbone[k] - policy[f"model.{k}"]).abs().max()) for k in backbone) == 0.0  # one backbone
    start = load_file(str(model / "model.safetensors"))
    assert max(float((policy[k] - start[k]).abs().max()) for k in policy) > 1e-4  # the policy trained
    rows = [train_rows(one), train_rows(two)]
    assert "grad_norm" not in rows[1][0] and "critic/grad_norm" in rows[1][0]  # step 1: the head alone
    for a, b in zip(*rows, strict=True):
        for key in ("reward", "critic/vf_loss"):
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), (a["step"], key, a[key], b[key])
    out = tmp_path / "resumed"
    shutil.copytree(two, out)
    for name in ("final_model", "critic_model", "summary.json"):
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    shutil.rmtree(out / "checkpoints" / "step_000003")
    (out / "checkpoints" / "latest").write_text("step_000002")
    run(torchrun(1, out, model, "--resume", args=args))
    assert max_diff(weights(two), weights(out)) <= 1e-6
    assert max_diff(critic_weights(two), critic_weights(out)) <= 1e-6


@pytest.mark.slow  # two torchrun launches
def test_dvpo_two_ranks_equal_one_rank(ppo_runs, tmp_path):
    """trainer dvpo under torchrun, both phases: the global value model trained data-parallel (each rank its
    share of every batch of pairs, the loss over the whole batch's tokens; rank 0 writes it), then PPO against
    it frozen (replicated on every rank), KL-only rewards: 2 ranks = 1 rank for the value model and the policy."""
    root, model = ppo_runs
    (tmp_path / "dvpo.yaml").write_text(DVPO_RECIPE)
    args = ["model.dtype=float64", "progress=false", "threads=1", "task.train_size=64", "task.test_size=8",
            "steps=3", "eval.samples=2", "eval.pass_k=[2]", "eval.every=0", "rollout.prompts_per_step=2",
            "rollout.samples_per_prompt=4", "rollout.max_new_tokens=6", "optim.lr=1e-3", "save_every=0"]
    for n in (1, 2):
        run(torchrun(n, tmp_path / f"dvpo{n}", model, recipe="dvpo.yaml", args=args))
    one, two = tmp_path / "dvpo1", tmp_path / "dvpo2"
    values = [{**weights(o, "value_model"), **load_file(str(o / "value_model" / "scalar_head.safetensors"))}
              for o in (one, two)]
    assert max_diff(*values) <= 1e-6  # the global value model
    start = load_file(str(model / "model.safetensors"))
    assert max(float((values[1][k] - start[f"model.{k}"]).abs().max()) for k in values[1] if f"model.{k}" in start) > 1e-4
    assert max_diff(weights(one), weights(two)) <= 1e-6  # the policy
    assert max(float((weights(two)[k] - start[k]).abs().max()) for k in start) > 1e-4  # the policy trained
    rows = [train_rows(one), train_rows(two)]
    for a, b in zip(*rows, strict=True):
        for key in ("loss", "grad_norm", "kl_coef", "critic/value_old", "critic/explained_variance"):
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), (a["step"], key, a[key], b[key])
    summaries = [json.loads((o / "summary.json").read_text()) for o in (one, two)]
    assert summaries[0]["gvm_loss_last"] == pytest.approx(summaries[1]["gvm_loss_last"], rel=1e-6)  # float32 values


def test_whole_batch_whitening_is_the_whole_batch_s():
    """In-process: inside ``whole_batch`` one share [1, 2] of the batch [1, 2, 3, 4] is whitened with the whole
    batch's mean 2.5 and unbiased std sqrt(5/3) (the other share's sums come from the stand-in all-reduce)."""
    import torch

    from llmrl.core.ops import batch_moments, masked_whiten, whole_batch

    calls: list[torch.Tensor] = []

    def other_share(t: torch.Tensor) -> torch.Tensor:  # + the share [3, 4]: (sum, count), then squares about 2.5
        calls.append(t)
        return t + (torch.tensor([7.0, 2.0]) if len(calls) == 1 else torch.tensor([0.5**2 + 1.5**2]))

    x, mask = torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1.0, 1.0, 0.0]])  # 9: masked out
    with whole_batch(other_share):
        got = masked_whiten(x, mask)
    std = (5 / 3) ** 0.5
    assert torch.allclose(got, torch.tensor([[-1.5 / std, -0.5 / std, 0.0]]), atol=1e-6)
    assert len(calls) == 2
    assert torch.allclose(masked_whiten(x, mask), torch.tensor([[-(0.5**0.5), 0.5**0.5, 0.0]]), atol=1e-6)  # alone
    calls.clear()
    with whole_batch(other_share):  # the critic's logged token means / explained variance: the same moments
        mean, var = batch_moments(x, mask)
    assert float(mean) == pytest.approx(2.5) and float(var) == pytest.approx(5 / 3) and len(calls) == 2
    assert [float(t) for t in batch_moments(x, mask)] == pytest.approx([1.5, 0.5])  # alone
