"""Runs never mix and never lose their work: one run per output_dir (locked), another run's outputs refused
without --resume/--overwrite, a refused command writes nothing, --resume checks its checkpoint against the
config, resuming a finished run duplicates no metric row, dead processes' temp files are removed, SIGINT/SIGTERM
checkpoint before stopping (and resuming then equals the uninterrupted run), and a bad output path, a read-only
file system or a full disk is a one-line error (exit 2) that leaves the last good checkpoint intact."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY
from safetensors.torch import load_file

from llmrl.cli.main import main
from llmrl.train.metrics import read_metrics
from llmrl.train.rundir import claim_output, clean_stale_temps

RUN = [*TINY, "task.name=arithmetic", "steps=4", "sft.steps=3", "sft.batch_size=8", "optim.lr=1e-3",
       "eval.every=2"]


def recipe(tmp_path: Path) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text("seed: 3\n")
    return str(path)


def train(tmp_path: Path, out: Path, *extra: str) -> int:
    return main(["train", recipe(tmp_path), *RUN, f"output_dir={out}", *extra])


def one_line_error(capsys) -> str:
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("llmrl: ")]
    assert len(err) == 1, err
    return err[0]


def test_second_run_refused_while_first_holds_the_directory(tmp_path, capsys):
    out = tmp_path / "run"
    claim = claim_output(out)
    try:
        assert train(tmp_path, out) == 2
        msg = one_line_error(capsys)
        assert "in use by another llmrl run" in msg and f"pid {os.getpid()}" in msg
        assert list(out.iterdir()) == []  # the refused run wrote nothing
    finally:
        claim.release()
    assert not out.exists()  # the claim created it and nothing was written: removed again


def test_concurrent_real_runs(tmp_path):
    """Two processes started together on one output_dir: one is refused naming the other's pid, and the other's
    metrics, checkpoints and final model are its own (steps 1..N once each)."""
    out, env = tmp_path / "run", {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "llmrl.cli.main", "train", recipe(tmp_path), *RUN, "steps=12", "save_every=1",
           f"output_dir={out}"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    assert sorted(codes) == [0, 2], codes
    winner, loser = (procs[0], procs[1]) if codes[0] == 0 else (procs[1], procs[0])
    assert f"in use by another llmrl run (pid {winner.pid})" in loser.stderr.read()
    rows = read_metrics(out / "metrics.jsonl", "train")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000012"
    assert (out / "final_model" / "model.safetensors").is_file()


def test_existing_run_refused_then_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tmp_path, out) == 0
    (out / "notes.txt").write_text("mine")
    before = (out / "config.yaml").read_text()
    assert train(tmp_path, out, "optim.lr=5e-4") == 2
    assert "holds another run" in one_line_error(capsys)
    assert (out / "config.yaml").read_text() == before  # the refused command changed nothing
    assert train(tmp_path, out, "steps=2", "--overwrite") == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl", "train")] == [1, 2]
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_000002"]
    assert len(list((out / "tb").iterdir())) == 1  # one event file: the old one went with the old run
    assert (out / "notes.txt").read_text() == "mine"  # not llmrl's: never deleted


def test_resume_without_checkpoint_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tmp_path, out, "--resume") == 2
    assert "no checkpoint" in one_line_error(capsys)
    assert not out.exists()


def test_resume_checks_config_and_finished_run_has_no_duplicate_rows(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tmp_path, out) == 0
    rows = read_metrics(out / "metrics.jsonl")
    config = (out / "config.yaml").read_text()
    assert train(tmp_path, out, "--resume", "algo.kl_coef=0.5") == 2
    msg = one_line_error(capsys)
    assert "written under another config" in msg and "algo.kl_coef: 0.0 -> 0.5" in msg
    assert (out / "config.yaml").read_text() == config
    assert train(tmp_path, out, "--resume", "log_every=3") == 0  # how a run reports may change
    capsys.readouterr()
    again = read_metrics(out / "metrics.jsonl")
    assert [(r["step"], r["kind"]) for r in again] == [(r["step"], r["kind"]) for r in rows]  # no duplicate eval
    assert len({(r["step"], r["kind"]) for r in again}) == len(again)
    with pytest.warns(RuntimeWarning, match="changed config"):
        assert train(tmp_path, out, "--resume", "--force", "algo.kl_coef=0.5") == 0


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (out / "checkpoints" / f".tmp_step_000003_{dead}").mkdir(parents=True)
    (out / f"final_model.tmp{dead}").mkdir()
    (out / "checkpoints" / f".latest_{dead}").write_text("x")
    (out / f"sft_model.tmp{os.getppid()}").mkdir()  # a live process's: kept
    removed = clean_stale_temps(out)
    assert sorted(p.name for p in removed) == sorted([f".tmp_step_000003_{dead}", f"final_model.tmp{dead}",
                                                      f".latest_{dead}"])
    assert (out / f"sft_model.tmp{os.getppid()}").is_dir()


def test_output_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert train(tmp_path, f) == 2
    assert "is a file, not a directory" in one_line_error(capsys)
    assert train(tmp_path, f / "sub" / "run") == 2
    assert "is a file, not a directory" in one_line_error(capsys)
    assert f.read_text() == "x"


def _sub(out: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llmrl.cli.main", "train", recipe(tmp_path), *RUN, f"output_dir={out}", *extra]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_resume_equals_uninterrupted(tmp_path, sig):
    """Recipe defaults (save_every=0): the signal at step k writes a checkpoint; --resume ends with the
    parameters and metrics of the uninterrupted run."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    full, cut = tmp_path / "full", tmp_path / "cut"
    steps = "steps=10"
    subprocess.run(_sub(full, tmp_path, steps), check=True, env=env, capture_output=True, timeout=300)
    proc = subprocess.Popen(_sub(cut, tmp_path, steps), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        rows = read_metrics(cut / "metrics.jsonl", "train") if (cut / "metrics.jsonl").is_file() else []
        if rows and rows[-1]["step"] >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    code, err = proc.wait(timeout=300), proc.stderr.read()
    proc.stderr.close()
    assert code == 130, err
    k = int((cut / "checkpoints" / "latest").read_text().strip().removeprefix("step_"))
    assert 3 <= k < 10, err
    assert f"after step {k}; checkpoint" in err and "--resume" in err
    res = subprocess.run(_sub(cut, tmp_path, steps, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    wa, wb = (load_file(str(d / "final_model" / "model.safetensors")) for d in (full, cut))
    assert wa.keys() == wb.keys()
    assert max(float((wa[n] - wb[n]).abs().max()) for n in wa) <= 1e-6

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]

    assert strip(read_metrics(full / "metrics.jsonl")) == strip(read_metrics(cut / "metrics.jsonl"))


def test_full_disk_during_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch, capsys):
    """The write of step 3's checkpoint fails with ENOSPC: one-line error, exit 2, `latest` still names step 2's
    complete checkpoint, no temporary directory left; --resume then finishes the run."""
    import errno

    from llmrl.train import checkpoint as ck

    real, calls = ck.st_save_model, []

    def failing(model, path, *a, **k):
        calls.append(path)
        if "_000003_" in path:
            with open(path, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(model, path, *a, **k)

    monkeypatch.setattr(ck, "st_save_model", failing)
    out = tmp_path / "run"
    assert train(tmp_path, out, "save_every=1") == 2
    msg = one_line_error(capsys)
    assert "No space left on device" in msg and "step_000002" in msg
    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_000002"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_000001", "step_000002"]
    monkeypatch.setattr(ck, "st_save_model", real)
    assert train(tmp_path, out, "save_every=1", "--resume") == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl", "train")] == [1, 2, 3, 4]


def _unshare_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_ok(), reason="needs user+mount namespaces (unshare) to mount a small tmpfs")
def test_read_only_file_system_and_full_disk_for_real(tmp_path):
    """In a private mount namespace: output_dir on a read-only tmpfs → exit 2, one line; on a tmpfs that fills
    up during the run → exit 2, one line, the last checkpoint complete and no temporary files."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = " ".join(_sub(mnt / "run", tmp_path, "save_every=1", "steps=400"))
    script = (f"mount -t tmpfs -o size=4m,ro tmpfs {mnt} && {cmd}; echo rc=$?; umount {mnt}; "
              f"mount -t tmpfs -o size=24m tmpfs {mnt} && ({cmd} & pid=$!; "
              f"while [ ! -f {mnt}/run/checkpoints/latest ]; do sleep 0.05; done; "
              f"head -c 100000000 /dev/zero > {mnt}/filler 2>/dev/null; wait $pid; echo rc=$?; "
              f"ls -a {mnt}/run {mnt}/run/checkpoints; cat {mnt}/run/checkpoints/latest; "
              f"ls {mnt}/run/checkpoints/$(cat {mnt}/run/checkpoints/latest))")
    res = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONHASHSEED": "0"})
    out = res.stdout.splitlines()
    errors = [x for x in res.stderr.splitlines() if x.startswith("llmrl: ")]
    assert out[0] == "rc=2" and "Read-only file system" in errors[0], res.stderr
    assert out[1] == "rc=2", res.stderr
    assert len(errors) == 2 and "No space left on device" in errors[1], res.stdout + res.stderr
    listing = "\n".join(out[2:])
    assert ".tmp" not in listing and ".latest_" not in listing, listing
    for name in ("model.safetensors", "optim.pt", "state.pt", "config.json"):
        assert name in out, listing


def test_quickstart_into_an_earlier_run_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "qs"
    (out / "checkpoints").mkdir(parents=True)
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1, "kind": "train"}) + "\n")
    assert main(["quickstart", "--output-dir", str(out), "--print-config"]) == 0
    capsys.readouterr()
    assert main(["quickstart", "--output-dir", str(out), "steps=0", "sft.steps=0"]) == 2
    assert "--overwrite" in one_line_error(capsys)


def test_resume_refuses_non_finite_weights_in_a_checkpoint(tmp_path, capsys):
    from safetensors.torch import save_file

    out = tmp_path / "run"
    assert train(tmp_path, out, "steps=2") == 0
    f = out / "checkpoints" / "step_000002" / "model.safetensors"
    weights = load_file(str(f))
    name = next(n for n in sorted(weights) if ".layers." in n)
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(f), metadata={"format": "pt"})
    assert train(tmp_path, out, "steps=4", "--resume") == 2
    msg = one_line_error(capsys)
    assert str(f) in msg and name in msg and "non-finite" in msg


class _Payload:
    """Pickles as a call that writes a marker file: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["model.safetensors", "optim.pt", "state.pt", "config.json"])
def test_pickle_payload_in_any_checkpoint_file_never_runs_on_resume(tmp_path, capsys, name):
    import torch

    out = tmp_path / "run"
    assert train(tmp_path, out, "steps=2") == 0
    capsys.readouterr()
    marker = tmp_path / "pwned"
    torch.save({"x": _Payload(marker)}, out / "checkpoints" / "step_000002" / name)
    assert train(tmp_path, out, "steps=4", "--resume") == 2
    msg = one_line_error(capsys)
    assert name in msg
    assert not marker.exists()
