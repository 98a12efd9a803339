"""Where a run's metrics go besides ``metrics.jsonl``: one :class:`Tracker` interface with TensorBoard, Weights &
Biases and MLflow behind it, chosen by the ``logging`` config section (:func:`open_trackers`).

wandb and mlflow are imported only when enabled (``llmrl tasks list`` and runs without them never load them); a
missing package is a one-line :class:`~llmrl.core.errors.ConfigError` naming the key and
``pip install 'llmrl[trackers]'``. Each W&B / MLflow run gets the resolved config (``to_dict(cfg)``): W&B as the
run's config, MLflow as params with dotted keys.

Resuming (``--resume``): the run ids are kept in ``<output_dir>/trackers.json``, and

* TensorBoard purges the events past the checkpoint's step (``purge_step``) and takes the recomputed steps;
* W&B continues the same run id (``resume="allow"``). Online the server appends to the run; offline each
  invocation writes its own ``wandb/offline-run-*-ID`` directory and ``wandb sync`` uploads them in order as one
  run;
* MLflow continues the same run id (status RUNNING again, FINISHED at the end); params it already holds keep
  their first value (MLflow forbids changing one), a resumable key that changed (``steps``...) is recorded as the
  tag ``llmrl.resumed.KEY``. Metric names are :func:`mlflow_key`'s (``eval/pass@1`` -> ``eval/pass_at_1``).

Neither W&B nor MLflow can delete a logged point, so records an earlier invocation sent past the checkpoint it is
resumed from (a run killed between checkpoints) are not sent again: those steps keep the values the killed
invocation logged there (``metrics.jsonl`` and TensorBoard hold the recomputed ones; with the RNG states restored
they are normally equal), and no step is logged twice. A backend run that is new on a resumed run (the tracker
was just enabled, or ``trackers.json`` was lost) first gets the records ``metrics.jsonl`` kept.

A tracker that fails in the middle of a run (a tracking server gone) warns once and is dropped for the rest of
the run; training goes on. Only the training process writes to W&B / MLflow (environment ``RANK`` unset or 0).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import string
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from llmrl.core.config import to_dict
from llmrl.core.errors import ConfigError

TRACKERS_FILE = "trackers.json"
"""The run ids of a run's W&B / MLflow runs, in its output directory (``--resume`` continues them)."""

INSTALL = "pip install 'llmrl[trackers]'"


