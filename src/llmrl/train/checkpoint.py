"""Atomic checkpoints: model, optimizer, scheduler, RNG states, data position and step.

Layout: ``<dir>/step_000012/`` holds ``model.safetensors``, ``optim.pt``, ``state.pt`` and ``config.json`` (the
run's resolved config, checked on ``--resume``); ``optim.pt`` and ``state.pt`` hold tensors and plain data only
and are read with ``torch.load(weights_only=True)``, so a checkpoint cannot run code;
``<dir>/latest`` names the newest complete one. A checkpoint is written into a temporary directory,
flushed to disk, then renamed into place; ``latest`` is replaced atomically afterwards. A kill at any
moment therefore leaves ``latest`` pointing at a complete checkpoint (or absent); an error while writing (a full
disk) removes the temporary directory and leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model

from llmrl.core.errors import CheckpointError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def save_checkpoint(ckpt_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any], keep: int = 2,
                    extra_models: Mapping[str, torch.nn.Module] | None = None,
                    config: Mapping[str, Any] | None = None,
                    extra_optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> Path:
    """Write ``step``'s checkpoint atomically; ``extra_models`` (e.g. ``{"critic": critic}``) are saved as
    ``<name>.safetensors`` next to the model (their optimizer states belong in ``state``; under torchrun, the
    sharded extra models named in ``extra_optimizers`` go into the DCP checkpoint with those optimizers, and
    the other extra models are not saved); ``config`` (the run's
    resolved config as plain data) as ``config.json``. An OSError (a full disk, say) raises a CheckpointError
    naming the directory, after removing the partial one: the last good checkpoint stays ``latest``."""
    from llmrl.train.distributed import world

    if world() is not None:  # under torchrun: sharded, through torch.distributed.checkpoint
        from llmrl.train.dist_checkpoint import save_sharded

        return save_sharded(ckpt_dir, step, model, optimizer, scheduler, state, keep, config,
                            _sharded_extras(extra_models, extra_optimizers))
    root = Path(ckpt_dir)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}_{os.getpid()}"
    latest_tmp = root / f".latest_{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        st_save_model(model, str(tmp / "model.safetensors"))
        for name, extra in (extra_models or {}).items():
            st_save_model(extra, str(tmp / f"{name}.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
        torch.save({**state, "step": step}, tmp / "state.pt")
        if config is not None:
            (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        _publish(tmp, final, latest_tmp)
    except Exception as exc:  # OSError; torch and safetensors wrap write failures in their own errors
        shutil.rmtree(tmp, ignore_errors=True)
        latest_tmp.unlink(missing_ok=True)
        last = latest_checkpoint(root) if (root / "latest").is_file() else None
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0][:200]
        if not isinstance(exc, OSError) and _disk_full(root):  # torch reports it as "unexpected pos ..."
            why = f"No space left on device; {why}"
        raise CheckpointError(f"{final}: cannot write the checkpoint ({why}); the last good one "
                              f"({last or 'none'}) is intact") from None
    _prune(root, keep)
    return final


def _sharded_extras(models: Mapping[str, torch.nn.Module] | None,
                    optimizers: Mapping[str, torch.optim.Optimizer] | None) -> dict[str, Any]:
    """name → (model, optimizer) of the extra models that a torchrun checkpoint shards with their optimizer."""
    return {k: (models[k], opt) for k, opt in (optimizers or {}).items() if k in (models or {})}


def _publish(tmp: Path, final: Path, latest_tmp: Path) -> None:
    """Make the fully written ``tmp`` the checkpoint ``final`` and point ``latest`` at it, each step durable
    (fsync'd) and atomic (renames), so a crash leaves either the old ``latest`` or the new one complete."""
    root = final.parent
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    latest_tmp.write_text(final.name + "\n")
    with open(latest_tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(latest_tmp, root / "latest")
    _fsync_dir(root)


def _disk_full(path: Path, margin: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    latest = latest_checkpoint(root)
    for p in done[: max(0, len(done) - max(keep, 1))]:
        if latest is None or p != latest:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp_step_*"):  # leftovers of killed saves
        if not p.name.endswith(f"_{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    root = Path(ckpt_dir)
    ptr = root / "latest"
    if not ptr.is_file():
        return None
    path = root / ptr.read_text().strip()
    if not (path / "state.pt").is_file():
        raise CheckpointError(f"{ptr} points at {path}, which is not a complete checkpoint")
    return path


def checkpoint_config(path: str | Path) -> dict[str, Any] | None:
    """The resolved config a checkpoint was written under (``config.json``), or None for an older checkpoint."""
    f = Path(path) / "config.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{f}: unreadable ({exc})") from None


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, extra_models: Mapping[str, torch.nn.Module] | None = None,
                    extra_optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> dict[str, Any]:
    """Restore model/optimizer/scheduler (and ``extra_models``) in place; return the saved state dict (step,
    RNG, data...). Under torchrun: a sharded checkpoint (:mod:`llmrl.train.dist_checkpoint`)."""
    from llmrl.train import dist_checkpoint
    from llmrl.train.distributed import world

    if world() is not None:
        return dist_checkpoint.load_sharded(path, model, optimizer, scheduler,
                                            _sharded_extras(extra_models, extra_optimizers))
    dist_checkpoint.refuse_sharded(path)
    p = Path(path)
    missing, unexpected = _load_weights(model, p / "model.safetensors")
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise CheckpointError(f"{p}: checkpoint does not match the model (missing={missing}, unexpected={unexpected})")
    _check_finite(model, p / "model.safetensors")
    for name, extra in (extra_models or {}).items():
        f = p / f"{name}.safetensors"
        if not f.is_file():
            raise CheckpointError(f"{p}: checkpoint has no {f.name} (was it written by a run without a {name}?)")
        missing, unexpected = _load_weights(extra, f)
        if missing or unexpected:
            raise CheckpointError(f"{f}: does not match the {name} (missing={missing}, unexpected={unexpected})")
        _check_finite(extra, f)
    optim = _load_data(p / "optim.pt")
    optimizer.load_state_dict(optim["optimizer"])
    scheduler.load_state_dict(optim["scheduler"])
    return _load_data(p / "state.pt")


def _load_weights(model: torch.nn.Module, path: Path) -> tuple[list[str], list[str]]:
    """safetensors into ``model`` (never pickle); an unreadable or corrupt file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (an incomplete checkpoint)")
    try:
        missing, unexpected = st_load_model(model, str(path), strict=False)
    except Exception as exc:  # safetensors' own error type for a bad header / truncated data; shape mismatches
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file for this model ({first})") from None
    return list(missing), list(unexpected)


def _check_finite(model: torch.nn.Module, source: Path) -> None:
    """A checkpoint never holds non-finite weights (such updates are skipped): any is a CheckpointError."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{source}: tensor {name!r} has {bad} non-finite value(s); the checkpoint is "
                                  f"corrupt")


def _load_data(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never pickled objects (a checkpoint
    someone hands you cannot run code); anything else is a CheckpointError naming the file."""
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # optimizer states move to their params
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (an incomplete checkpoint)") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused: it holds something other than tensors and plain data, or is "
                              f"corrupt ({first[:200]}); llmrl never unpickles objects from a checkpoint") from None
