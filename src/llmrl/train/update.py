"""Scoring sequences and one optimizer step on a minibatch (with gradient accumulation)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from llmrl.algos import POLICY_LOSSES, aggregate, kl_estimate
from llmrl.core.ops import (
    chunked_token_logprobs,
    entropy_from_logits,
    linear_token_logprobs,
    masked_mean,
    token_logprobs,
)
from llmrl.core.types import Batch
from llmrl.models.device import module_device
from llmrl.models.lm_head import resolve_chunk_tokens
from llmrl.train.distributed import all_finite, global_counts


def policy_logprobs(model: torch.nn.Module, batch: Batch, temperature: float = 1.0, with_entropy: bool = False,
                    chunk_tokens: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs (and optionally entropies) of the batch's targets under ``model``.  -> [B, L-1]
    on the model's device, in the batch's float dtype (float32) whatever the model's dtype: the logits are
    upcast to float32 before the log-softmax (:func:`~llmrl.core.ops.token_logprobs`).

    Nothing is computed before the first position any row trains on (prompt positions before it are never
    scored); the last token is not fed (it predicts nothing). Rows are right-padded (``Batch.collate``), so
    causal attention alone is exact for every real token and no padding mask is needed. The token ids are
    moved to the model's device (a no-op on the CPU).

    Chunked path (``chunk_tokens`` > 0; None = the model's :func:`~llmrl.models.lm_head.logits_chunk_tokens`,
    set from ``model.logits_chunk_tokens``, by default 2^26 / vocabulary tokens): the decoder runs to its final hidden states, and only the
    positions whose mask is non-zero go through the LM head, ``chunk_tokens`` of them at a time, recomputed in
    the backward (:func:`~llmrl.core.ops.linear_token_logprobs` for a plain linear head, else
    :func:`~llmrl.core.ops.chunked_token_logprobs`): no [B, T, V] tensor is ever alive. Every
    position whose mask is 0 is returned as 0 (log-prob and entropy).

    Full path (``chunk_tokens`` 0, or a model :func:`~llmrl.models.lm_head.split_lm` cannot split): the
    model's forward with ``logits_to_keep`` = the positions from the first trained one, [B, T, V] logits;
    positions before that start are 0, later masked positions hold their (unused) values.
    """
    ids, L = batch.input_ids.to(module_device(model)), batch.input_ids.shape[1]
    start = int((batch.mask.cumsum(-1) == 0).sum(-1).min())  # first trained target position of any row
    lp = ids.new_zeros(batch.mask.shape, dtype=batch.mask.dtype)
    if start >= L - 1:  # nothing to score (logits_to_keep=0 would mean "all positions")
        return lp, (torch.zeros_like(lp) if with_entropy else None)
    parts, chunk = resolve_chunk_tokens(model, chunk_tokens)
    if parts is not None:
        hidden = parts.hidden_states(ids[:, :-1])[:, start:]  # [B, T, H]: the last token is not fed
        keep = batch.mask[:, start:].to(hidden.device) > 0  # [B, T]
        rows, targets, linear = hidden[keep], ids[:, start + 1 :][keep], parts.linear()  # [N, H], [N]
        if linear is not None:  # a plain linear head: the fused backward
            got, got_ent = linear_token_logprobs(rows, targets, *linear, temperature, chunk, with_entropy)
        else:  # any other head (LoRA-wrapped, soft-capped, ...): checkpointed chunks
            got, got_ent = chunked_token_logprobs(rows, targets, parts.logits, temperature, chunk, with_entropy)

        def place(values: Tensor) -> Tensor:  # [N] -> [B, L-1], zeros elsewhere
            tail = lp.new_zeros(keep.shape).index_put((keep,), values.to(lp.dtype))
            return torch.cat([lp[:, :start], tail], dim=1)

        return place(got), (place(got_ent) if got_ent is not None else None)
    # The last position predicts nothing: it is not fed at all (causal attention: no other logit changes).
    try:
        logits = model(input_ids=ids[:, :-1], use_cache=False, logits_to_keep=L - 1 - start).logits
    except TypeError:  # a model without logits_to_keep
        logits = model(input_ids=ids[:, :-1], use_cache=False).logits[:, start:]
    lp[:, start:] = token_logprobs(logits, ids[:, start + 1 :], temperature).to(lp.dtype)
    if not with_entropy:
        return lp, None
    ent = torch.zeros_like(lp)
    ent[:, start:] = entropy_from_logits(logits, temperature).to(lp.dtype)
    return lp, ent


def micro_batches(batch: Batch, size: int) -> Iterator[tuple[slice, Batch]]:
    size = size if size > 0 else batch.size
    for start in range(0, batch.size, size):
        idx = slice(start, min(start + size, batch.size))
        yield idx, batch.select(idx)


@torch.no_grad()
def sequence_logprobs(model: torch.nn.Module, batch: Batch, temperature: float, micro_batch_size: int = 0,
                      context: Callable[[], AbstractContextManager[Any]] = nullcontext) -> Tensor:
    """Log-probs of the batch's tokens under ``model`` (no grad).  -> [B, L-1], on the batch's device (computed
    on the model's)."""
    out = torch.zeros_like(batch.old_logprobs)
    with context():
        for idx, mb in micro_batches(batch, micro_batch_size):
            lp, _ = policy_logprobs(model, mb, temperature)
            out[idx, : lp.shape[1]] = lp.to(out.device)
    return out


