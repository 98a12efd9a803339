"""Which training loop ``llmrl train`` runs: ``trainer`` in the recipe names one of these.

Each entry gives the trainer's root config class and its entry function, both as ``"module:name"`` strings
imported only when used (listing or checking names imports nothing heavy). The root lists the config sections
that trainer reads (:mod:`llmrl.rl.config`, :mod:`llmrl.preference.config`); the function takes
``(cfg, resume)`` and returns the run summary (also written to ``<output_dir>/summary.json``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


def _load(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Trainer:
    root: str  # "module:Class" of the root config
    entry: str  # "module:function" of the loop

    def root_class(self) -> type:
        return _load(self.root)

    def entry_function(self) -> Any:
        return _load(self.entry)


_RL, _PREF = "llmrl.rl.config", "llmrl.preference.config"
TRAINERS: dict[str, Trainer] = {
    # policy-gradient RL (GRPO, RLOO, REINFORCE++, PPO...)
    "rl": Trainer(f"{_RL}:RLRoot", "llmrl.rl.loop:train"),
    # PPO with a frozen global value model (trains it first if needed)
    "dvpo": Trainer(f"{_RL}:DVPORoot", "llmrl.rl.dvpo:train"),
    # DVPO's global value model on preference pairs
    "dvpo_value": Trainer(f"{_RL}:DVPOValueRoot", "llmrl.rl.dvpo:train_gvm"),
    # offline preference optimisation (DPO, IPO, cDPO, robust, SimPO, DPOP)
    "dpo": Trainer(f"{_PREF}:DPORoot", "llmrl.preference.dpo:train"),
    # Bradley-Terry reward model (+ Reg, label privacy)
    "reward_model": Trainer(f"{_PREF}:RewardModelRoot", "llmrl.preference.train_rm:train"),
    # mix K single-objective policies (fixed or max-min weights), evaluate
    "mpo": Trainer(f"{_PREF}:MPORoot", "llmrl.preference.mpo:train"),
    # online / self-judged / CLaMP iterative DPO
    "online_dpo": Trainer(f"{_PREF}:OnlineRoot", "llmrl.preference.online:train"),
    # ONPO: optimistic online mirror descent, pairwise oracle
    "onpo": Trainer(f"{_PREF}:OnlineRoot", "llmrl.preference.online:train_onpo"),
}


def root_class(trainer: str) -> type:
    """The root config class of ``trainer`` (a registered name)."""
    return TRAINERS[trainer].root_class()


def run_trainer(cfg: Any, resume: bool = False) -> dict[str, Any]:
    """Run the loop named by ``cfg.trainer``."""
    return TRAINERS[cfg.trainer].entry_function()(cfg, resume)


__all__ = ["TRAINERS", "Trainer", "root_class", "run_trainer"]
