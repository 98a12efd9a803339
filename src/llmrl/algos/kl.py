"""Per-token estimators of KL(π ‖ π_ref) from the log-probs of tokens sampled from π (Schulman, 2020).

With d = log π_ref − log π at each sampled token:

- ``k1`` = −d = log π − log π_ref                 (unbiased, high variance, can be negative)
- ``k2`` = ½ d²                                   (biased, low variance, ≥ 0)
- ``k3`` = e^d − d − 1 = π_ref/π − log(π_ref/π) − 1   (unbiased, low variance, ≥ 0; Logic-RL / GRPO)

The result is clamped to [−clamp, clamp] (default 10, as in Logic-RL, arXiv:2502.14768); ``clamp=None``
disables it. Clamped entries get no gradient. For k3 the exponent d is also clamped to ±20 before
``exp`` so the estimate stays finite when ``clamp`` is None. Mask the output yourself (e.g. with
``aggregate``); no reduction happens here.
"""

from __future__ import annotations

import torch
from torch import Tensor

KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3")
"""Valid values of the ``kind`` argument of :func:`kl_estimate`."""

_EXP_CLAMP = 20.0


def kl_estimate(
    logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3", clamp: float | None = 10.0
) -> Tensor:
    """Per-token KL estimate.  logprobs [B, T], ref_logprobs [B, T] -> [B, T].

    Args:
        logprobs: log π(y_t) of the policy (carries the gradient).
        ref_logprobs: log π_ref(y_t) of the reference model.
        kind: ``"k1"``, ``"k2"`` or ``"k3"`` (see the module docstring).
        clamp: clamp the estimate to [−clamp, clamp]; None = no clamp.
    """
    d = ref_logprobs - logprobs  # log(π_ref / π)
    if kind == "k1":
        kl = -d
    elif kind == "k2":
        kl = 0.5 * d**2
    elif kind == "k3":
        d = d.clamp(-_EXP_CLAMP, _EXP_CLAMP)
        kl = torch.exp(d) - d - 1.0
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(KL_KINDS)}")
    return kl if clamp is None else kl.clamp(-clamp, clamp)
