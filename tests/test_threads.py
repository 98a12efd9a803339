"""``threads``: N > 0 is exact; 0 (auto) uses the cores no other process is busy with, limited by the model's size
(the throughput it buys on a busy machine: benchmarks/busy_machine.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llmrl.config import load_config
from llmrl.core.config import ConfigError
from llmrl.train import rundir
from llmrl.train.rundir import PARAMS_PER_THREAD, apply_threads, auto_threads


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _machine(monkeypatch, cores: int, busy: float) -> None:
    monkeypatch.setattr(rundir, "_allowed_cores", lambda: cores)
    monkeypatch.setattr(rundir, "_busy_cores", lambda: busy)


@pytest.mark.parametrize(("cores", "busy", "params", "expected"), [
    (2, 0.1, 537_856, 2),  # the quickstart's model on an idle 2-core machine
    (2, 1.0, 537_856, 1),  # ... with another process on one core
    (2, 0.45, 537_856, 1),  # 0.4 of a core busy already counts
    (2, 7.0, 537_856, 1),  # overloaded: still one thread
    (2, 0.0, 23_872, 1),  # the tests' tiny models: one thread
    (16, 3.2, 10**9, 13),  # a large model: every free core
    (16, 0.0, 4 * PARAMS_PER_THREAD, 4),  # a small one: one thread per PARAMS_PER_THREAD parameters
    (8, 2.0, None, 6),  # size unknown: the free cores
])
def test_auto_threads(monkeypatch, cores, busy, params, expected):
    _machine(monkeypatch, cores, busy)
    assert auto_threads(params) == expected


def test_apply_threads_exact_or_auto(monkeypatch, keep_threads):
    _machine(monkeypatch, 2, 0.0)
    cfg = load_config(None, ["threads=3"])
    assert apply_threads(cfg) == 3 and torch.get_num_threads() == 3
    big = load_config(None, ["threads=0", "model.tiny.hidden_size=256", "model.tiny.intermediate_size=1024"])
    assert apply_threads(big) == 2 and torch.get_num_threads() == 2
    assert apply_threads(load_config(None, ["threads=0", "model.tiny.hidden_size=32"])) == 1
    assert torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="threads"):
        load_config(None, ["threads=-1"])


def test_model_size_from_config_or_directory(tmp_path: Path):
    cfg = load_config(None, ["model.tiny.hidden_size=128", "model.tiny.num_layers=2",
                             "model.tiny.intermediate_size=512"])
    assert rundir._model_params(cfg) == 2 * (4 * 128**2 + 3 * 128 * 512)  # 524288: the quickstart's, no embeddings
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4000)
    cfg = load_config(None, [f"model.path={tmp_path}"])
    assert rundir._model_params(cfg) == 2000
    assert rundir._model_params(SimpleNamespace()) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="measures CPU use from /proc/stat (Linux)")
def test_busy_cores_sees_a_process_that_just_started():
    """The 1-minute load average barely moves in the first seconds; the sampled CPU use sees the spinning process."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert rundir._busy_cores() >= 0.6
    finally:
        spin.kill()
        spin.wait()
