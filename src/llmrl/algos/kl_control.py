"""The KL coefficient β of the penalty −β·KL: fixed, or adapted towards a target KL (Ziegler et al. 2019).

Adaptive rule (Ziegler et al., "Fine-Tuning Language Models from Human Preferences", §2.2), applied once
per RL step after the step's rewards were computed with the current β::

    e    = clip(KL_obs / KL_target − 1, −0.2, 0.2)       (proportional error, clipped)
    β   ← β · (1 + K_β · e),   K_β = n / horizon          (n = sequences in the step's batch)

so β grows when the policy drifts further than the target from the reference and shrinks otherwise; at
most by a factor (1 ± 0.2·n/horizon) per step. Ziegler et al. use K_β = 0.1; the n/horizon form (horizon
10000 by default) is the one of the TRL and OpenRLHF implementations. ``KL_obs`` is what the caller
measures; the RL loop passes the batch mean over sequences of the per-sequence token-mean KL estimate
(as OpenRLHF), see :func:`sequence_kl`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from llmrl.core.ops import masked_mean


class KLController:
    """β for a KL penalty: constant when ``target`` is None, else the adaptive rule of the module docstring."""

    def __init__(self, init: float, target: float | None = None, horizon: int = 10000) -> None:
        if init < 0:
            raise ValueError(f"KLController: the initial coefficient must be >= 0; got {init}")
        if target is not None and target <= 0:
            raise ValueError(f"KLController: target KL must be > 0 (or None for a fixed coefficient); got {target}")
        if horizon <= 0:
            raise ValueError(f"KLController: horizon must be > 0; got {horizon}")
        self.value, self.target, self.horizon = float(init), target, int(horizon)

    @property
    def adaptive(self) -> bool:
        return self.target is not None

    def update(self, kl: float, n: int) -> float:
        """Fold in the KL observed on a batch of ``n`` sequences; returns the new β (unchanged if fixed)."""
        if self.target is not None:
            error = min(max(float(kl) / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n / self.horizon
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.target, self.horizon = float(state["value"]), state["target"], int(state["horizon"])


def sequence_kl(kl: Tensor, mask: Tensor) -> Tensor:
    """Mean over sequences of the token-mean KL of each sequence: (1/B) Σ_b (Σ_t kl·m / Σ_t m).  -> 0-d

    Sequences with no valid token count as 0."""
    return masked_mean(kl.detach(), mask, dim=-1).mean() if kl.numel() else torch.zeros(())


__all__ = ["KLController", "sequence_kl"]
