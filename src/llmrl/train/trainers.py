"""Which training loop ``llmrl train`` runs: ``trainer`` in the recipe names one of these.

Each entry is ``"module:function"``, imported only when used; the function takes ``(cfg, resume)`` and
returns the run summary (also written to ``<output_dir>/summary.json``).
"""

from __future__ import annotations

import importlib
from typing import Any

TRAINERS: dict[str, str] = {
    "rl": "llmrl.train.rl:train",  # policy-gradient RL (GRPO, RLOO, REINFORCE++, PPO...)
    "dvpo": "llmrl.train.dvpo:train",  # PPO with a frozen global value model (trains it first if needed)
    "dvpo_value": "llmrl.train.dvpo:train_gvm",  # DVPO's global value model on preference pairs
    "dpo": "llmrl.train.dpo:train",  # offline preference optimisation (DPO, IPO, cDPO, robust, SimPO, DPOP)
    "reward_model": "llmrl.train.reward_model:train",  # Bradley-Terry reward model (+ Reg, label privacy)
    "mpo": "llmrl.train.mpo:train",  # mix K single-objective policies (fixed or max-min weights), evaluate
    "online_dpo": "llmrl.train.online_dpo:train",  # online / self-judged / CLaMP iterative DPO
    "onpo": "llmrl.train.online_dpo:train_onpo",  # ONPO: optimistic online mirror descent, pairwise oracle
}


def run_trainer(cfg: Any, resume: bool = False) -> dict[str, Any]:
    """Run the loop named by ``cfg.trainer``."""
    module, fn = TRAINERS[cfg.trainer].split(":")
    return getattr(importlib.import_module(module), fn)(cfg, resume)


__all__ = ["TRAINERS", "run_trainer"]
