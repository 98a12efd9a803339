"""Bad input gets a clear error naming what and where, and never corrupts a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import CharCountTask

from llmrl.algos import POLICY_LOSSES
from llmrl.algos.losses import ppo_clip
from llmrl.cli.main import main
from llmrl.config import load_config
from llmrl.core.errors import TrainingAborted
from llmrl.models.loading import ModelLoadError
from llmrl.rl.loop import train
from llmrl.tasks.base import TASKS
from llmrl.train.checkpoint import latest_checkpoint, load_checkpoint
from llmrl.train.metrics import read_metrics


def run_cli(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_missing_model_directory(tmp_path, capsys, tiny_overrides):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{path: {tmp_path / 'nope'}}}\n")
    code, err = run_cli(["train", str(recipe), *tiny_overrides], capsys)
    assert code == 2 and str(tmp_path / "nope") in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        from llmrl.models.loading import load_model

        load_model(tmp_path / "empty")


def test_malformed_yaml_and_unknown_key_from_the_cli(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 2\nalgo: {advantage: grpo\n")
    code, err = run_cli(["train", str(bad)], capsys)
    assert code == 2 and f"{bad}:" in err and "malformed YAML" in err
    good = tmp_path / "good.yaml"
    good.write_text("steps: 2\n")
    code, err = run_cli(["train", str(good), "algo.kl_coeff=0.1"], capsys)
    assert code == 2 and "algo.kl_coeff" in err and "kl_coef" in err


def test_malformed_jsonl_line_names_file_and_line(tmp_path, capsys, tiny_overrides):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n\n{"prompt": "2+2=", "answer": "4"\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: {{name: arithmetic, train_file: {data}}}\n")
    code, err = run_cli(["train", str(recipe), *tiny_overrides], capsys)
    assert code == 2 and f"{data}:3" in err and "invalid JSON" in err
    data.write_text('{"prompt": "1+1="}\n')
    code, err = run_cli(["train", str(recipe), *tiny_overrides], capsys)
    assert code == 2 and f"{data}:1" in err and "answer" in err


class FlakyRewardTask(CharCountTask):
    """Its reward raises on some completions and returns NaN on others."""

    name = "test_flaky_reward"

    def reward_functions(self):
        def flaky(completion, sample):
            if len(completion) % 3 == 0:
                raise RuntimeError("reward server exploded")
            if len(completion) % 3 == 1:
                return math.nan
            return 1.0

        return {"flaky": flaky}


def test_reward_function_that_raises_or_returns_nan(tiny_overrides, monkeypatch):
    monkeypatch.setitem(TASKS._items, "test_flaky_reward", FlakyRewardTask)
    cfg = load_config(None, [*tiny_overrides, "task.name=test_flaky_reward", "steps=2",
                             "algo.reward_failure_value=-0.5"])
    summary = train(cfg)
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    assert len(rows) == 2 and sum(r["reward_failures"] for r in rows) > 0
    assert all(-0.5 <= r["reward"] <= 1.0 for r in rows)
    assert summary["accuracy_after"] is not None


_calls = {"n": 0}


def _nan_after_two(logprobs, old_logprobs, advantages, mask, **kw):
    _calls["n"] += 1
    loss, metrics = ppo_clip(logprobs, old_logprobs, advantages, mask)
    return (loss * float("nan") if _calls["n"] > 2 else loss), metrics


def test_nan_loss_skips_then_aborts_and_keeps_the_last_checkpoint(tiny_overrides, monkeypatch):
    monkeypatch.setitem(POLICY_LOSSES._items, "test_nan_after_two", _nan_after_two)
    _calls["n"] = 0
    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=8", "save_every=1",
                             "algo.loss=test_nan_after_two", "optim.max_bad_steps=3", "algo.entropy_coef=0.01"])
    with pytest.warns(RuntimeWarning, match="non-finite"), pytest.raises(TrainingAborted, match="3 consecutive"):
        train(cfg)
    ckpt = latest_checkpoint(f"{cfg.output_dir}/checkpoints")
    # steps 1-2 updated and were saved; steps 3 and 4 were skipped (saved: weights unchanged); step 5 aborted
    assert ckpt.name == "step_000004"
    from llmrl.train.build import build_policy
    from llmrl.train.optim import build_optimizer, build_scheduler

    model, _ = build_policy(cfg)
    opt = build_optimizer(model.parameters(), 1e-3)
    state = load_checkpoint(ckpt, model, opt, build_scheduler(opt, 0, 10, "constant"))
    assert state["step"] == 4 and state["bad_steps"] == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    prev = load_checkpoint(ckpt.parent / "step_000003", model, opt, build_scheduler(opt, 0, 10, "constant"))
    assert prev["step"] == 3
