"""W&B and MLflow behind the one tracker interface: a tiny RL run logs to both (W&B offline, MLflow in a local file
store) and reading them back gives the values of metrics.jsonl; --resume continues the same runs without logging
a step twice (also after a kill between checkpoints); a missing package is a one-line error; nothing imports the
trackers unless they are enabled; no test touches the network."""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY

from llmrl.cli.main import main
from llmrl.train.metrics import MetricsLogger, read_metrics
from llmrl.train.rundir import claim_output
from llmrl.train.trackers import TRACKERS_FILE, mlflow_key, read_tracker_ids

RUN = [*TINY, "task.name=test_char_a", "optim.lr=1e-3", "eval.every=2", "logging.wandb.enabled=true",
       "logging.mlflow.enabled=true"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """W&B offline with every directory of its own under tmp_path, no MLflow server from the environment, and any
    connection from this process to an address other than this machine fails the test."""
    for var, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_DIR", tmp_path / "wandb_dir"),
                       ("WANDB_CONFIG_DIR", tmp_path / "wandb_config"), ("WANDB_CACHE_DIR", tmp_path / "wandb_cache"),
                       ("WANDB_DATA_DIR", tmp_path / "wandb_data"), ("WANDB_BASE_URL", "http://127.0.0.1:9")):
        monkeypatch.setenv(var, str(value))
    for var in ("MLFLOW_TRACKING_URI", "WANDB_API_KEY", "RANK"):
        monkeypatch.delenv(var, raising=False)
    connect = socket.socket.connect

    def local_only(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        assert host is None or host in ("127.0.0.1", "::1", "localhost"), f"network access to {address}"
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    return tmp_path


def train(tmp_path: Path, out: Path, *extra: str) -> int:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 3\n")
    return main(["train", str(recipe), *RUN, f"output_dir={out}", *extra])


# -- reading the backends back ------------------------------------------------------------------------------
def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``.wandb`` run file (wandb 0.31 has no Python reader): a 7-byte header
    (``:W&B``, 0xBEE1, version 0), then LevelDB-log blocks of 32 KiB whose chunks (crc32c, length, type) carry
    the serialized ``Record`` messages, a record split over blocks as FIRST / MIDDLE / LAST chunks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0), data[:7]
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = pb.Record()
            rec.ParseFromString(pending)
            pending = b""
            yield rec


