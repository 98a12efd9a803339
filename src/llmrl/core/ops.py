"""Masked tensor ops and log-prob / entropy helpers. Shapes are written as comments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint


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


_BATCH_SUM: ContextVar[Callable[[Tensor], Tensor] | None] = ContextVar("llmrl_batch_sum", default=None)


@contextmanager
def whole_batch(sum_shares: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within the block, :func:`masked_whiten`, :func:`batch_moments` and :func:`batch_mean` take their moments
    over the whole batch of which this process holds a share: ``sum_shares(t)`` returns the 1-d tensor ``t`` summed element-wise over the shares
    (an all-reduce over the data-parallel ranks). Outside any such block the batch is the tensor itself."""
    token = _BATCH_SUM.set(sum_shares)
    try:
        yield
    finally:
        _BATCH_SUM.reset(token)


def _whole_batch_moments(x: Tensor, mask: Tensor,
                         sum_shares: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """(mean, unbiased variance) of the masked entries over every share (as masked_mean / masked_var), summed
    in float64 whatever ``x``'s dtype (the result does not depend on how the batch is split), as ``x.dtype``."""
    xd, md = x.double(), mask.double()
    s = sum_shares(torch.stack([(xd * md).sum(), md.sum()]))
    n = s[1]
    mean = s[0] / n.clamp(min=1)
    var = sum_shares(((xd - mean) ** 2 * md).sum().reshape(1))[0] / n.clamp(min=1)
    var = torch.where(n > 1, var * n / (n - 1).clamp(min=1), var)
    return mean.to(x.dtype), var.to(x.dtype)


def batch_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, unbiased variance) of ``x`` where ``mask`` is 1, as :func:`masked_mean` / :func:`masked_var`;
    inside a :func:`whole_batch` block over every process's share (summed in float64), e.g. the critic's
    explained variance logged under torchrun."""
    if (sum_shares := _BATCH_SUM.get()) is not None:
        return _whole_batch_moments(x, mask.to(x.dtype), sum_shares)
    return masked_mean(x, mask), masked_var(x, mask)


def batch_mean(x: Tensor) -> Tensor:
    """``x.mean()``; inside a :func:`whole_batch` block the mean over every process's share of the batch (summed in
    float64, as ``x.dtype``), e.g. the batch return folded into REINFORCE's running-mean baseline."""
    if (sum_shares := _BATCH_SUM.get()) is None:
        return x.mean()
    s = sum_shares(torch.stack([x.double().sum(), x.new_tensor(float(x.numel()), dtype=torch.float64)]))
    return (s[0] / s[1].clamp(min=1)).to(x.dtype)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries; masked-out entries are returned as 0. Inside a
    :func:`whole_batch` block the mean and std are those of every process's share together."""
    mean, var = batch_moments(x, mask)
    std = var.clamp(min=0).sqrt()
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


