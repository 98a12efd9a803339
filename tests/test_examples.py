"""The examples run as a user runs them: ``python examples/python_api.py`` in a fresh process.

``examples/reward_hacking.py`` is not run here at its defaults (a 2000-step SFT warm start, then 60 PPO steps per
method: minutes); ``tests/test_hackable.py`` runs it shortened, in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=EXAMPLES.parent)


def test_python_api_example(tmp_path: Path) -> None:
    """Defaults (the run the example's docstring times), kept in tmp_path to check what it wrote."""
    out = tmp_path / "api"
    proc = _run("python_api.py", "--threads", "1", "--output-dir", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    result = json.loads(lines[-1])
    for key in ("accuracy_before", "accuracy_after", "eval_accuracy"):
        assert 0.0 <= result[key] <= 1.0, key
    # the saved final_model evaluates exactly as the trained model did at the end of the run (greedy)
    assert result["eval_accuracy"] == result["accuracy_after"]
    # the task's rewards in this process and in the worker pool agree, and agree with the verifier
    assert result["pool_reward"] == result["reward"]
    assert result["correct"] == (result["reward"] == 1.0)
    assert result["custom_reward"] == 1.0
    text = proc.stdout
    assert "held-out greedy accuracy:" in text and "after SFT ->" in text and "after RL" in text
    assert "eval_command(final_model): accuracy" in text
    assert f"completion {result['completion']!r}" in text and "(worker pool)" in text
    assert "registered task 'even_number': '42' scores 1" in text
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["accuracy_after"] == result["accuracy_after"] and summary["steps"] == 10
    assert (out / "run" / "final_model" / "config.json").is_file()


def test_python_api_example_temporary_dir_is_removed(tmp_path: Path) -> None:
    """Without --output-dir the run goes to a new temporary directory, removed at the end (a short run)."""
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(env_tmp), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "python_api.py"), "--sft-steps", "5", "--rl-steps", "1"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=EXAMPLES.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out greedy accuracy:" in proc.stdout
    assert [p.name for p in env_tmp.iterdir() if p.name.startswith("llmrl_python_api_")] == []
