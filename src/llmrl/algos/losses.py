"""Policy-gradient losses, registered by name in :data:`POLICY_LOSSES`, all with one signature::

    fn(logprobs [B, T], old_logprobs [B, T], advantages [B, T], mask [B, T], **own_options)
        -> (per_token_loss [B, T], metrics: dict[str, 0-d detached Tensor])

The per-token loss is 0 where the mask is 0 and is reduced by the caller with
``llmrl.algos.aggregation.aggregate``. ``old_logprobs`` and ``advantages`` are treated as constants (they
are detached here). Entries under mask 0 are replaced by 0 before any arithmetic, so padding holding
-inf/NaN log-probs cannot leak NaN into the loss or its gradient.

Log-ratio clamp: log π/π_old is clamped to ±:data:`LOG_RATIO_CLAMP` (20) before ``exp`` so the ratio
stays finite (e^20 ≈ 4.9e8); beyond the clamp the token gets no gradient, which only matters for
tokens whose ratio is already absurd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from llmrl.core.ops import masked_mean
from llmrl.core.registry import Registry

LossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]
"""``fn(logprobs, old_logprobs, advantages, mask, **own_options) -> (per_token_loss [B, T], metrics)``."""

POLICY_LOSSES: Registry[LossFn] = Registry("policy loss")
"""Name → policy loss (see the module docstring for the shared signature)."""

LOG_RATIO_CLAMP = 20.0
"""|log π − log π_old| is clamped to this before exp (see the module docstring)."""


def _prepare(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Valid mask (bool), log-ratio and advantages with masked entries set to 0.  All [B, T]."""
    valid = mask > 0
    log_ratio = torch.where(valid, logprobs - old_logprobs.detach(), 0.0)
    adv = torch.where(valid, advantages.detach(), 0.0)
    return valid, log_ratio, adv


def _masked_max(x: Tensor, valid: Tensor) -> Tensor:
    """Max of x over the valid entries (of a non-negative x; 0 when nothing is valid)."""
    return torch.where(valid, x, 0.0).max()


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with asymmetric clip range (DAPO "clip-higher") and optional dual clip.

    With ρ = exp(clamp(logp − logp_old, ±20)) and A the advantage, per valid token:

        loss = −min(ρ·A, clip(ρ, 1 − eps_low, 1 + eps_high)·A)

    Dual clip (Ye et al. 2020, c = ``dual_clip`` > 1): for A < 0 the objective is additionally bounded
    below by c·A, i.e. loss = min(loss, −c·A), so a huge ratio on a bad token cannot produce an
    unbounded loss; tokens capped this way get zero gradient. A ≥ 0 is unchanged.

    Metrics: ``clipfrac`` (fraction of valid tokens where the clipped branch is active — zero gradient),
    ``dual_clipfrac`` (with dual clip), ``ratio_mean``, ``ratio_max``, ``approx_kl`` = masked mean of
    ½(logp − logp_old)².
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"ppo_clip: dual_clip must be > 1 (or None); got {dual_clip}")
    valid, log_ratio, adv = _prepare(logprobs, old_logprobs, advantages, mask)
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # [B, T]
    loss_unclipped = -ratio * adv
    loss_clipped = -ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    loss = torch.maximum(loss_unclipped, loss_clipped)  # = −min(ρA, clip(ρ)A)
    fmask = valid.to(ratio.dtype)
    metrics: dict[str, Tensor] = {}
    if dual_clip is not None:
        capped = (adv < 0) & (loss > -dual_clip * adv)  # [B, T]
        loss = torch.where(capped, -dual_clip * adv, loss)  # = min(loss, −c·A) for A < 0
        metrics["dual_clipfrac"] = masked_mean(capped.to(ratio.dtype), fmask).detach()
    loss = torch.where(valid, loss, 0.0)
    with torch.no_grad():
        metrics["clipfrac"] = masked_mean((loss_clipped > loss_unclipped).to(ratio.dtype), fmask)
        metrics["ratio_mean"] = masked_mean(ratio, fmask)
        metrics["ratio_max"] = _masked_max(ratio, valid)
        metrics["approx_kl"] = masked_mean(0.5 * log_ratio**2, fmask)
    return loss, metrics


@POLICY_LOSSES.register("gspo")
def gspo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO (Zheng et al. 2025): sequence-level importance ratio, clipped per sequence.

    Per sequence b with valid tokens V_b:

        s_b = exp(mean_{t∈V_b}(logp_t − logp_old_t))     (length-normalised sequence ratio)
        A_b = mean_{t∈V_b} A_t
        ℓ_b = −min(s_b·A_b, clip(s_b, 1 − eps_low, 1 + eps_high)·A_b)

    and the per-token loss is ℓ_b on every valid token of b. The gradient flows through s_b to every
    valid token (∂ℓ_b/∂logp_t = −s_b·A_b/|V_b| when unclipped). Aggregated with
    ``"seq-mean-token-mean"`` this is exactly the paper's objective (1/B)·Σ_b ℓ_b. Defaults
    eps_low=3e-4, eps_high=4e-4 are the paper's.

    Metrics: ``clipfrac`` (fraction of sequences with at least one valid token whose clipped branch is
    active), ``ratio_mean`` / ``ratio_max`` (of s_b over those sequences), ``approx_kl`` as ppo_clip.
    """
    valid, log_ratio, adv = _prepare(logprobs, old_logprobs, advantages, mask)
    fmask = valid.to(log_ratio.dtype)
    seq_log_ratio = masked_mean(log_ratio, fmask, dim=-1)  # [B]
    s = torch.exp(seq_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # [B]
    seq_adv = masked_mean(adv, fmask, dim=-1)  # [B]
    loss_unclipped = -s * seq_adv
    loss_clipped = -s.clamp(1.0 - eps_low, 1.0 + eps_high) * seq_adv
    seq_loss = torch.maximum(loss_unclipped, loss_clipped)  # [B]
    loss = torch.where(valid, seq_loss.unsqueeze(-1), 0.0)  # [B, T]
    with torch.no_grad():
        has_tokens = valid.any(-1)  # [B]
        fseq = has_tokens.to(s.dtype)
        metrics = {
            "clipfrac": masked_mean((loss_clipped > loss_unclipped).to(s.dtype), fseq),
            "ratio_mean": masked_mean(s, fseq),
            "ratio_max": _masked_max(s, has_tokens),
            "approx_kl": masked_mean(0.5 * log_ratio**2, fmask),
        }
    return loss, metrics