def wandb_history(wandb_dir: Path, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(history rows of every offline file of run ``run_id``, in the order written, with ``_step``; the config
    of each file's run record) — a resumed run writes one directory per invocation: ``offline-run-STAMP-ID``,
    ``STAMP`` the second it started, ``-N`` appended when that directory exists already."""
    named = re.compile(rf"offline-run-(\d{{8}}_\d{{6}})-{run_id}(?:-(\d+))?")
    dirs = [(m[1], int(m[2] or 0), d) for d in (wandb_dir / "wandb").iterdir() if (m := named.fullmatch(d.name))]
    files = [d / f"run-{run_id}.wandb" for _, _, d in sorted(dirs)]
    assert files, list(wandb_dir.rglob("*"))
    rows, config = [], []
    for f in files:
        # wandb 0.31 offline: run.finish() returns before wandb-core has flushed the file (at the latest when the
        # process exits); it is complete once it holds the run's exit record
        deadline = time.monotonic() + 60
        while not any(r.HasField("exit") for r in wandb_records(f)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for rec in wandb_records(f):
            if rec.HasField("history"):
                rows.append({i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                            | {"_step": rec.history.step.num})
            elif rec.HasField("run"):  # the run's config as wandb.init got it
                config.append({i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in rec.run.config.update})
    return rows, config


def mlflow_series(out: Path, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    ids = read_tracker_ids(out)["mlflow"]
    history = MlflowClient(ids["tracking_uri"]).get_metric_history(ids["run_id"], key)
    return sorted((m.step, m.value) for m in history)


def jsonl_series(out: Path, kind: str, key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in read_metrics(out / "metrics.jsonl", kind)]


# -- the runs -----------------------------------------------------------------------------------------------
def test_a_run_logs_to_wandb_and_mlflow_what_metrics_jsonl_holds(offline):
    from mlflow.tracking import MlflowClient

    out = offline / "run"
    assert train(offline, out, "steps=3") == 0
    ids = read_tracker_ids(out)
    assert set(ids) == {"wandb", "mlflow"} and ids["wandb"]["mode"] == "offline"
    assert ids["mlflow"]["tracking_uri"] == (out / "mlruns").resolve().as_uri()  # the default: under output_dir
    train_reward = jsonl_series(out, "train", "reward")
    assert [s for s, _ in train_reward] == [1, 2, 3] and len({v for _, v in train_reward}) > 1

    # MLflow: every train and eval metric, at its step, once; the resolved config as params; the run finished
    assert mlflow_series(out, "train/reward") == train_reward
    assert mlflow_series(out, "train/loss") == jsonl_series(out, "train", "loss")
    assert mlflow_series(out, mlflow_key("eval", "pass@1")) == jsonl_series(out, "eval", "pass@1")
    assert [s for s, _ in mlflow_series(out, "eval/accuracy")] == [0, 2, 3]
    run = MlflowClient(ids["mlflow"]["tracking_uri"]).get_run(ids["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["task.name"] == "test_char_a" and run.data.params["rollout.prompts_per_step"] == "4"
    assert run.data.params["logging.mlflow.enabled"] == "true" and run.data.params["eval.pass_k"] == "[1, 2]"

    # W&B offline: the .wandb file under $WANDB_DIR (logging.wandb.dir null) holds the same series
    rows, config = wandb_history(offline / "wandb_dir", ids["wandb"]["id"])
    assert [(r["_step"], r["train/reward"]) for r in rows if "train/reward" in r] == train_reward
    assert [(r["_step"], r["eval/pass@1"]) for r in rows if "eval/pass@1" in r] == jsonl_series(out, "eval", "pass@1")
    assert sorted(r["_step"] for r in rows) == [0, 1, 2, 3]  # train and eval of a step are one row
    assert config and config[0]["task"]["name"] == "test_char_a" and config[0]["steps"] == 3
    assert not (out / "wandb").exists()


def test_resume_continues_the_same_runs_and_logs_no_step_twice(offline):
    from mlflow.tracking import MlflowClient

    out = offline / "run"
    wandb_dir = f"logging.wandb.dir={out}"  # W&B under output_dir (so --overwrite removes it too)
    assert train(offline, out, "steps=2", wandb_dir) == 0
    first = read_tracker_ids(out)
    assert train(offline, out, "steps=4", wandb_dir, "--resume") == 0
    assert read_tracker_ids(out) == first  # the same W&B and MLflow runs
    expected = jsonl_series(out, "train", "reward")
    assert [s for s, _ in expected] == [1, 2, 3, 4]
    assert mlflow_series(out, "train/reward") == expected
    assert [s for s, _ in mlflow_series(out, "eval/reward")] == [0, 2, 4]
    client = MlflowClient(first["mlflow"]["tracking_uri"])
    run = client.get_run(first["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["steps"] == "2" and run.data.tags["llmrl.resumed.steps"] == "4"
    assert len(client.search_runs([first["mlflow"]["experiment_id"]])) == 1
    rows, _ = wandb_history(out, first["wandb"]["id"])
    assert len(list(out.glob("wandb/offline-run-*"))) == 2  # one per invocation, one run id: synced as one run
    assert [(r["_step"], r["train/reward"]) for r in rows if "train/reward" in r] == expected
    assert [r["_step"] for r in rows] == [0, 1, 2, 3, 4]

    # a run killed after logging steps 3 and 4 but before checkpointing them: resume from step 2 recomputes
    # them; MLflow and W&B are not sent them again (JSONL and TensorBoard take the recomputed records)
    ckpts = out / "checkpoints"
    shutil.rmtree(ckpts / "step_000004")
    (ckpts / "latest").write_text("step_000002\n")
    assert train(offline, out, "steps=4", wandb_dir, "--resume") == 0
    assert [s for s, _ in jsonl_series(out, "train", "reward")] == [1, 2, 3, 4]
    assert [s for s, _ in mlflow_series(out, "train/reward")] == [1, 2, 3, 4]
    assert [s for s, _ in mlflow_series(out, "eval/reward")] == [0, 2, 4]
    assert mlflow_series(out, "train/reward") == jsonl_series(out, "train", "reward")  # resume is exact
    rows, _ = wandb_history(out, first["wandb"]["id"])
    assert [r["_step"] for r in rows] == [0, 1, 2, 3, 4]
    assert client.get_run(first["mlflow"]["run_id"]).info.status == "FINISHED"


def test_runs_left_open_by_an_exception_are_closed_when_resumed_in_the_same_process(offline):
    from mlflow.tracking import MlflowClient

    from llmrl.config import load_config
    from llmrl.train.trackers import open_trackers

    out = offline / "run"
    cfg = load_config(None, [f"output_dir={out}", "logging.tensorboard=false", "logging.wandb.enabled=true",
                             "logging.mlflow.enabled=true"])
    first = open_trackers(cfg, out, None)  # its loop raised: never closed
    for t in first:
        t.log(1, "train", {"reward": 1.0})
    again = open_trackers(cfg, out, 1)  # W&B refuses a run id open twice: the first ones are closed first
    assert [t.fresh for t in again] == [False, False]
    for t in again:
        t.log(2, "train", {"reward": 2.0})
        t.close()
    ids = read_tracker_ids(out)
    assert mlflow_series(out, "train/reward") == [(1, 1.0), (2, 2.0)]
    assert MlflowClient(ids["mlflow"]["tracking_uri"]).get_run(ids["mlflow"]["run_id"]).info.status == "FINISHED"
    rows, _ = wandb_history(offline / "wandb_dir", ids["wandb"]["id"])
    assert [(r["_step"], r["train/reward"]) for r in rows] == [(1, 1.0), (2, 2.0)]


@pytest.mark.parametrize("package", ["wandb", "mlflow"])
def test_a_missing_package_is_a_one_line_error_naming_the_key_and_the_extra(offline, monkeypatch, capsys, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    out = offline / "run"
    recipe = offline / "r.yaml"
    recipe.write_text("seed: 0\n")
    assert main(["train", str(recipe), *TINY, "steps=1", f"output_dir={out}", f"logging.{package}.enabled=true"]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("llmrl: ")]
    assert err == [f"llmrl: error: logging.{package}.enabled: the {package} package is not installed; "
                   f"pip install 'llmrl[trackers]'"]
    assert not (out / "config.yaml").exists() and not (out / TRACKERS_FILE).exists()


def test_the_trackers_are_imported_only_when_enabled():
    code = ("import sys\n"
            "from llmrl.cli.main import main\n"
            "rc = main(['tasks', 'list'])\n"
            "import llmrl.train.guard, llmrl.train.trackers, llmrl.train.config\n"
            "print('LOADED', [m for m in ('wandb', 'mlflow') if m in sys.modules], rc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "LOADED [] 0"


# -- the logger's resume rules, with recording trackers -----------------------------------------------------
class Recorder:
    def __init__(self, name: str, fresh: bool, purges: bool, fail_at: int | None = None) -> None:
        self.name, self.fresh, self.purges, self.fail_at = name, fresh, purges, fail_at
        self.got: list[tuple[int, str, dict[str, float]]] = []
        self.closed = False

    def log(self, step: int, kind: str, scalars: dict[str, float]) -> None:
        if step == self.fail_at:
            raise ConnectionError("tracking server gone")
        self.got.append((step, kind, dict(scalars)))

    def close(self) -> None:
        self.closed = True


def test_resumed_logger_skips_what_a_tracker_already_has_and_replays_into_a_new_one(tmp_path):
    first = MetricsLogger(tmp_path, trackers=[])
    first.log(0, {"accuracy": 0.1}, kind="eval")
    for step in range(1, 5):  # steps 3 and 4 logged, then killed before their checkpoint
        first.log(step, {"reward": float(step), "bad": float("nan")})
    first.close()
    cont, new, tb = Recorder("cont", False, False), Recorder("new", True, False), Recorder("tb", False, True)
    log = MetricsLogger(tmp_path, resume_step=2, trackers=[cont, new, tb])
    assert [(s, k) for s, k, _ in new.got] == [(0, "eval"), (1, "train"), (2, "train")]  # the kept records
    assert new.got[1][2] == {"reward": 1.0}  # finite scalars only, without step and kind
    assert cont.got == [] and tb.got == []
    for step in (3, 4, 5):
        log.log(step, {"reward": 10.0 * step})
    log.log(5, {"accuracy": 0.5}, kind="eval")
    assert [s for s, _, _ in cont.got] == [5, 5]  # 3 and 4 are already in that backend
    assert [s for s, _, _ in tb.got] == [3, 4, 5, 5]  # TensorBoard purged them and takes the new ones
    assert [s for s, _, _ in new.got] == [0, 1, 2, 3, 4, 5, 5]
    log.close()
    assert cont.closed and new.closed and tb.closed and log.trackers == []
    assert [r["reward"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")] == [1.0, 2.0, 30.0, 40.0, 50.0]


def test_a_failing_tracker_warns_once_and_the_run_goes_on(tmp_path):
    bad, good = Recorder("logging.mlflow", True, False, fail_at=2), Recorder("ok", True, False)
    log = MetricsLogger(tmp_path, trackers=[bad, good])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, 5):
            log.log(step, {"reward": 1.0})
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and msgs[0].startswith("logging.mlflow: logging step 2 failed (ConnectionError")
    assert [s for s, _, _ in bad.got] == [1] and bad.closed and log.trackers == [good]
    assert [s for s, _, _ in good.got] == [1, 2, 3, 4]
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 4


def test_mlflow_keys_and_overwrite_removes_the_tracker_outputs(tmp_path):
    assert mlflow_key("eval", "pass@4") == "eval/pass_at_4" and mlflow_key("train", "reward") == "train/reward"
    assert mlflow_key("train", "reward/a_rate") == "train/reward.a_rate"  # beside train/reward in a file store
    assert mlflow_key("train", "time (s)") == "train/time _s_"
    out = tmp_path / "run"
    for name in ("wandb", "mlruns"):
        (out / name).mkdir(parents=True)
    (out / TRACKERS_FILE).write_text("{}")
    (out / "notes.txt").write_text("mine")
    claim_output(out, overwrite=True).release()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
