"""`llmrl quickstart` wiring (a shortened run: the full one is measured by hand, see README)."""

import json

from llmrl.cli.main import main
from llmrl.cli.quickstart import QUICKSTART, quickstart_config


def test_quickstart_cli_writes_summary(tmp_path, capsys):
    out = tmp_path / "qs"
    code = main(["quickstart", "--output-dir", str(out), "--seed", "3", "steps=2", "sft.steps=4", "progress=false",
                 "task.train_size=64", "task.test_size=16", "eval.samples=2", "eval.pass_k=[1,2]",
                 "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "rollout.prompts_per_step=4"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("accuracy_before", "accuracy_after", "wall_seconds"):
        assert isinstance(summary[key], float)
    printed = capsys.readouterr().out
    assert "held-out greedy accuracy" in printed and "after RL" in printed
    assert (out / "final_model" / "config.json").is_file() and (out / "sft_model" / "config.json").is_file()


def test_quickstart_config_is_valid_and_takes_seed():
    cfg = quickstart_config("x", 7)
    assert cfg.seed == 7 and cfg.output_dir == "x" and cfg.steps == QUICKSTART["steps"]
    assert cfg.model.path is None and cfg.sft.steps > 0 and 0 < cfg.sft.noise < 1
