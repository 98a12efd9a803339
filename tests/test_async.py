"""One-step asynchronous RL (``rollout.async``): batch t+1 is generated while the trainer trains on batch t;
staleness measured per sample, never above 1; TIS / MIS against the trainer's recomputed log-probs; the
synchronous path is unchanged when it is off (tests/test_rl_loop.py, tests/test_rollout_correction.py)."""

from __future__ import annotations

import pytest

from llmrl.config import load_config
from llmrl.core.errors import ConfigError
from llmrl.rl.loop import train
from llmrl.train.metrics import read_metrics

ASYNC = ["rollout.async=true", "algo.recompute_logprobs=true", "algo.rollout_correction.mode=tis"]


def test_async_run_learns_with_staleness_at_most_one(tiny_overrides):
    """The loop's learning run (tests/test_rl_loop.py: 40 steps of test_char_a) with rollout.async: the reward
    rises as much, every sample is 0 (first batch) or 1 step stale, and the correction is applied."""
    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=40", "optim.lr=1e-2",
                             "rollout.prompts_per_step=8", "rollout.samples_per_prompt=8", "seed=1", *ASYNC])
    train(cfg)
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    rewards = [r["reward"] for r in rows]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.2 and last > 3 * first, (first, last, rewards)
    assert [r["staleness/max"] for r in rows] == [0.0] + [1.0] * 39
    assert [r["staleness/mean"] for r in rows] == [0.0] + [1.0] * 39
    assert all("rollout/weight_mean" in r and "rollout/truncated_frac" in r for r in rows)
    # one step stale: the trainer's recomputed log-probs differ from the sampler's after the first step
    assert rows[0]["rollout/logp_diff_max"] < 1e-4 < max(r["rollout/logp_diff_max"] for r in rows[1:])


def test_async_checkpoint_keeps_the_prompts_of_the_batch_in_flight(tiny_overrides):
    """The data position saved is the one before the in-flight batch drew its prompts: a resumed run draws
    them again (regenerated with the checkpointed policy, so staleness 0 for that batch)."""
    import torch

    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=3", "save_every=1", *ASYNC])
    train(cfg)
    state = torch.load(f"{cfg.output_dir}/checkpoints/step_000002/state.pt", weights_only=True)
    assert state["data_position"] == 2 * 4  # steps 1 and 2 trained; step 3's prompts were in flight
    more = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=4", *ASYNC])
    train(more, resume=True)
    rows = read_metrics(f"{more.output_dir}/metrics.jsonl", "train")
    assert [r["step"] for r in rows][-1] == 4 and rows[-1]["staleness/max"] <= 1


def test_async_config_errors(tiny_overrides):
    with pytest.raises(ConfigError, match="rollout.async: needs algo.recompute_logprobs=true"):
        load_config(None, [*tiny_overrides, "rollout.async=true"])
    with pytest.raises(ConfigError, match="rollout.async: with backend vllm needs the Ray rollout workers"):
        load_config(None, [*tiny_overrides, "rollout.async=true", "algo.recompute_logprobs=true",
                           "rollout.backend=vllm"])
    with pytest.raises(ConfigError, match="rollout.async: read by the RL loop only"):
        load_config(None, [*tiny_overrides, "trainer=dpo", "rollout.async=true"])
    from llmrl.rl.rollouts import build_rollout_source

    cfg = load_config(None, [*tiny_overrides, *ASYNC])
    with pytest.raises(ConfigError, match="rollout.async: not supported under torchrun"):
        build_rollout_source(cfg, None, None, None, None, True)  # type: ignore[arg-type]