@dataclass(frozen=True)
class LossSpec:
    """Everything the update needs to know about the objective (immutable: a step whose β changes uses
    ``dataclasses.replace(spec, kl_coef=β)``)."""

    loss: str
    loss_options: dict[str, Any]
    agg: str
    agg_constant: float | None
    temperature: float
    kl_coef: float = 0.0  # as a loss term (0 when KL is folded into the reward)
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    aux: Callable[[Batch, float, float], tuple[Tensor, dict[str, Tensor]]] | None = None
    """Extra loss term ``aux(micro_batch, num_seqs, num_tokens) -> (loss, metrics)`` added to the policy loss
    (normalised by the minibatch's counts like the rest), e.g. the value loss of a critic sharing the
    policy's backbone; its parameters must be in the optimizer."""
    probe: Callable[[Batch, Tensor], None] | None = None
    """Called as ``probe(micro_batch, logprobs)`` with each micro-batch's detached policy log-probs [b, L-1]
    before its loss: the RL loop reads the trainer's log-probs of the step's first minibatch this way (the
    sampler/trainer mismatch without another forward pass)."""


def minibatch_loss(model: torch.nn.Module, mb: Batch, spec: LossSpec, num_seqs: float,
                   num_tokens: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of one micro-batch, normalised by the whole minibatch's counts, so that summing the
    micro-batch losses gives exactly the minibatch loss. Computed on the model's device (the micro-batch is
    moved there: advantages, old / reference log-probs, masks), in float32."""
    mb = mb.to(module_device(model))
    lp, ent = policy_logprobs(model, mb, spec.temperature, with_entropy=bool(spec.entropy_coef))  # [b, L-1]
    mask, ref_lp = mb.mask, mb.ref_logprobs
    assert mb.advantages is not None, "advantages must be computed before the update"
    if spec.probe is not None:
        spec.probe(mb, lp.detach())
    per_tok, metrics = POLICY_LOSSES.get(spec.loss)(lp, mb.old_logprobs, mb.advantages, mask, **spec.loss_options)
    if mb.loss_weights is not None:  # rollout correction (TIS / MIS): constants, before the one aggregation
        per_tok = per_tok * mb.loss_weights.detach()
    agg = dict(num_seqs=num_seqs, num_tokens=num_tokens, constant=spec.agg_constant)
    loss = aggregate(per_tok, mask, spec.agg, **agg)
    if ref_lp is not None:
        kl = kl_estimate(lp, ref_lp, spec.kl_estimator)
        metrics["kl"] = masked_mean(kl.detach(), mask)
        if spec.kl_coef:
            kl_loss = aggregate(kl, mask, spec.agg, **agg)
            loss = loss + spec.kl_coef * kl_loss
    if ent is not None:
        metrics["entropy"] = masked_mean(ent.detach(), mask)
        loss = loss - spec.entropy_coef * aggregate(ent, mask, spec.agg, **agg)
    if spec.aux is not None:
        aux_loss, aux_metrics = spec.aux(mb, num_seqs, num_tokens)
        loss = loss + aux_loss
        metrics.update(aux_metrics)
    return loss, metrics


def clipped_step(optimizer: torch.optim.Optimizer, scheduler: Any, grad_clip: float) -> tuple[bool, float]:
    """The end of every update: clip the accumulated gradients of ``optimizer``'s parameters to norm
    ``grad_clip`` (0: no clipping) and step it (and ``scheduler``, when given) — unless the norm is not finite
    (an inf / NaN gradient, even from a finite loss): then the gradients are dropped and optimizer and scheduler
    left untouched. Returns (applied, the norm before clipping; global under torchrun)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return False, float(norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return True, float(norm)


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, mb: Batch,
                   spec: LossSpec, micro_batch_size: int, grad_clip: float) -> tuple[bool, dict[str, float]]:
    """Accumulate gradients over micro-batches and step. Returns (applied, metrics); a non-finite loss or
    gradient norm skips the step (gradients dropped, optimizer and scheduler untouched)."""
    optimizer.zero_grad(set_to_none=True)
    num_seqs, num_tokens = global_counts(float(mb.size), float(mb.mask.sum()))  # over every rank (torchrun)
    total = torch.zeros(())
    sums: dict[str, float] = {}
    for _, micro in micro_batches(mb, micro_batch_size):
        loss, metrics = minibatch_loss(model, micro, spec, num_seqs, num_tokens)
        if not all_finite(loss):  # on every rank: they skip together
            optimizer.zero_grad(set_to_none=True)
            return False, {"loss": float("nan")}
        loss.backward()
        total += loss.detach().to(total.device)
        w = micro.size / num_seqs
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + w * float(v)
    ok, norm = clipped_step(optimizer, scheduler, grad_clip)  # the model's parameters and any aux ones
    out = {"loss": float(total), "grad_norm": norm}
    return ok, ({**sums, **out} if ok else out)
