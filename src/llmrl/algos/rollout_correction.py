"""Rollout correction: the sampler's log-probs differ slightly from the trainer's (another kernel, a KV cache,
another precision), so the samples are slightly off-policy. Pure functions over per-token tensors [B, T]:

- :func:`mismatch_metrics` measures it; :func:`correction_weights` turns it into per-token weights of the
  policy loss (any loss of :data:`~llmrl.algos.losses.POLICY_LOSSES`, any backend: only log-probs go in).

Notation, per token t of sequence b with mask m = 1 (the tokens the loss trains on)::

    Δ_t = logp_trainer(t) − logp_rollout(t)        (both under softmax(logits / T) at the sampling T)
    w_t = exp(clamp(Δ_t, ±LOG_RATIO_CLAMP))          (the importance weight π_trainer / π_rollout)

``logp_trainer`` are the trainer's log-probs of the sampled tokens under the policy as it was at sampling time
(the "old" log-probs, recomputed before the update). Modes (C = ``cap``, L = ``lower``, default 1/C):

- ``"none"``:    no weights (the loss is unchanged).
- ``"tis"``:     truncated IS (Yao et al. 2025), weight min(w_t, C).
- ``"mis"``:     masked IS, per token: weight 0 where w_t > C or w_t < L, else 1 (``keep="one"``: rejection of
  the out-of-range tokens, like verl's token-level ``rollout_rs``) or w_t (``keep="ratio"``: the masked IS
  estimator w_t·1{L ≤ w_t ≤ C}).
- ``"mis_seq"``: masked IS per sequence on the geometric-mean ratio s_b = exp(mean_{t: m=1} Δ_t): every token
  of b gets 0 where s_b > C or s_b < L, else 1 (or s_b with ``keep="ratio"``).

The range test is done on Δ in log space (Δ > log C, Δ < log L; L = 0 tests only the upper bound). The weights
are constants (computed without gradient) and are 0 wherever the mask is 0; they multiply the per-token policy
loss before the one aggregation (:func:`llmrl.algos.aggregation.aggregate`), whose normaliser is unchanged: a
masked token adds 0 to the sum but still counts in ``token-mean``'s N_tok, as it would with weight 0 in any IS
estimator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from llmrl.algos.losses import LOG_RATIO_CLAMP
from llmrl.core.ops import masked_mean

CORRECTION_MODES: tuple[str, ...] = ("none", "tis", "mis", "mis_seq")
"""Valid values of the ``mode`` argument of :func:`correction_weights`."""

KEEP_WEIGHTS: tuple[str, ...] = ("one", "ratio")
"""Valid values of ``keep``: the weight of a token MIS keeps."""


def log_ratio(old_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Δ = old_logprobs − rollout_logprobs where mask > 0, else 0 (inf/NaN under mask 0 cannot leak).  [B, T]"""
    return torch.where(mask > 0, old_logprobs.detach() - rollout_logprobs.detach(), 0.0)


