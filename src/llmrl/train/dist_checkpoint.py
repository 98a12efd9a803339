"""Sharded checkpoints of a data-parallel (torchrun) run, through ``torch.distributed.checkpoint`` (DCP).

Layout: ``<dir>/step_000012/`` holds ``dcp/`` (DCP: ``.metadata`` plus one ``__<rank>_0.distcp`` per rank:
each rank writes its own shards of the policy's weights and AdamW states; tensors only), ``optim.pt`` (the
optimizer's param groups and the scheduler: plain data), ``state.pt`` (step, data position, RNG, ...; plus
``world_size``) and ``config.json``, exactly like a single-process checkpoint otherwise. ``latest`` names
the newest complete one. Atomic as :func:`llmrl.train.checkpoint.save_checkpoint`: every rank writes into
one temporary directory, rank 0 renames it into place once DCP has finished (its metadata is written last,
after every rank's data) and then replaces ``latest``.

No pickle of foreign code: the DCP part holds tensors only, and its ``.metadata`` (a pickle) is read by an
unpickler that accepts only DCP's own metadata classes, ``torch.Size``, dtypes and paths (:class:`SafeReader`),
which also refuses metadata declaring any byte-stream item (DCP would unpickle such an item's data unrestricted). ``optim.pt`` / ``state.pt``
are read with ``torch.load(weights_only=True)`` as before.

Other trained models of the run (the PPO critic: ``extras``, name → (FSDP model, optimizer)) are saved the
same way beside the policy, as ``<name>/model`` and ``<name>/optim`` in the DCP state and their param groups
in ``optim.pt``.

Resuming on another world size works: DCP reshards the saved tensors to the new FSDP layout, and the data
state is global (every rank draws the same stream). A single-process checkpoint is refused under torchrun,
and a torchrun checkpoint is refused in one process, each with a one-line message.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter

from llmrl.core.errors import CheckpointError

_ALLOWED = {
    ("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "Path"),
    ("pathlib", "WindowsPath"), ("collections", "OrderedDict"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or module == "torch.distributed.checkpoint.metadata":
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"DCP metadata refers to {module}.{name}, which a checkpoint may not hold")


class SafeReader(FileSystemReader):
    """DCP's file reader, with its ``.metadata`` pickle read by a restricted unpickler (no foreign code)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        from torch.distributed.checkpoint.metadata import StorageMeta

        path = self._get_metadata_path(kwargs.get("rank"))
        try:
            with self.fs.create_stream(path, "rb") as fh:
                metadata = _MetadataUnpickler(fh).load()
        except (pickle.UnpicklingError, EOFError, AttributeError) as exc:
            raise CheckpointError(f"{path}: refused: {exc}") from None
        from torch.distributed.checkpoint.metadata import BytesStorageMetadata

        items = getattr(metadata, "state_dict_metadata", {})
        if bytes_items := [k for k, v in items.items() if isinstance(v, BytesStorageMetadata)]:
            raise CheckpointError(f"{path}: refused: byte-stream items {bytes_items[:3]} (a checkpoint holds tensors "
                                  "only; DCP would unpickle them)")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


Extras = Mapping[str, tuple[torch.nn.Module, torch.optim.Optimizer]]
"""Other sharded models of a run with their optimizers, by name (``{"critic": (critic, its AdamW)}``)."""


def _tensor_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  extras: Extras | None = None) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(``{"model": ..., "optim": ..., "<name>/model": ..., "<name>/optim": ...}`` tensors only, each
    optimizer's param groups (plain data) by ``""`` for the policy and the extras' names)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tensors, groups = {}, {}
    for name, (m, opt) in {"": (model, optimizer), **(extras or {})}.items():
        msd, osd = get_state_dict(m, opt)
        prefix = f"{name}/" if name else ""
        tensors[f"{prefix}model"], tensors[f"{prefix}optim"], groups[name] = msd, osd["state"], osd["param_groups"]
    return tensors, groups


def save_sharded(ckpt_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, state: dict[str, Any], keep: int = 2,
                 config: Mapping[str, Any] | None = None, extras: Extras | None = None) -> Path:
    """Write ``step``'s sharded checkpoint (every rank calls it; collective); returns its path."""
    from llmrl.train.checkpoint import _prune, _publish

    root = Path(ckpt_dir)
    final, tmp = root / f"step_{step:06d}", root / f".tmp_step_{step:06d}_dcp"
    latest_tmp = root / f".latest_{os.getpid()}"
    main = dist.get_rank() == 0
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    tensors, groups = _tensor_state(model, optimizer, extras)
    dcp.save(tensors, storage_writer=FileSystemWriter(tmp / "dcp"))  # returns once every rank's data is written
    if main:
        try:
            torch.save({"param_groups": groups.pop(""), "scheduler": scheduler.state_dict(),
                        **({"extra_param_groups": groups} if groups else {})}, tmp / "optim.pt")
            torch.save({**state, "step": step, "world_size": dist.get_world_size()}, tmp / "state.pt")
            if config is not None:
                (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
            _publish(tmp, final, latest_tmp)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            latest_tmp.unlink(missing_ok=True)
            raise CheckpointError(f"{final}: cannot write the checkpoint ({exc.strerror or exc}); the last good "
                                  f"one is intact") from None
        _prune(root, keep)
    dist.barrier()
    return final


def is_sharded(path: str | Path) -> bool:
    return (Path(path) / "dcp").is_dir()


def load_sharded(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, extras: Extras | None = None) -> dict[str, Any]:
    """Restore a sharded checkpoint into the FSDP ``model`` and its optimizer (and ``extras``; every rank;
    collective), on any world size; returns the saved state (step, RNG, data...)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from llmrl.train.checkpoint import _load_data

    p = Path(path)
    if not is_sharded(p):
        raise CheckpointError(f"{p}: a single-process checkpoint; resume it without torchrun (llmrl train "
                              f"--resume, no --nproc)")
    state = _load_data(p / "state.pt")
    meta = _load_data(p / "optim.pt")
    tensors, _ = _tensor_state(model, optimizer, extras)
    saved_groups = {"": meta["param_groups"], **meta.get("extra_param_groups", {})}
    if missing := sorted(set(extras or {}) - set(saved_groups)):
        raise CheckpointError(f"{p}: holds no {', '.join(missing)} (written by a run without it); start afresh")
    try:
        dcp.load(tensors, storage_reader=SafeReader(p / "dcp"))
    except CheckpointError:
        raise
    except Exception as exc:  # a missing shard, a shape that does not match this model
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{p / 'dcp'}: cannot load the sharded checkpoint into this model ({first})") from None
    for name, (m, opt) in {"": (model, optimizer), **(extras or {})}.items():
        prefix = f"{name}/" if name else ""
        set_state_dict(m, opt, model_state_dict=tensors[f"{prefix}model"],
                       optim_state_dict={"state": tensors[f"{prefix}optim"], "param_groups": saved_groups[name]})
    scheduler.load_state_dict(meta["scheduler"])
    return state


def refuse_sharded(path: str | Path) -> None:
    """A one-line CheckpointError when a single process is asked to resume a torchrun (sharded) checkpoint."""
    p = Path(path)
    if is_sharded(p):
        from llmrl.train.checkpoint import _load_data

        n = _load_data(p / "state.pt").get("world_size", "several")
        raise CheckpointError(f"{p}: a sharded checkpoint written by {n} torchrun ranks; resume it under torchrun "
                              f"(llmrl train --nproc N --resume, any N that divides rollout.prompts_per_step)")


__all__ = ["Extras", "SafeReader", "is_sharded", "load_sharded", "refuse_sharded", "save_sharded"]
