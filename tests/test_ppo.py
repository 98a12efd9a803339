"""PPO with a critic in the RL loop: the critic learns, resume equals an uninterrupted run, reward shaping
(PAR) and reward models flow into the token rewards, config errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from llmrl.algos import token_rewards
from llmrl.config import load_config
from llmrl.core.errors import ConfigError
from llmrl.core.types import Episode
from llmrl.models import build_tiny_model
from llmrl.models.tiny import TinyModelSpec
from llmrl.models.value_head import scalar_model_from_policy
from llmrl.rl import loop as rl
from llmrl.rl.rewarding import SequenceRewards
from llmrl.train.metrics import read_metrics

PPO = ["algo.advantage=gae", "critic.lr=3e-3", "algo.kl_coef=0.05", "algo.kl_in_reward=true"]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def test_critic_learns_while_the_policy_waits(tiny_overrides):
    # warm-up for every step: only the critic trains, on a fixed policy's rollouts -> its loss must fall
    cfg = load_config(None, [*tiny_overrides, *PPO, "task.name=test_char_a", "steps=16", "critic.warmup_steps=16",
                             "critic.value_clip=null", "rollout.prompts_per_step=8", "seed=2"])
    before = {k: v.clone() for k, v in build_tiny_model(_spec(cfg), seed=cfg.seed)[0].state_dict().items()}
    rl.train(cfg)
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    loss = [r["critic/vf_loss"] for r in rows]
    assert mean(loss[-4:]) < 0.5 * mean(loss[:4]), loss
    assert all("loss" not in r for r in rows)  # no policy update during the warm-up
    after = load_file(f"{cfg.output_dir}/final_model/model.safetensors")
    assert all(torch.equal(after[k], before[k]) for k in after if k in before)
    critic = load_file(f"{cfg.output_dir}/critic_model/scalar_head.safetensors")
    assert critic["weight"].abs().sum() > 0


def _spec(cfg):
    t = cfg.model.tiny
    return TinyModelSpec(arch=t.arch, hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.num_heads,
                         num_kv_heads=t.num_kv_heads or t.num_heads, intermediate_size=t.intermediate_size,
                         max_position_embeddings=t.max_position_embeddings)


def test_ppo_end_to_end_updates_policy_and_critic(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, *PPO, "task.name=test_char_a", "steps=3", "optim.lr=1e-3",
                             "algo.kl_target=0.01", "algo.kl_horizon=10", "algo.minibatches=2",
                             "algo.micro_batch_size=3"])
    summary = rl.train(cfg)
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    assert all(r["grad_norm"] > 0 and r["critic/grad_norm"] > 0 for r in rows), rows
    assert rows[0]["kl_coef"] == 0.05 and rows[1]["kl_coef"] != 0.05  # adaptive beta moved
    assert summary["accuracy_after"] is not None


@pytest.mark.parametrize("opts", [
    ["model.lora.enabled=true"],
    ["model.tiny.arch=qwen2", "model.tiny.num_kv_heads=1", "rollout.env=retry", "rollout.max_turns=2"],
    ["algo.loss=gspo", "algo.loss_agg=seq-mean-token-mean", "critic.micro_batch_size=5", "rollout.backend=hf"],
    ["algo.advantage=grpo", "algo.shaping=minmax", "algo.kl_target=0.05"],
], ids=["lora", "multiturn", "gspo_hf", "grpo_shaped"])
def test_critic_and_shaping_work_with_other_options(tiny_overrides, opts):
    cfg = load_config(None, [*tiny_overrides, *PPO, "task.name=test_char_a", "steps=2", "optim.lr=1e-3", *opts])
    rl.train(cfg)
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    assert all(r["grad_norm"] > 0 for r in rows), rows
    assert all(("critic/grad_norm" in r) == (cfg.algo.advantage == "gae") for r in rows)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("extra", [
    ["algo.kl_target=0.02", "algo.kl_horizon=50", "algo.shaping=par", "algo.reference_samples=2",
     "algo.length_penalty={threshold: 3, coef: 0.1}", "algo.minibatches=2", "algo.epochs=2",
     "task.train_size=4"],  # the same 4 prompts every step: the cached reference rewards must survive resume
    ["critic.share_backbone=true", "critic.warmup_steps=1", "critic.vf_coef=0.5", "algo.shaping=meanstd"],
], ids=["separate_critic_par", "shared_backbone"])
def test_resume_equals_uninterrupted_with_critic(tiny_overrides, tmp_path, monkeypatch, extra):
    base = [*tiny_overrides, *PPO, "task.name=test_char_a", "steps=4", "save_every=1", "sft.steps=3",
            "optim.lr=1e-3", "optim.schedule=cosine", "eval.every=2", *extra]
    a = load_config(None, [*base, f"output_dir={tmp_path / 'a'}"])
    b = load_config(None, [*base, f"output_dir={tmp_path / 'b'}"])
    rl.train(a)

    real_save = rl.save_checkpoint

    def save_then_die(*args, **kw):
        path = real_save(*args, **kw)
        if args[1] == 2:
            raise Interrupt
        return path

    monkeypatch.setattr(rl, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupt):
        rl.train(b)
    monkeypatch.setattr(rl, "save_checkpoint", real_save)
    rl.train(b, resume=True)

    for name in ("final_model/model.safetensors", "critic_model/model.safetensors",
                 "critic_model/scalar_head.safetensors"):
        wa, wb = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert wa.keys() == wb.keys()
        assert max((wa[k] - wb[k]).abs().max().item() for k in wa) == 0.0, name
    strip = [{k: v for k, v in r.items() if not k.startswith("time/")}
             for r in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    assert strip == [{k: v for k, v in r.items() if not k.startswith("time/")}
                     for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]


def _episode(reward: float, n_tokens: int, prompt: str, refs: list[float]) -> Episode:
    sample = {"prompt": prompt, "answer": "", "ref_rewards": refs}
    return Episode.single_turn([5, 6], list(range(7, 7 + n_tokens)), [0.0] * n_tokens, sample, reward=reward)


def test_shared_backbone_value_loss_metric_does_not_depend_on_the_micro_batch(tiny_overrides, tmp_path):
    """Under share_backbone the value loss rides in the policy loss (``Critic.policy_aux``); its logged
    ``critic/vf_loss`` is the minibatch's value loss with one sequence per micro-batch as with the whole
    minibatch at once (it was the sum of the micro-batches' shares each weighted once more by its share of the
    sequences: 1/8 of the value with micro-batches of 1 here)."""
    runs = []
    for micro in (0, 1):
        cfg = load_config(None, [*tiny_overrides, *PPO, "task.name=test_char_a", "steps=2", "model.dtype=float64",
                                 "critic.share_backbone=true", f"algo.micro_batch_size={micro}",
                                 "rollout.prompts_per_step=2", "eval.samples=0", "eval.pass_k=[1]",
                                 f"output_dir={tmp_path / str(micro)}"])
        rl.train(cfg)
        runs.append(read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train"))
    for a, b in zip(*runs, strict=True):
        assert b["critic/vf_loss"] == pytest.approx(a["critic/vf_loss"], rel=1e-6)  # float32 values
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
    assert runs[0][0]["critic/vf_loss"] > 0


def test_par_shaping_flows_into_the_last_token_reward(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "algo.shaping=par", "algo.length_penalty={threshold: 2, coef: 0.1}"])
    model, tok = build_tiny_model(_spec(cfg))
    run = SimpleNamespace(model=model, tokenizer=tok, ref=None, ref_context=None, task=None)
    scorer = SequenceRewards(cfg, run)  # type: ignore[arg-type]
    eps = [_episode(1.0, 4, "a", [0.0, 1.0]), _episode(0.0, 1, "b", [0.5])]
    scores, metrics = scorer(eps, step=1)

    def sigmoid(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    # episode 0: 4 tokens, 2 over the threshold -> r = 1.0 − 0.1·2 = 0.8; PAR = mean σ(0.8 − ref)
    want = [(sigmoid(0.8 - 0.0) + sigmoid(0.8 - 1.0)) / 2, sigmoid(0.0 - 0.5)]
    assert scores.tolist() == pytest.approx(want, abs=1e-6)
    assert metrics["reward/shaped"] == pytest.approx(sum(want) / 2, abs=1e-6)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    kl = torch.full((2, 4), 0.5)
    rewards = token_rewards(scores, mask, kl, 0.1)
    expect = [[-0.05, -0.05, -0.05, want[0] - 0.05], [want[1] - 0.05, 0.0, 0.0, 0.0]]
    torch.testing.assert_close(rewards, torch.tensor(expect), atol=1e-6, rtol=0)


def test_references_are_sampled_once_per_prompt_and_shaping_runs_with_grpo(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=2", "algo.shaping=centered",
                             "algo.reference_samples=3", "task.train_size=4", "rollout.prompts_per_step=2"])
    calls: list[int] = []
    real = SequenceRewards.reference_rewards

    def spy(self, samples, step):
        out = real(self, samples, step)
        calls.append(len(self.refs))
        assert out.shape == (len(samples), 3) and not torch.isnan(out).any()
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SequenceRewards, "reference_rewards", spy)
        rl.train(cfg)
    assert calls == [2, 4]  # two new prompts per step, all four distinct over the two steps
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    assert all("reward/shaped" in r for r in rows)


def test_reward_model_replaces_the_task_reward(tiny_overrides, tmp_path):
    policy, tok = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                                 intermediate_size=64, max_position_embeddings=64))
    rm = scalar_model_from_policy(policy, seed=5)
    with torch.no_grad():
        rm.head.bias.fill_(3.0)
    rm.save(tmp_path / "rm", tok)
    cfg = load_config(None, [*tiny_overrides, *PPO, "task.name=test_char_a", "steps=2",
                             f"algo.reward_model={tmp_path / 'rm'}"])
    rl.train(cfg)
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    assert all(r["reward/model"] > 2.0 for r in rows), [r["reward/model"] for r in rows]  # the RM's bias shows


@pytest.mark.parametrize("overrides,match", [
    (["critic.enabled=true"], "critic.enabled"),
    (["algo.advantage=gae", "critic.enabled=false"], "critic.enabled"),
    (["algo.advantage=gae", "critic.frozen=true"], "critic.frozen"),
    (["algo.advantage=gae", "critic.share_backbone=true", "model.lora.enabled=true"], "critic.share_backbone"),
    (["algo.sequence_reward=false"], "sequence_reward"),
    (["algo.shaping=parr"], "algo.shaping"),
    (["algo.shaping=par", "algo.shaping_options={kk: 1}"], "kk"),
    (["algo.length_penalty={limit: 3}"], "algo.length_penalty"),
    (["algo.kl_target=0.1"], "algo.kl_target"),
    (["algo.advantage=remax", "algo.shaping=par"], "remax"),
    (["algo.advantage=gae", "critic.value_clip=0"], "critic.value_clip"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)