@torch.no_grad()
def mismatch_metrics(old_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor,
                     threshold: float = 0.1) -> dict[str, Tensor]:
    """How far the sampler's log-probs are from the trainer's on the tokens where ``mask`` is 1. Any matching
    shapes (e.g. [B, T], or the flattened valid tokens).

    Returns 0-d tensors (all 0 when nothing is valid):

    - ``rollout/logp_diff_mean``: mean |Δ|
    - ``rollout/logp_diff_max``:  max |Δ|
    - ``rollout/logp_diff_frac``: fraction of tokens with |Δ| > ``threshold``
    - ``rollout/is_weight_mean``: mean w = exp(clamp(Δ, ±20)) (1 when the two agree)
    """
    valid = mask > 0
    fmask = valid.to(old_logprobs.dtype)
    d = log_ratio(old_logprobs, rollout_logprobs, mask)
    ad = d.abs()
    w = torch.exp(d.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    return {
        "rollout/logp_diff_mean": masked_mean(ad, fmask),
        "rollout/logp_diff_max": torch.where(valid, ad, 0.0).max() if ad.numel() else ad.new_zeros(()),
        "rollout/logp_diff_frac": masked_mean((ad > threshold).to(ad.dtype), fmask),
        "rollout/is_weight_mean": masked_mean(w, fmask),
    }


@torch.no_grad()
def correction_weights(old_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor, mode: str, *,
                       cap: float = 2.0, lower: float | None = None, keep: str = "one",
                       ) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Per-token weights [B, T] of the policy loss for ``mode`` (see the module docstring), and metrics.

    Args:
        old_logprobs: [B, T] the trainer's log-probs of the sampled tokens before the update.
        rollout_logprobs: [B, T] the sampler's log-probs of the same tokens.
        mask: [B, T] 1 = token the loss trains on.
        mode: one of :data:`CORRECTION_MODES`.
        cap: C ≥ 1: TIS truncates at C, MIS masks above C.
        lower: MIS masks below this (0 ≤ lower ≤ cap; 0 = upper bound only); None = 1/cap.
        keep: weight of a token MIS keeps: ``"one"`` or ``"ratio"`` (w_t, or s_b for ``mis_seq``).

    Returns:
        (weights, metrics): weights None for ``"none"``, else detached, 0 where mask is 0. Metrics (0-d):
        ``rollout/weight_mean`` (mean weight over valid tokens) and ``rollout/truncated_frac`` (tis: tokens
        with w > C) or ``rollout/masked_frac`` (mis, mis_seq: tokens given weight 0) and, for mis_seq,
        ``rollout/masked_seq_frac`` (of the sequences with at least one valid token).
    """
    if mode not in CORRECTION_MODES:
        raise ValueError(f"unknown rollout correction mode {mode!r}; valid: {', '.join(CORRECTION_MODES)}")
    if mode == "none":
        return None, {}
    if cap < 1:
        raise ValueError(f"rollout correction: cap must be >= 1; got {cap}")
    lo = 1.0 / cap if lower is None else lower
    if not 0 <= lo <= cap:
        raise ValueError(f"rollout correction: lower must be in [0, cap={cap}]; got {lower}")
    if keep not in KEEP_WEIGHTS:
        raise ValueError(f"rollout correction: keep must be one of {', '.join(KEEP_WEIGHTS)}; got {keep!r}")
    valid = mask > 0
    fmask = valid.to(old_logprobs.dtype)
    d = log_ratio(old_logprobs, rollout_logprobs, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T]
    log_hi, log_lo = math.log(cap), (math.log(lo) if lo > 0 else -math.inf)
    metrics: dict[str, Tensor] = {}
    if mode == "tis":
        w = torch.exp(d)
        weights = torch.where(valid, w.clamp(max=cap), 0.0)
        metrics["rollout/truncated_frac"] = masked_mean((w > cap).to(w.dtype), fmask)
    elif mode == "mis":
        out = valid & ((d > log_hi) | (d < log_lo))  # [B, T]
        kept = torch.exp(d) if keep == "ratio" else torch.ones_like(d)
        weights = torch.where(valid & ~out, kept, 0.0)
        metrics["rollout/masked_frac"] = masked_mean(out.to(d.dtype), fmask)
    else:  # mis_seq
        seq_d = masked_mean(d, fmask, dim=-1)  # [B] log of the geometric-mean ratio
        has = valid.any(-1)  # [B]
        seq_out = has & ((seq_d > log_hi) | (seq_d < log_lo))
        kept = torch.exp(seq_d) if keep == "ratio" else torch.ones_like(seq_d)
        weights = torch.where(valid & ~seq_out[:, None], kept[:, None], 0.0)
        metrics["rollout/masked_frac"] = masked_mean((valid & seq_out[:, None]).to(d.dtype), fmask)
        metrics["rollout/masked_seq_frac"] = masked_mean(seq_out.to(d.dtype), has.to(d.dtype))
    metrics["rollout/weight_mean"] = masked_mean(weights, fmask)
    return weights.detach(), metrics
