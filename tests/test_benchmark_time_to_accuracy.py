"""benchmarks/time_to_accuracy.py: the comparison arithmetic by hand, and one end-to-end run of its plumbing (both
children, llmrl train and TRL's GRPOTrainer, on the tiny random Llama: 1 step, evaluated at steps 0 and 1)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"


def load_script() -> ModuleType:
    return load_module(SCRIPT, "time_to_accuracy_benchmark")


def rec(step: int, wall: float, cpu: float, acc: float) -> dict[str, float]:
    return {"step": step, "wall": wall, "cpu": cpu, "cpu_self": cpu, "accuracy": acc}


RESULTS = {
    "llmrl": {"records": [rec(0, 0, 0, 0.05), rec(5, 100, 40, 0.20), rec(10, 210, 80, 0.45)]},
    "trl": {"records": [rec(0, 0, 0, 0.05), rec(5, 150, 60, 0.10), rec(10, 300, 120, 0.30)]},
}


def test_common_target_is_the_lower_best_and_ratios_are_llmrl_over_trl() -> None:
    bench = load_script()
    cmp = bench.compare(RESULTS, None)
    # bests 0.45 (llmrl) and 0.30 (TRL): target 0.30; llmrl first >= 0.30 at step 10 (210 s, 80 s CPU), TRL at 10
    assert cmp["target"] == 0.30
    assert cmp["reached"]["llmrl"]["step"] == 10 and cmp["reached"]["trl"]["step"] == 10
    assert cmp["ratio_wall"] == pytest.approx(210 / 300) and cmp["ratio_cpu"] == pytest.approx(80 / 120)
    assert cmp["pass"] == {"wall": False, "cpu": False}
    table = bench.table(RESULTS, cmp)
    assert "| 5 | 100.0 | 40.0 | 0.200 | 150.0 | 60.0 | 0.100 |" in table
    assert "0.70x (target <= 0.5x: MISS)" in table and "0.67x (target <= 0.5x: MISS)" in table


def test_explicit_target_and_unreached_sides() -> None:
    bench = load_script()
    cmp = bench.compare(RESULTS, 0.2)  # llmrl: step 5 (100 s); TRL: step 10 (300 s) -> 1/3, PASS
    assert cmp["ratio_wall"] == pytest.approx(1 / 3) and cmp["pass"]["wall"]
    assert cmp["ratio_cpu"] == pytest.approx(40 / 120) and cmp["pass"]["cpu"]
    # TRL never gets to 0.4: its time to it is over its 300 s (120 s CPU), llmrl's 210 s (80 s) -> at most 0.7x
    only_llmrl = bench.compare(RESULTS, 0.4)
    assert only_llmrl["reached"]["trl"] is None and only_llmrl["bound"]
    assert only_llmrl["ratio_wall"] == pytest.approx(0.7) and only_llmrl["ratio_cpu"] == pytest.approx(80 / 120)
    assert "never reached in 10 steps (300.0 s wall, 120.0 s CPU)" in bench.table(RESULTS, only_llmrl)
    assert "<= 0.70x (target <= 0.5x: UNDECIDED (TRL did not reach the target))" in bench.table(RESULTS, only_llmrl)
    neither = bench.compare(RESULTS, 0.9)
    assert math.isinf(neither["ratio_wall"]) and not neither["pass"]["cpu"]
    assert "never reached" in bench.table(RESULTS, neither) and neither["verdict"]["wall"] == "MISS"


def test_default_target_when_one_side_never_improves() -> None:
    bench = load_script()
    flat = {"llmrl": RESULTS["llmrl"], "trl": {"records": [rec(0, 0, 0, 0.05), rec(5, 200, 90, 0.03)]}}
    cmp = bench.compare(flat, None)  # TRL's best is its start: the target is llmrl's best, 0.45 (step 10)
    assert cmp["target"] == 0.45 and cmp["reached"]["trl"] is None and cmp["bound"]
    assert cmp["ratio_wall"] == pytest.approx(210 / 200) and cmp["ratio_cpu"] == pytest.approx(80 / 90)


def test_train_clock_excludes_paused_time() -> None:
    bench = load_script()
    clock = bench.TrainClock()
    assert clock.pause() == (0.0, 0.0, 0.0)  # not started yet
    clock.resume()
    sum(i * i for i in range(300_000))  # some CPU work on the clock
    wall, cpu, own = clock.pause()
    sum(i * i for i in range(300_000))  # off the clock
    # cpu (this process + children, summed differently from own) may differ from own in the last float bits
    assert clock.pause() == (wall, cpu, own) and wall > 0 and own > 0 and cpu >= own - 1e-9


def test_end_to_end_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl")
    bench = load_script()
    out = tmp_path / "result.json"
    argv = ["--steps", "1", "--eval-every", "1", "--logs", str(tmp_path / "logs"), "--json", str(out),
            "--set", "task.test_size=8", "eval.size=8", "eval.batch_size=8"]
    result = bench.main(argv)
    printed = capsys.readouterr().out
    for side in ("llmrl", "trl"):
        records = result[side]["records"]
        assert [r["step"] for r in records] == [0, 1], side
        assert records[0]["wall"] == 0.0 and records[1]["wall"] > 0 and records[1]["cpu"] > 0
        assert result[side]["threads"] == 1
    # the same weights and the same evaluator: the same step-0 accuracy on both sides
    assert result["llmrl"]["records"][0]["accuracy"] == result["trl"]["records"][0]["accuracy"]
    assert "| 0 | 0.0 | 0.0 |" in printed and "time to target llmrl / TRL (wall)" in printed
    assert json.loads(out.read_text())["compare"]["target"] == result["compare"]["target"]
    assert bench.main(["--report", str(tmp_path / "logs")])["compare"]["target"] == result["compare"]["target"]
