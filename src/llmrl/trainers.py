"""Which training loop ``llmrl train`` runs: ``trainer`` in the recipe names one of these.

Each entry gives the trainer's root config class and its entry function, both as ``"module:name"`` strings
imported only when used (listing or checking names imports nothing heavy). The root lists the config sections
that trainer reads (:mod:`llmrl.rl.config`, :mod:`llmrl.preference.config`); the function takes
``(cfg, resume)`` and returns the run summary (also written to ``<output_dir>/summary.json``).

:func:`run_trainer` is how a run starts (the CLI and the Python API): it claims ``output_dir`` for the run
(:func:`llmrl.train.rundir.claim_output`: one run per directory, another run's outputs refused unless resumed
or overwritten), checks that ``--resume`` has a checkpoint to resume, and turns SIGINT/SIGTERM into a
checkpoint and a clean stop.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _load(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Trainer:
    root: str  # "module:Class" of the root config
    entry: str  # "module:function" of the loop
    checkpoints: bool = True  # the loop writes <output_dir>/checkpoints (resume needs one)

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
    "dvpo_value": Trainer(f"{_RL}:DVPOValueRoot", "llmrl.rl.dvpo:train_gvm", checkpoints=False),
    # offline preference optimisation (DPO, IPO, cDPO, robust, SimPO, DPOP)
    "dpo": Trainer(f"{_PREF}:DPORoot", "llmrl.preference.dpo:train"),
    # Bradley-Terry reward model (+ Reg, label privacy)
    "reward_model": Trainer(f"{_PREF}:RewardModelRoot", "llmrl.preference.train_rm:train"),
    # mix K single-objective policies (fixed or max-min weights), evaluate
    "mpo": Trainer(f"{_PREF}:MPORoot", "llmrl.preference.mpo:train", checkpoints=False),
    # online / self-judged / CLaMP iterative DPO
    "online_dpo": Trainer(f"{_PREF}:OnlineRoot", "llmrl.preference.online:train"),
    # ONPO: optimistic online mirror descent, pairwise oracle
    "onpo": Trainer(f"{_PREF}:OnlineRoot", "llmrl.preference.online:train_onpo"),
    # ReVISE: [refine] token, verify then correct preference stages (SFT + lambda DPO), confidence-aware vote
    "revise": Trainer("llmrl.preference.revise_config:ReviseRoot", "llmrl.preference.revise:train",
                      checkpoints=False),
    # Reasoner-Critic dual-model verbal reflection: critic SFT from contrastive pairs, the loop until [STOP]
    "reasoner_critic": Trainer("llmrl.rl.reflect_config:ReasonerCriticRoot", "llmrl.rl.reasoner_critic:train",
                               checkpoints=False),
}


DATA_PARALLEL = ("rl", "dpo", "dvpo", "dvpo_value", "mpo", "reward_model")
"""Trainers that run under ``torchrun`` (:mod:`llmrl.train.distributed`); the others refuse it."""


def root_class(trainer: str) -> type:
    """The root config class of ``trainer`` (a registered name)."""
    return TRAINERS[trainer].root_class()


def run_trainer(cfg: Any, resume: bool = False, overwrite: bool = False, force: bool = False) -> dict[str, Any]:
    """Run the loop named by ``cfg.trainer`` in ``cfg.output_dir``, claimed for the run's lifetime: a directory
    holding another run's outputs is refused unless ``resume`` (continue from its latest checkpoint; ``force``:
    even under a changed config) or ``overwrite`` (delete those outputs first). Errors are one-line user errors
    (:data:`llmrl.core.errors.USER_ERRORS`); a SIGINT/SIGTERM checkpoints after the current step and raises
    :class:`~llmrl.core.errors.RunInterrupted`."""
    from llmrl.core.errors import CheckpointError, ConfigError
    from llmrl.train.build import require_device, require_model
    from llmrl.train.checkpoint import latest_checkpoint
    from llmrl.train.distributed import init_world, on_main
    from llmrl.train.rundir import RunOptions, claim_output, graceful_stop, using_options

    if resume and overwrite:
        raise ConfigError("--resume continues the run in output_dir, --overwrite deletes it: pass one of them")
    trainer = TRAINERS[cfg.trainer]
    require_model(cfg)  # a recipe written for a real model stops here, before output_dir is touched
    require_device(cfg)  # so does model.device=cuda on a machine without CUDA
    if init_world(cfg.model.device) is not None and cfg.trainer not in DATA_PARALLEL:  # under torchrun
        raise ConfigError(f"trainer {cfg.trainer!r}: not supported under torchrun yet (data-parallel trainers: "
                          f"{', '.join(DATA_PARALLEL)}); run it in one process")
    claim = on_main(lambda: claim_output(cfg.output_dir, resume=resume, overwrite=overwrite))  # rank 0 claims
    try:
        ckpts = Path(cfg.output_dir) / "checkpoints"
        if resume and trainer.checkpoints and latest_checkpoint(ckpts) is None:
            raise CheckpointError(f"--resume: no checkpoint in {ckpts}; nothing to resume (start the run without "
                                  f"--resume)")
        with using_options(RunOptions(force=force)), graceful_stop():
            return trainer.entry_function()(cfg, resume)
    finally:
        if claim is not None:
            claim.release()


__all__ = ["DATA_PARALLEL", "TRAINERS", "Trainer", "root_class", "run_trainer"]