class Tracker(Protocol):
    """A place metrics are mirrored to. ``log`` gets the finite scalars of one record, keyed without the
    ``kind`` prefix; the tracker names them ``kind/key`` (``train/reward``, ``eval/accuracy``)."""

    name: str  # its config key, for messages: logging.wandb
    fresh: bool  # a backend run nothing was logged to before (a resumed llmrl run replays its kept records)
    purges: bool  # drops by itself what was logged past a resumed run's checkpoint (TensorBoard's purge_step)

    def log(self, step: int, kind: str, scalars: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def _require(module: str, key: str) -> Any:
    """Import ``module`` for the tracker enabled by ``key``; missing: a one-line ConfigError."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{key}.enabled: the {module} package is not installed; {INSTALL}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def is_main_process() -> bool:
    """The process that writes to W&B / MLflow: rank 0 of a launcher that sets ``RANK``, or the only one."""
    return os.environ.get("RANK", "0") in ("", "0")


def check_trackers(logging_cfg: Any) -> None:
    """Import the packages of the enabled W&B / MLflow trackers (ConfigError naming the key when one is missing),
    before anything of the run is written."""
    if not is_main_process():
        return
    if logging_cfg.wandb.enabled:
        _require("wandb", "logging.wandb")
    if logging_cfg.mlflow.enabled:
        _require("mlflow", "logging.mlflow")


# -- the backends -------------------------------------------------------------------------------------------
class TensorBoardTracker:
    """Event files in ``<out>/tb`` (``torch.utils.tensorboard``); a resumed run purges the steps past the
    checkpoint."""

    name = "logging.tensorboard"
    purges = True

    def __init__(self, out: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        tb = out / "tb"
        self.fresh = resume_step is None or not any(tb.glob("events.out.tfevents.*"))
        self._writer = SummaryWriter(str(tb), purge_step=resume_step + 1 if resume_step else None)

    def log(self, step: int, kind: str, scalars: Mapping[str, float]) -> None:
        for k, v in scalars.items():
            self._writer.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        self._writer.close()


_OPEN: dict[str, Any] = {}  # "backend:run id" -> a W&B / MLflow tracker not closed yet (this process)


def _close_stale(key: str) -> None:
    """Before run ``key`` is opened: a writer of it left open in this process (its loop stopped by an exception
    before ``close``, then resumed here) is closed, as abandoned (W&B refuses a run id open twice)."""
    stale = _OPEN.pop(key, None)
    if stale is not None:
        stale.close(abandoned=True)


@atexit.register
def _close_abandoned() -> None:
    """At exit, runs whose loop never reached ``close`` (interrupted, crashed) are closed as abandoned (MLflow:
    status KILLED)."""
    for tracker in list(_OPEN.values()):
        try:
            tracker.close(abandoned=True)
        except Exception:  # the process is ending; a tracking server may be gone
            pass


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


class WandbTracker:
    """A Weights & Biases run: the metrics at ``step=step``, the resolved config as the run's config."""

    name = "logging.wandb"
    purges = False

    def __init__(self, wcfg: Any, config: dict[str, Any], out: Path, run_id: str | None) -> None:
        wandb = _require("wandb", self.name)
        self.fresh = run_id is None
        self.id: str = run_id or "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        self.dir = where = wcfg.dir or os.environ.get("WANDB_DIR") or str(out)  # it writes where/wandb/
        Path(where).mkdir(parents=True, exist_ok=True)
        # "create_new": a run of the caller's own in this process stays theirs (older wandb: finish it)
        reinit: Any = "create_new" if _version(wandb.__version__) >= (0, 19, 10) else True
        _close_stale(f"wandb:{self.id}")
        try:
            self.run = wandb.init(project=wcfg.project, entity=wcfg.entity, name=wcfg.name or out.resolve().name,
                                  id=self.id, resume="allow", mode=wcfg.mode, dir=where, config=config,
                                  allow_val_change=True, reinit=reinit, settings=wandb.Settings(console="off"))
        except Exception as exc:
            raise ConfigError(f"{self.name}: wandb.init failed: {_first_line(exc)}") from exc
        _OPEN[f"wandb:{self.id}"] = self

    def log(self, step: int, kind: str, scalars: Mapping[str, float]) -> None:
        self.run.log({f"{kind}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self, abandoned: bool = False) -> None:
        if _OPEN.get(f"wandb:{self.id}") is self:
            del _OPEN[f"wandb:{self.id}"]
        self.run.finish(exit_code=1 if abandoned else 0)


_MLFLOW_BAD = re.compile(r"[^\w.\- ]")


def mlflow_key(kind: str, key: str) -> str:
    """The MLflow name of metric ``key`` of a ``kind`` record: ``kind/key`` with the key's own ``/`` as ``.`` (the
    file store keeps a name as a path, so ``train/reward`` and ``train/reward/a_rate`` could not both exist),
    ``@`` as ``_at_`` and any other character MLflow refuses on some OS as ``_``: ``eval/pass@1`` ->
    ``eval/pass_at_1``, ``train/reward/a_rate`` -> ``train/reward.a_rate``."""
    return f"{kind}/" + _MLFLOW_BAD.sub("_", key.replace("/", ".").replace("@", "_at_"))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for k, v in tree.items():
        if isinstance(v, Mapping) and v:
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v if isinstance(v, str) else json.dumps(v)


def default_tracking_uri(out: Path) -> str:
    return (out / "mlruns").resolve().as_uri()


class MlflowTracker:
    """An MLflow run (``MlflowClient``, no global active run): the metrics with their step, the resolved config as
    params."""

    name = "logging.mlflow"
    purges = False

    def __init__(self, mcfg: Any, config: dict[str, Any], out: Path, stored: Mapping[str, Any] | None) -> None:
        self.uri = mcfg.tracking_uri or default_tracking_uri(out)
        if "://" not in self.uri or self.uri.startswith("file:"):
            # a local file store: MLflow >= 3.7 refuses it unless asked for (sqlite needs the full mlflow package)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        _require("mlflow", self.name)
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        self._metric = Metric
        try:
            self.client = MlflowClient(self.uri)
            run_id = stored.get("run_id") if stored and stored.get("tracking_uri") == self.uri else None
            held: dict[str, str] | None = None
            if run_id is not None:
                try:
                    held = dict(self.client.get_run(run_id).data.params)
                except Exception:  # the store was deleted or moved: start a new run (replayed from metrics.jsonl)
                    run_id = None
            self.fresh = run_id is None
            if run_id is None:
                exp = self.client.get_experiment_by_name(mcfg.experiment)
                eid = exp.experiment_id if exp is not None else self.client.create_experiment(mcfg.experiment)
                run_id = self.client.create_run(eid, run_name=mcfg.run_name or out.resolve().name,
                                                tags={"llmrl.output_dir": str(out.resolve())}).info.run_id
            else:
                _close_stale(f"mlflow:{run_id}")
                self.client.update_run(run_id, status="RUNNING")
            self.run_id: str = run_id
            self.experiment_id: str = self.client.get_run(run_id).info.experiment_id
            params = {k: v[:MAX_PARAM_VAL_LENGTH] for k, v in _flatten(config)}
            held = held or {}
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items() if k not in held],
                                  tags=[RunTag(f"llmrl.resumed.{k}", v) for k, v in params.items()
                                        if k in held and held[k] != v])
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{self.name}: tracking_uri {self.uri}: {_first_line(exc)}") from exc
        _OPEN[f"mlflow:{self.run_id}"] = self

    def log(self, step: int, kind: str, scalars: Mapping[str, float]) -> None:
        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(mlflow_key(kind, k), v, ts, step)
                                                    for k, v in scalars.items()])

    def close(self, abandoned: bool = False) -> None:
        if _OPEN.get(f"mlflow:{self.run_id}") is self:
            del _OPEN[f"mlflow:{self.run_id}"]
        self.client.set_terminated(self.run_id, "KILLED" if abandoned else "FINISHED")


