"""Which training loop ``llmrl train`` runs: ``trainer`` in the recipe names one of these.

Each entry is ``"module:function"``, imported only when used; the function takes ``(cfg, resume)`` and
returns the run summary (also written to ``<output_dir>/summary.json``).
"""

from __future__ import annotations

import importlib
from typing import Any

TRAINERS: dict[str, str] = {
    "rl": "llmrl.train.rl:train",  # policy-gradient RL (GRPO, RLOO, REINFORCE++, PPO...)
}


def run_trainer(cfg: Any, resume: bool = False) -> dict[str, Any]:
    """Run the loop named by ``cfg.trainer``."""
    module, fn = TRAINERS[cfg.trainer].split(":")
    return getattr(importlib.import_module(module), fn)(cfg, resume)


__all__ = ["TRAINERS", "run_trainer"]
