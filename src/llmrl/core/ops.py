"""Masked tensor ops and log-prob / entropy helpers. Shapes are written as comments."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token lists → right-padded ``ids`` [N, L] (long) and ``attention_mask`` [N, L] (1 = real token)."""
    L = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), L, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids, mask


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x where mask is 1 (0 where the mask is empty)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:  # Bessel's correction where more than one entry (no host sync: torch.where)
        var = torch.where(n > 1, var * n / (n - 1).clamp(min=1), var)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries; masked-out entries are returned as 0."""
    mean = masked_mean(x, mask)
    std = masked_var(x, mask).clamp(min=0).sqrt()
    out = (x - mean) if shift_mean else x
    return out / (std + eps) * mask


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / T)[target] per position.  logits [B, T, V], targets [B, T] -> [B, T].

    Computed as logit[target] − logsumexp(logits), which never materialises a second [B, T, V] tensor.
    Half-precision logits (a bfloat16 / float16 model) are upcast to float32 first, before the temperature
    division and the log-softmax: the log-probs are float32 (or float64 for float64 logits)."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of softmax(logits / T) per position, in float32 (or float64).  [B, T, V] -> [B, T]."""
    logits = logits.float() if logits.dtype != torch.float64 else logits
    if temperature != 1.0:
        logits = logits / temperature
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)