def chunked_token_logprobs(hidden: Tensor, targets: Tensor, head: Callable[[Tensor], Tensor],
                           temperature: float = 1.0, chunk: int = 512, with_entropy: bool = False,
                           ) -> tuple[Tensor, Tensor | None]:
    """:func:`token_logprobs` (and :func:`entropy_from_logits`) of ``head(hidden)`` without ever holding the
    logits of more than ``chunk`` tokens.  hidden [N, H], targets [N] -> log-probs [N] (entropies [N] or None).

    Per chunk of ``chunk`` rows: logits = ``head(rows)`` [chunk, V], then the same two functions as the full
    path (so the values are those of the full path, row for row). With gradients enabled each chunk runs
    under non-reentrant :func:`torch.utils.checkpoint.checkpoint`: its logits are freed after the forward and
    recomputed in the backward (one more ``head`` matmul per chunk), so at most one chunk's [chunk, V]
    tensors are alive at any time, in the forward and in the backward."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")

    def piece(h: Tensor, t: Tensor) -> tuple[Tensor, ...]:
        logits = head(h)  # [n, V]
        lp = token_logprobs(logits, t, temperature)
        return (lp, entropy_from_logits(logits, temperature)) if with_entropy else (lp,)

    grad = torch.is_grad_enabled()
    outs = [checkpoint(piece, hidden[i : i + chunk], targets[i : i + chunk], use_reentrant=False) if grad
            else piece(hidden[i : i + chunk], targets[i : i + chunk]) for i in range(0, hidden.shape[0], chunk)]
    if not outs:  # no rows: empty results of the head's output dtype (float32 for half-precision)
        dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        empty = hidden.new_zeros(0, dtype=dtype)
        return empty, (empty if with_entropy else None)
    lp = torch.cat([o[0] for o in outs])
    return lp, (torch.cat([o[1] for o in outs]) if with_entropy else None)


def _linear_logits(h: Tensor, weight: Tensor, bias: Tensor | None, temperature: float) -> Tensor:
    """The float32 (float64) logits / T of one chunk, by the same ops as :func:`token_logprobs` on a linear head."""
    z = F.linear(h, weight, bias)
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    return z / temperature if temperature != 1.0 else z


class _LinearLogprobs(torch.autograd.Function):
    """Log-probs (and entropies) of a linear LM head, a chunk at a time, with a hand-written backward: per chunk
    it recomputes the chunk's logits (one matmul) and forms d(loss)/d(logits) from the saved log-sum-exps, then
    accumulates the hidden-state and weight gradients (``addmm_`` into one buffer). When every row fits one
    chunk the forward keeps that chunk's log-softmax [N, V] for the backward instead (no recompute: the same
    values, one matmul fewer; at most one chunk of logits, as the forward already held)."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                temperature: float, chunk: int, with_entropy: bool, keep: bool) -> tuple[Tensor, Tensor]:
        lps, lses, ents = [], [], []
        keep = keep and hidden.shape[0] <= chunk and any(ctx.needs_input_grad[:3])  # keep: grad mode was on
        kept = hidden.new_empty(0)
        for i in range(0, hidden.shape[0], chunk):
            z = _linear_logits(hidden[i : i + chunk], weight, bias, temperature)  # [n, V]
            lse = torch.logsumexp(z, dim=-1)
            lps.append(torch.gather(z, -1, targets[i : i + chunk, None])[:, 0] - lse)
            lses.append(lse)
            if with_entropy:
                logp = F.log_softmax(z, dim=-1)
                ents.append(-(logp.exp() * logp).sum(-1))
                del logp
            if keep:  # the backward's log-probs, by the same op as its recompute
                kept = z.sub_(lse[:, None])
        lp, lse = torch.cat(lps), torch.cat(lses)
        ent = torch.cat(ents) if with_entropy else torch.zeros_like(lp)
        ctx.save_for_backward(hidden, weight, bias, targets, lse, ent, kept)
        ctx.temperature, ctx.chunk, ctx.with_entropy, ctx.keep = temperature, chunk, with_entropy, keep
        return lp, ent

    @staticmethod
    def backward(ctx: Any, g_lp: Tensor, g_ent: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, targets, lse, ent, kept = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        half = weight.dtype in (torch.float16, torch.bfloat16)  # accumulate the chunks' weight gradients in float32
        grad_w = torch.zeros(weight.shape, dtype=torch.float32 if half else weight.dtype,
                             device=weight.device) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b and bias is not None else None
        for i in range(0, hidden.shape[0], ctx.chunk):
            h, s = hidden[i : i + ctx.chunk], slice(i, i + ctx.chunk)
            # [n, V]: kept by the forward (one chunk), else recomputed
            logp = kept if ctx.keep else _linear_logits(h, weight, bias, ctx.temperature) - lse[s, None]
            p = logp.exp()
            gz = p * -g_lp[s, None]  # d lp / d z = onehot - p
            gz.scatter_add_(-1, targets[s, None], g_lp[s, None])
            if ctx.with_entropy:  # d H / d z = -p (log p + H)
                gz -= g_ent[s, None] * p * (logp + ent[s, None])
            if ctx.temperature != 1.0:
                gz /= ctx.temperature
            gz = gz.to(weight.dtype)
            if grad_h is not None:
                grad_h[s] = gz @ weight
            if grad_w is not None and half:
                grad_w += gz.T @ h
            elif grad_w is not None:
                grad_w.addmm_(gz.T, h)
            if grad_b is not None:
                grad_b += gz.sum(0)
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        return grad_h, grad_w, grad_b, None, None, None, None, None


def linear_token_logprobs(hidden: Tensor, targets: Tensor, weight: Tensor, bias: Tensor | None = None,
                          temperature: float = 1.0, chunk: int = 512, with_entropy: bool = False,
                          ) -> tuple[Tensor, Tensor | None]:
    """:func:`chunked_token_logprobs` for a linear head ``logits = hidden @ weight.T + bias``, with a fused
    backward (:class:`_LinearLogprobs`): the same values, and per chunk 3 matmuls in the backward (recompute,
    hidden and weight gradients) instead of checkpointing's recompute + autograd's graph over [chunk, V]
    intermediates. Saved for the backward: ``hidden`` [N, H] and two floats per row; when all N rows fit one
    chunk, also their log-softmax [N, V] (then 2 matmuls in the backward: a micro-batch of a few sequences
    pays no recompute)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if hidden.shape[0] == 0:
        return chunked_token_logprobs(hidden, targets, lambda h: F.linear(h, weight, bias), temperature, chunk,
                                      with_entropy)
    lp, ent = _LinearLogprobs.apply(hidden, weight, bias, targets, temperature, chunk, with_entropy,
                                    torch.is_grad_enabled())
    return lp, (ent if with_entropy else None)
