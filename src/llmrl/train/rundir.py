"""The run directory: created with the resolved config in it, and directories written atomically."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from llmrl.core.config import to_dict


def prepare_output(cfg: Any) -> Path:
    """Create ``cfg.output_dir``, write the resolved ``config.yaml`` into it and apply ``cfg.threads``."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return out


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write into; on success it replaces ``path`` by a rename,
    so ``path`` is never half written (a crash leaves the old directory, or none, plus a ``.tmp`` one)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


__all__ = ["atomic_dir", "prepare_output"]
