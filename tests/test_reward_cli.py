"""`llmrl reward`: score a JSONL file of completions; bad lines are reported by number and skipped."""

import json

from llmrl.cli.main import main
from llmrl.tasks import get_task


def test_reward_cli_scores_kk_and_skips_bad_lines(tmp_path, capsys):
    task = get_task("knights_knaves", n_people=3)
    samples = task.samples(3, "test", 0)
    rows = [
        {**samples[0], "completion": task.demonstration(samples[0])},  # right + formatted: 3
        {**samples[1], "completion": " hmm </think> <answer> (1) nobody </answer>"},  # unparsable answer: 1 - 2
        {**samples[2], "completion": "no tags at all"},  # broken format: -1 - 2
    ]
    src = tmp_path / "in.jsonl"
    lines = [json.dumps(rows[0]), "{not json", json.dumps(rows[1]), "[1, 2]", "",
             json.dumps({"prompt": "x"}), json.dumps(rows[2])]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "scored.jsonl"
    assert main(["reward", "knights_knaves", "--input", str(src), "--output", str(out), "--option", "n_people=3"]) == 0
    captured = capsys.readouterr()
    scored = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["reward"] for r in scored] == [3.0, -1.0, -3.0]
    assert scored[0]["reward_components"] == {"format": 1.0, "answer": 2.0}
    assert scored[1]["prompt"] == rows[1]["prompt"]  # the input fields are kept
    for lineno in (2, 4, 6):
        assert f"{src}:{lineno}: skipped" in captured.err
    summary = json.loads(captured.out[: captured.out.index("}") + 1])
    assert summary["scored"] == 3 and summary["skipped"] == 3
    assert abs(summary["mean_reward"] - (3 - 1 - 3) / 3) < 1e-12 and abs(summary["accuracy"] - 1 / 3) < 1e-12
    assert "#" in captured.out  # the histogram


def test_reward_cli_errors(tmp_path, capsys):
    assert main(["reward", "no_such_task", "--input", "x", "--output", "y"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["reward", "arithmetic", "--input", str(tmp_path / "missing.jsonl"), "--output", "y"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["tasks", "sample", "arithmetic", "--option", "digits=0"]) == 2
    assert "digits" in capsys.readouterr().err


def test_reward_throughput_benchmark_runs():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    import reward_throughput

    result = reward_throughput.main(["--n", "200", "--json"])
    # five completion variants per puzzle score 3, -0.5, -3, -1, 3 (Logic-RL's constants, arXiv:2502.14768)
    assert result["completions"] == 200 and abs(result["mean_reward"] - 0.3) < 1e-9