# -- choosing them ------------------------------------------------------------------------------------------
def read_tracker_ids(out: str | Path) -> dict[str, Any]:
    """The contents of ``<out>/trackers.json`` ({} when absent or unreadable)."""
    try:
        data = json.loads((Path(out) / TRACKERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_tracker_ids(out: Path, ids: dict[str, Any]) -> None:
    tmp = out / f"{TRACKERS_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(ids, indent=2) + "\n")
    os.replace(tmp, out / TRACKERS_FILE)


def open_trackers(cfg: Any, out: str | Path, resume_step: int | None) -> list[Tracker]:
    """The trackers ``cfg.logging`` enables, opened; a resumed run (``resume_step`` set) continues the W&B /
    MLflow runs named in ``trackers.json``, a fresh one starts new runs and records their ids there. TensorBoard
    that cannot start (package missing) is left out, as before: ``metrics.jsonl`` still works."""
    out = Path(out)
    lc = cfg.logging
    trackers: list[Tracker] = []
    if lc.tensorboard:
        try:
            trackers.append(TensorBoardTracker(out, resume_step))
        except Exception:
            pass
    if not (lc.wandb.enabled or lc.mlflow.enabled) or not is_main_process():
        return trackers
    check_trackers(lc)
    ids = read_tracker_ids(out) if resume_step is not None else {}
    config = to_dict(cfg)
    opened: list[Any] = []
    try:
        if lc.wandb.enabled:
            wb = WandbTracker(lc.wandb, config, out, ids.get("wandb", {}).get("id"))
            opened.append(wb)
            ids["wandb"] = {"id": wb.id, "project": lc.wandb.project, "entity": lc.wandb.entity,
                            "mode": lc.wandb.mode, "dir": wb.dir}
        if lc.mlflow.enabled:
            ml = MlflowTracker(lc.mlflow, config, out, ids.get("mlflow"))
            opened.append(ml)
            ids["mlflow"] = {"run_id": ml.run_id, "experiment_id": ml.experiment_id, "tracking_uri": ml.uri}
        _write_tracker_ids(out, ids)
    except BaseException:
        for t in trackers:
            t.close()
        for t in opened:
            t.close(abandoned=True)
        raise
    return [*trackers, *opened]


__all__ = ["INSTALL", "TRACKERS_FILE", "MlflowTracker", "TensorBoardTracker", "Tracker", "WandbTracker",
           "check_trackers", "default_tracking_uri", "is_main_process", "mlflow_key", "open_trackers",
           "read_tracker_ids"]
