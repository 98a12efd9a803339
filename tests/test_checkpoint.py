"""Atomic checkpoints: a crash during a save never leaves a broken 'latest'."""

import pytest
import torch

from llmrl.train import checkpoint as ck
from llmrl.train.optim import build_optimizer, build_scheduler


def parts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opt = build_optimizer(model.parameters(), 1e-2)
    sched = build_scheduler(opt, 2, 10, "cosine")
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_roundtrip_and_pruning(tmp_path):
    model, opt, sched = parts()
    for step in (1, 2, 3):
        ck.save_checkpoint(tmp_path, step, model, opt, sched, {"data_position": step * 10}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000002", "step_000003"]
    latest = ck.latest_checkpoint(tmp_path)
    assert latest.name == "step_000003"
    m2, o2, s2 = parts()
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(1.0)
    state = ck.load_checkpoint(latest, m2, o2, s2)
    assert state["step"] == 3 and state["data_position"] == 30
    for a, b in zip(model.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert s2.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"]


def test_crash_during_save_keeps_previous_latest(tmp_path, monkeypatch):
    model, opt, sched = parts()
    ck.save_checkpoint(tmp_path, 1, model, opt, sched, {"x": 1})
    real_save = torch.save

    def dying_save(obj, path, *a, **k):
        if str(path).endswith("state.pt"):
            raise KeyboardInterrupt("killed mid-save")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, 2, model, opt, sched, {"x": 2})
    monkeypatch.undo()
    latest = ck.latest_checkpoint(tmp_path)
    assert latest.name == "step_000001"
    assert ck.load_checkpoint(latest, *parts())["x"] == 1
    assert not (tmp_path / "step_000002").exists()
    ck.save_checkpoint(tmp_path, 2, model, opt, sched, {"x": 2})  # the leftover temp dir does not get in the way
    assert ck.latest_checkpoint(tmp_path).name == "step_000002"


def test_latest_pointing_at_missing_dir_is_an_error(tmp_path):
    (tmp_path / "latest").write_text("step_000009\n")
    with pytest.raises(ck.CheckpointError, match="not a complete checkpoint"):
        ck.latest_checkpoint(tmp_path)


class _Payload:
    """Pickles as a call that writes a marker file: what a hostile checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["state.pt", "optim.pt"])
def test_checkpoint_with_pickled_objects_is_refused_and_runs_nothing(tmp_path, name):
    model, opt, sched = parts()
    path = ck.save_checkpoint(tmp_path / "ck", 1, model, opt, sched, {"data_position": 1}, keep=2)
    marker = tmp_path / "pwned"
    torch.save({"x": _Payload(marker)}, path / name)
    m2, o2, s2 = parts()
    with pytest.raises(ck.CheckpointError, match=f"{name}: refused"):
        ck.load_checkpoint(path, m2, o2, s2)
    assert not marker.exists()


def test_rng_state_is_plain_data_and_round_trips(tmp_path):
    import random

    import numpy as np

    from llmrl.core.seed import rng_state, seed_everything, set_rng_state

    seed_everything(5)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(6)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
