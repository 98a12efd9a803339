"""DVPO: the global value model's loss by hand, its training on preference pairs, the frozen critic in PPO."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from llmrl.cli.main import main
from llmrl.config import load_config
from llmrl.models import build_tiny_model
from llmrl.models.tiny import TinyModelSpec
from llmrl.models.value_head import scalar_model_from_policy
from llmrl.rl.critic import Critic
from llmrl.rl.dvpo import gvm_loss, last_values, train_value_model
from llmrl.tasks.preference import PreferencePair, write_preference_pairs
from llmrl.train.metrics import read_metrics
from llmrl.train.pairs import encode_pairs

SPEC = TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64,
                     max_position_embeddings=64)


class FixedValues(nn.Module):
    """A stand-in value model returning fixed values [b, L] (as a parameter, to check the gradient)."""

    def __init__(self, values: list[list[float]]) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.tensor(values, dtype=torch.float64))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.v


def test_gvm_loss_hand_values() -> None:
    # row 0 (chosen, +1): response at positions 1, 2; row 1 (rejected, −1): response at position 1 only
    model = FixedValues([[0.3, 0.2, 0.5, 7.0], [0.1, -0.4, 0.9, 7.0]])  # last column: after the end, unused
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]], dtype=torch.float64)
    loss, _ = gvm_loss(model, torch.zeros(2, 4, dtype=torch.long), mask, torch.tensor([1.0, -1.0]), 1.0, 0.95)
    # row 0: δ2 = 1 − 0.5 = 0.5, A2 = 0.5, R2 = 1.0; δ1 = 0.5 − 0.2 = 0.3, A1 = 0.3 + 0.95·0.5 = 0.775, R1 = 0.975
    # row 1: δ1 = −1 + 0.4 = −0.6, R1 = −1.0
    sq = [(0.2 - 0.975) ** 2, (0.5 - 1.0) ** 2, (-0.4 + 1.0) ** 2]
    assert loss.item() == pytest.approx(0.5 * sum(sq) / 3)
    loss.backward()
    want = torch.zeros(2, 4, dtype=torch.float64)  # targets are constants: ∂/∂V = (V − R)/3
    want[0, 1], want[0, 2], want[1, 1] = (0.2 - 0.975) / 3, (0.5 - 1.0) / 3, (-0.4 + 1.0) / 3
    torch.testing.assert_close(model.v.grad, want)


def letter_pairs(n: int) -> list[PreferencePair]:
    """Preferences a tiny model can learn: completions ending in 'a' beat those ending in 'b'."""
    return [PreferencePair(prompt=f"{i}:", chosen=f"{i % 7}a", rejected=f"{i % 7}b") for i in range(n)]


def test_value_model_learns_preferences_from_a_file(tmp_path, tiny_overrides) -> None:
    path = tmp_path / "pairs.jsonl"
    write_preference_pairs(path, letter_pairs(120))
    cfg = load_config(None, [*tiny_overrides, "trainer=dvpo_value", f"gvm.pairs_file={path}", "gvm.steps=60", "gvm.batch_size=16",
                             "gvm.lr=3e-3", "gvm.max_length=32", "gvm.max_prompt_length=16", "gvm.micro_batch_size=8"])
    policy, tok = build_tiny_model(SPEC, seed=0)
    model = scalar_model_from_policy(policy, seed=1)
    from llmrl.tasks.preference import read_preference_pairs

    pairs = read_preference_pairs(path)
    m = train_value_model(model, tok, pairs[:100], pairs[100:], cfg)
    assert m["gvm_loss_last"] < 0.5 * m["gvm_loss_first"], m
    assert m["gvm_pair_accuracy"] == 1.0, m
    v = last_values(model, encode_pairs(tok, pairs[100:], max_length=32, max_prompt_length=16))
    assert (v[:20] > 0).all() and (v[20:] < 0).all()  # chosen near +1, rejected near −1


def test_value_model_skips_a_step_with_a_non_finite_gradient(tmp_path, tiny_overrides) -> None:
    """An inf gradient in one step (hooked into the second backward): that step is skipped and counted, the
    value model stays finite and the other steps train."""
    path = tmp_path / "pairs.jsonl"
    write_preference_pairs(path, letter_pairs(20))
    cfg = load_config(None, [*tiny_overrides, "trainer=dvpo_value", f"gvm.pairs_file={path}", "gvm.steps=3",
                             "gvm.batch_size=4", "gvm.lr=3e-3", "gvm.max_length=32", "gvm.max_prompt_length=16"])
    policy, tok = build_tiny_model(SPEC, seed=0)
    model = scalar_model_from_policy(policy, seed=1)
    from llmrl.tasks.preference import read_preference_pairs

    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return torch.full_like(grad, float("inf")) if calls["n"] == 2 else grad

    model.head.weight.register_hook(poison)
    start = model.head.weight.detach().clone()
    m = train_value_model(model, tok, read_preference_pairs(path), [], cfg)
    assert m["gvm_skipped_steps"] == 1.0 and calls["n"] == 3
    assert bool(torch.isfinite(model.head.weight).all()) and (model.head.weight - start).abs().max() > 1e-4


def test_frozen_critic_never_changes() -> None:
    policy, _ = build_tiny_model(SPEC, seed=0)
    critic = Critic(scalar_model_from_policy(policy, seed=1), frozen=True)
    before = [p.clone() for p in critic.model.parameters()]
    assert critic.update(None, policy_step=True) == {}  # type: ignore[arg-type]
    assert critic.optimizer is None and not any(p.requires_grad for p in critic.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, critic.model.parameters()))


def test_dvpo_trainer_builds_the_value_model_then_trains_the_policy(tmp_path, tiny_overrides, capsys) -> None:
    out = tmp_path / "dvpo"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer: dvpo\n")
    rc = main(["train", str(recipe), *tiny_overrides, "task.name=arithmetic", "steps=3", "sft.steps=3",
               "algo.advantage=gae", "algo.sequence_reward=false", "algo.kl_in_reward=true", "algo.kl_coef=0.2",
               "algo.kl_target=0.1", "algo.kl_horizon=20", "gvm.steps=4", "gvm.batch_size=4", "gvm.eval_pairs=4",
               "optim.lr=1e-3", f"output_dir={out}"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gvm_train_pairs"] > 0 and 0.0 <= summary["gvm_pair_accuracy"] <= 1.0
    assert (out / "value_model" / "value_model.json").is_file() and (out / "sft_model" / "config.json").is_file()
    cfg = (out / "config.yaml").read_text()
    assert "frozen: true" in cfg and str(out / "value_model") in cfg and str(out / "sft_model") in cfg
    rows = read_metrics(out / "metrics.jsonl", "train")
    assert all(r["grad_norm"] > 0 for r in rows)  # the policy trains
    assert not any(k.startswith("critic/vf") for r in rows for k in r)  # the value model does not
    assert len({r["kl_coef"] for r in rows}) == 3  # adaptive beta, from 0.2
    assert not (out / "critic_model").exists()
