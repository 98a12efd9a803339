"""SFT, rejection-sampling fine-tuning and the small CLI commands."""

import json

from llmrl.cli.main import main
from llmrl.core.types import Episode
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.tasks import get_task
from llmrl.train.sft import rejection_sample


class ScriptedGenerator:
    """Returns fixed completions: one right and one wrong answer per prompt (plus a duplicate right one)."""

    def __init__(self, task):
        self.task = task
        self.samples = None

    def generate(self, prompts, params):
        out = []
        for s in self.samples:
            right, wrong = s["answer"], str(int(s["answer"]) + 1)
            texts = [right, wrong, right][: params.n]
            out.append([Generation([5], [-0.1], t, "stop") for t in texts])
        return out


def test_rejection_sampling_keeps_only_verified_distinct_completions():
    task = get_task("arithmetic", digits=2, ops=["+"])
    samples = task.samples(5, "train", 0)
    gen = ScriptedGenerator(task)
    gen.samples = samples
    from llmrl.models.tiny import build_char_tokenizer

    kept = rejection_sample(gen, build_char_tokenizer(), task, samples, 3, SamplingParams(max_new_tokens=4), None)
    assert len(kept) == 5
    assert all(task.is_correct(c, s) for s, c in kept)


def test_sft_and_rft_commands_learn_or_run(tmp_path, tiny_overrides, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: {name: arithmetic, options: {digits: 1, ops: ['+']}}\n")
    over = [*tiny_overrides, "sft.steps=60", "sft.lr=3e-3", "sft.batch_size=16", "task.train_size=60",
            "task.test_size=5", "eval.samples=0"]
    assert main(["sft", str(recipe), *over]) == 0
    sft = json.loads(capsys.readouterr().out)
    assert sft["sft_loss"] < 2.0 and 0.0 <= sft["accuracy_after"] <= 1.0
    assert main(["rft", str(recipe), "--rounds", "1", "--k", "4", "--prompts", "8", *over, "sft.steps=2"]) == 0
    rft = json.loads(capsys.readouterr().out)
    assert rft["rounds"][0]["round"] == 1 and rft["rounds"][0]["kept"] >= 0


def test_tensorboard_events_and_metrics_written(tiny_overrides):
    from pathlib import Path

    from llmrl.config import load_config
    from llmrl.rl.loop import train

    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=2"])
    train(cfg)
    out = Path(cfg.output_dir)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    kinds = [json.loads(x)["kind"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds == ["eval", "train", "train", "eval"]


def test_tasks_and_config_commands(capsys):
    assert main(["tasks", "list"]) == 0
    listed = capsys.readouterr().out
    assert "arithmetic" in listed and "knights_knaves" in listed and "countdown" in listed
    assert main(["tasks", "sample", "countdown", "--n", "3", "--seed", "1", "--option", "num_numbers=4"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(len(r["numbers"]) == 4 and r["task"] == "countdown" for r in rows)
    assert main(["config"]) == 0
    assert "algo.advantage" in capsys.readouterr().out
    from pathlib import Path

    recipe = Path(__file__).parent.parent / "recipes" / "countdown_grpo.yaml"
    assert main(["config", str(recipe), "algo.advantage=rloo"]) == 0
    assert "advantage: rloo" in capsys.readouterr().out


def test_episode_rejects_mismatched_lengths():
    import pytest

    with pytest.raises(ValueError, match="lengths disagree"):
        Episode(tokens=[1, 2], loss_mask=[0], logprobs=[0.0, 0.0], sample={})
