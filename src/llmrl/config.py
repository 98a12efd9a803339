"""The run configuration: one root per trainer, built from the sections of the layers below
(:mod:`llmrl.train.config`, :mod:`llmrl.rl.config`, :mod:`llmrl.preference.config`) and registered in
:mod:`llmrl.trainers`. :func:`load_config` reads ``trainer`` first (default ``rl``), builds that trainer's
root (only the sections it reads) and validates it; ``llmrl config [RECIPE] [trainer=NAME]`` prints its keys.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from llmrl.core.config import ConfigError, apply_overrides, find_unknown, from_dict, has_key, read_yaml
from llmrl.core.registry import closest
from llmrl.preference.config import DPORoot, MPORoot, OnlineRoot, RewardModelRoot
from llmrl.rl.config import DVPORoot, DVPOValueRoot, RLRoot
from llmrl.trainers import TRAINERS

Config = RLRoot  # the root of the default trainer (rl); the shared engine's functions are annotated with it
Root = RLRoot | DVPORoot | DVPOValueRoot | DPORoot | OnlineRoot | RewardModelRoot | MPORoot  # any trainer's root


def root_for(trainer: Any, where: str = "") -> type:
    """The root config class of ``trainer``; an unknown name is a ConfigError with the closest names."""
    if not isinstance(trainer, str) or trainer not in TRAINERS:
        raise ConfigError(f"{where}trainer: unknown trainer {trainer!r}; {closest(str(trainer), list(TRAINERS))}")
    return TRAINERS[trainer].root_class()


def readers(key: str) -> list[str]:
    """The trainers whose root has the dotted ``key`` (e.g. ``pref.beta`` -> dpo, online_dpo, onpo)."""
    return [name for name, t in TRAINERS.items() if has_key(t.root_class(), key.split("."))]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> Root:
    """The root of the recipe's trainer from an optional YAML file (on top of ``base``) plus dotted overrides.

    An unknown key names the dotted key, the file and the closest valid keys; a key of another trainer's root
    says which trainers read it."""
    data: dict[str, Any] = copy.deepcopy(dict(base or {}))  # overrides edit nested dicts in place
    if path is not None:
        data = _deep_merge(data, read_yaml(path))
    apply_overrides(data, list(overrides or []))
    where = f"{path}: " if path else ""
    trainer = data.get("trainer", "rl")
    root = root_for(trainer, where)
    unknown = find_unknown(root, data)
    if unknown is not None:
        _other_trainers_key(data, unknown, trainer, where)
    try:
        cfg = from_dict(root, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return cfg.validate()


def _other_trainers_key(data: dict[str, Any], unknown: list[str], trainer: str, where: str) -> None:
    """Raise when the unknown key (or, for a whole section, its first key: ``pref.beta``) is read by other trainers."""
    node: Any = data
    for part in unknown:
        node = node[part]
    path = list(unknown)
    while isinstance(node, dict) and node:
        key = next(iter(node))
        path.append(str(key))
        node = node[key]
    for n in range(len(path), len(unknown) - 1, -1):  # the longest prefix some other trainer reads
        if names := readers(".".join(path[:n])):
            raise ConfigError(f"{where}{'.'.join(path[:n])} is read by trainer {'/'.join(names)}, not {trainer} "
                              "(set trainer: to one of them, or drop the key)")


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


__all__ = ["Config", "ConfigError", "Root", "load_config", "readers", "root_for"]
