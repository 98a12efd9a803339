"""Shared helpers of the ``benchmarks/fidelity_*.py`` scripts: load a reward module as it was at an
earlier commit (the "before" column), time a call, and print a before/after table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "f955409"  # main before the reward-fidelity work


def use_source_tree() -> None:
    """Import ``llmrl`` from this checkout's ``src`` (before any installed copy)."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)


def module_at(rev: str, relpath: str) -> ModuleType:
    """The module at ``relpath`` (e.g. ``src/llmrl/rewards/swe.py``) as committed at ``rev``, loaded
    under a private name; its own ``llmrl`` imports resolve to the current tree."""
    use_source_tree()
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{relpath}"], check=True, capture_output=True, text=True
    ).stdout
    name = "_before_" + relpath.replace("/", "_").removesuffix(".py") + "_" + rev
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = f"{rev}:{relpath}"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def module_from_path(path: str | Path, name: str) -> ModuleType:
    """A reference implementation loaded from a user-supplied checkout (never copied into llmrl)."""
    spec = importlib.util.spec_from_file_location(name, str(path))
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def seconds(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain fixed-width table (first column left-aligned)."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths))))
    for r in rows:
        cells = [_fmt(r.get(c)) for c in columns]
        print("  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(cells, widths))))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)
