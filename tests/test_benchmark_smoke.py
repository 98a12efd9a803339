"""Smoke test of benchmarks/rl_step.py: one warm-up + one timed llmrl step, short completions, no TRL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import load_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rl_step.py"
DVPO_SCRIPT = SCRIPT.with_name("dvpo_vs_ppo.py")


def load_script(path: Path = SCRIPT, name: str = "rl_step_benchmark") -> ModuleType:
    return load_module(path, name)


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    """The tests pass --threads 1 (robust on a busy 2-core machine); give other tests torch's setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_rl_step_benchmark_json(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_script()
    argv = ["--no-trl", "--warmup", "1", "--steps", "1", "--max-new-tokens", "8", "--threads", "1", "--json"]
    result = bench.main(argv)
    printed = json.loads(capsys.readouterr().out)
    for out in (result, printed):
        for key in bench.KEYS:
            assert out[key] > 0, key
        assert "trl" not in out and "speedup_step" not in out
        assert out["config"]["max_new_tokens"] == 8
    assert result["seconds_per_step"] == pytest.approx(
        result["generation_seconds"] + result["scoring_seconds"] + result["training_seconds"])
    assert result["generation_tokens_per_second"] == pytest.approx(8 * 8 * 8 / result["generation_seconds"])


def test_rl_step_benchmark_table(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_script()
    bench.main(["--no-trl", "--warmup", "0", "--steps", "1", "--max-new-tokens", "4", "--threads", "1"])
    out = capsys.readouterr().out
    assert "llmrl" in out and "gen tok/s" in out and "trl " not in out


def test_dvpo_vs_ppo_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_script(DVPO_SCRIPT, "dvpo_vs_ppo_benchmark")
    argv = ["--hidden-size", "32", "--layers", "1", "--prompts", "2", "--samples", "2", "--max-new-tokens", "4",
            "--steps", "1", "--warmup", "0", "--threads", "1"]
    result = bench.main([*argv, "--json"])
    assert json.loads(capsys.readouterr().out) == result
    for method in ("ppo", "dvpo"):
        for key in bench.KEYS:
            assert result[method][key] > 0, (method, key)
    assert set(result["ratio"]) == set(bench.KEYS)
    assert result["ratio"]["seconds_per_step"] == pytest.approx(
        result["dvpo"]["seconds_per_step"] / result["ppo"]["seconds_per_step"])
    table = bench.table(result)
    assert "DVPO/PPO" in table and "RSS delta" in table and "paper: -40% memory, -35% time" in table
