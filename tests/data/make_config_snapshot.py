"""Regenerate tests/data/config_snapshot.json: every shipped recipe's resolved values, and the defaults.

Written before the per-trainer roots (issue "structure", deliverable 3) with the universal ``Config``; the
snapshot test (tests/test_config_roots.py) checks that each recipe still resolves to the same values for every
key its trainer's root holds, and every root's defaults. Run only to record a deliberate change of resolved
values: python tests/data/make_config_snapshot.py (each recipe is then recorded with its own root's keys and the
defaults with the keys of every root).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmrl.config import load_config
from llmrl.core.config import to_dict

ROOT = Path(__file__).resolve().parents[2]


def _union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` plus the keys only ``b`` has (recursively)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _union(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else out.get(k, v)
    return out


def defaults() -> dict[str, Any]:
    out = to_dict(load_config(None))
    try:  # per-trainer roots: the union of their defaults
        from llmrl.trainers import TRAINERS
    except ImportError:
        return out
    for name in TRAINERS:
        out = _union(out, to_dict(load_config(None, [f"trainer={name}"])))
    return out


def snapshot() -> dict[str, Any]:
    recipes = {p.stem: to_dict(load_config(p)) for p in sorted((ROOT / "recipes").glob("*.yaml"))}
    return {"defaults": defaults(), "recipes": recipes}


if __name__ == "__main__":
    out = Path(__file__).with_name("config_snapshot.json")
    out.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
