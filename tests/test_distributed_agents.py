"""MAPoRL discussions (``rollout.agents``, PPO with a critic and per-round turn rewards) under torchrun (gloo,
real processes, float64): 2 ranks x 2 prompts equal 1 rank x 4 prompts — every agent's answer is seeded by its
global place in the step (prompt, discussion, agent), so the discussions, their MAPoRL rewards and the updates
of policies and critics are those of the 1-rank run; with one shared policy and with separate policies (each
agent its own FSDP2 trainer, critic and optimizer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrl.models.tiny import TinyModelSpec, save_tiny_model
from tests.test_distributed import max_diff, run, torchrun, weights
from tests.test_distributed_ppo import critic_weights, train_rows

RECIPE = """seed: 3
task:
  name: arithmetic
  options: {digits: 1, ops: ["+"], style: plain}
rollout:
  agents: {count: 2, rounds: 2, gamma: 0.3, missing_reward: -1.0, shared: true, template: "|{answers}|{question}",
           answer_template: "{answer}", separator: ","}
algo:
  advantage: gae
  advantage_options: {gamma: 1.0, lam: 0.95, whiten: true}
  loss: ppo_clip
  loss_agg: token-mean
  kl_coef: 0.01
  kl_in_reward: true
critic: {lr: 1.0e-3, value_clip: 0.2, vf_coef: 1.0}
"""
ARGS = [
    "model.dtype=float64", "steps=2", "save_every=0", "progress=false", "threads=1", "task.train_size=64",
    "task.test_size=4", "eval.samples=0", "eval.pass_k=[1]", "eval.every=0", "rollout.prompts_per_step=4",
    "rollout.samples_per_prompt=2", "rollout.max_new_tokens=4", "optim.lr=1e-2",
    "sft.steps=40", "sft.batch_size=16", "sft.lr=1e-2", "sft.num_examples=64",  # answers well formed, not all right
]


def two_runs(tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """The 1-rank (4 prompts) and 2-rank (2 + 2) runs of RECIPE from the same tiny float64 model."""
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    model = save_tiny_model(tmp_path / "model", TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2,
                                                              num_kv_heads=2, intermediate_size=64,
                                                              max_position_embeddings=64))
    for n in (1, 2):
        run(torchrun(n, tmp_path / f"ranks{n}", model, *extra, args=ARGS))
    return tmp_path / "ranks1", tmp_path / "ranks2"


@pytest.mark.slow  # two torchrun launches
def test_maporl_two_ranks_equal_one_rank(tmp_path):
    one, two = two_runs(tmp_path)
    assert max_diff(weights(one), weights(two)) <= 1e-6  # the shared policy after 2 steps
    assert max_diff(critic_weights(one), critic_weights(two)) <= 1e-6
    rows = [train_rows(one), train_rows(two)]
    assert len(rows[1]) == 2
    for a, b in zip(*rows, strict=True):  # reduced over the ranks: the 1-rank values
        for key in ("reward", "agents/reward_round0", "agents/reward_round1", "agents/accuracy_round1", "loss",
                    "grad_norm", "critic/vf_loss"):
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), (a["step"], key, a[key], b[key])
    assert len({r["reward"] for r in rows[0]} | {r["agents/reward_round1"] for r in rows[0]}) > 1  # not constant


@pytest.mark.slow  # two torchrun launches
def test_separate_policies_two_ranks_equal_one_rank(tmp_path):
    one, two = two_runs(tmp_path, "rollout.agents.shared=false")
    finals = [[weights(out, f"final_model_agent{a}") for a in (0, 1)] for out in (one, two)]
    assert max(max_diff(x, y) for x, y in zip(*finals, strict=True)) <= 1e-6  # each agent's policy
    assert max_diff(*finals[1]) > 1e-4  # two policies that trained apart
    rows = [train_rows(one), train_rows(two)]
    assert len(rows[1]) == 2
    for a, b in zip(*rows, strict=True):
        for key in ("agents/reward_round0", "agents/reward_round1", "agent0/loss", "agent1/loss", "agent0/grad_norm",
                    "agent1/grad_norm", "agent0/critic/vf_loss", "agent1/kl_coef"):
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), (a["step"], key, a[key], b[key])
    assert (one / "summary.json").is_file() and (two / "summary.json").is_file()
