"""Micro-batch size and activation checkpointing chosen from a memory budget (``optim.memory_budget_gb``).

The estimate (bytes; ``b`` = bytes per weight element, 4 for float32; docs/memory.md explains each term):

* floor = weights ``P·b`` + gradients and AdamW's two moments ``3·P_train·b`` + a separate reference copy
  ``P·b`` (KL without LoRA) + :data:`RUNTIME_BYTES` (the Python / torch runtime, tokenizer, batch tensors);
* activations per token kept for the backward, per decoder layer: ``(12·H + 4·I + 2·KV)·b`` (the inputs of the
  norms, the q/k/v/o and MLP projections, the attention output, the gate/up/act products of the SwiGLU MLP;
  H hidden size, I MLP width, KV the key+value width) without checkpointing; with it, only each layer's input
  ``H·b`` plus one layer's full set while that layer is recomputed;
* logits: chunked, ``4 · chunk · V · 4`` bytes at any time, whatever the micro-batch (float32 logits, their
  log-softmax / softmax and their gradient, for one chunk); the full path, ``3 · tokens · V · 4`` bytes.

:func:`plan` picks the largest micro-batch (at most the minibatch) whose estimate fits the budget. On a GPU,
when without checkpointing fewer than ``min(minibatch, MIN_MICRO_BATCH)`` sequences would fit and with it more
fit (or none fits without it), checkpointing is turned on: it costs about one more forward pass, and small
micro-batches leave a GPU idle. On a CPU small micro-batches cost next to nothing (a GEMM of a few hundred rows
already runs at the CPU's rate; docs/memory.md has the measurement) while checkpointing's extra forward costs a
third more compute, so there checkpointing turns on only when not even one sequence fits without it, and the
micro-batch is also capped at :data:`CPU_ACTIVATION_BYTES` of activations: a bigger one buys no speed, only
memory. Either way the gradients are those of the whole minibatch (gradient accumulation,
:func:`llmrl.train.update.optimizer_step`).

Forward passes without gradients (the reference's and the old policy's log-probs) keep nothing for a backward:
:meth:`AutoMicroBatch.scoring` sizes them by :func:`scoring_bytes` instead, usually the whole batch. The
preference trainers ask :meth:`AutoMicroBatch.pairs` (two sequences per pair), SFT the plain call.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmrl.core.types import Batch
from llmrl.models.lm_head import resolve_chunk_tokens

GiB = 1 << 30
RUNTIME_BYTES = 1 * GiB
MIN_MICRO_BATCH = 4
CPU_ACTIVATION_BYTES = 512 << 20  # on a CPU: activations of one micro-batch at most (at least one sequence)
BUDGET_FRACTION = 0.85


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a decoder-only LM."""

    layers: int
    hidden: int
    intermediate: int
    kv_width: int  # key + value width of one token (2 · kv heads · head dim)
    vocab: int
    params: int  # all weights (tied ones once)
    trainable: int  # weights with requires_grad (the LoRA adapters only, under LoRA)
    bytes_per_param: int = 4
    heads: int = 1  # attention (query) heads

    @classmethod
    def of(cls, model: nn.Module) -> ModelShape:
        """The shape of a Hugging Face causal LM (or a peft wrapper of one), from its config and weights."""
        cfg = model.config  # type: ignore[union-attr]
        cfg = cfg.get_text_config() if callable(getattr(cfg, "get_text_config", None)) else cfg
        hidden, heads = int(cfg.hidden_size), int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
        kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
        params = list({id(p): p for p in model.parameters()}.values())
        return cls(layers=int(cfg.num_hidden_layers), hidden=hidden,
                   intermediate=int(getattr(cfg, "intermediate_size", None) or 4 * hidden),
                   kv_width=2 * kv * head_dim, vocab=int(cfg.vocab_size), params=sum(p.numel() for p in params),
                   trainable=sum(p.numel() for p in params if p.requires_grad),
                   bytes_per_param=params[0].element_size() if params else 4, heads=heads)


def floor_bytes(shape: ModelShape, reference: bool) -> int:
    """Weights, gradients, AdamW moments, a separate reference copy (``reference``) and the runtime."""
    b = shape.bytes_per_param
    return shape.params * b * (2 if reference else 1) + 3 * shape.trainable * b + RUNTIME_BYTES


def layer_bytes_per_token(shape: ModelShape) -> int:
    """Activations one decoder layer keeps for its backward, per token."""
    return (12 * shape.hidden + 4 * shape.intermediate + 2 * shape.kv_width) * shape.bytes_per_param


def sequence_bytes(shape: ModelShape, seq_len: int, checkpointing: bool) -> int:
    """Activations one sequence of ``seq_len`` tokens keeps for the backward (all layers)."""
    if checkpointing:  # each layer's input, one layer recomputed at a time
        return seq_len * (shape.layers * shape.hidden * shape.bytes_per_param + layer_bytes_per_token(shape))
    return seq_len * shape.layers * layer_bytes_per_token(shape)


def scoring_bytes(shape: ModelShape, seq_len: int) -> int:
    """Activations one sequence of ``seq_len`` tokens holds at once in a forward pass without gradients (nothing
    is kept for a backward): the residual stream and a layer's widest intermediates (the SwiGLU MLP's gate, up
    and product), its keys/values and its attention scores (eager attention: heads x seq_len per token)."""
    per_token = 4 * shape.hidden + 3 * shape.intermediate + shape.kv_width + shape.heads * seq_len
    return seq_len * per_token * shape.bytes_per_param


def logits_bytes(shape: ModelShape, tokens: int, chunk: int) -> int:
    """Float32 logits alive at once: one chunk (``chunk`` > 0) or every token of the micro-batch (0)."""
    return (4 * min(chunk, tokens) if chunk > 0 else 3 * tokens) * shape.vocab * 4


def estimate_bytes(shape: ModelShape, micro: int, seq_len: int, *, checkpointing: bool, chunk: int,
                   reference: bool) -> int:
    """Peak bytes of one training micro-batch of ``micro`` sequences of ``seq_len`` tokens."""
    return (floor_bytes(shape, reference) + micro * sequence_bytes(shape, seq_len, checkpointing)
            + logits_bytes(shape, micro * seq_len, chunk))


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch_size: int
    gradient_checkpointing: bool
    estimate_bytes: int
    fits: bool  # False: even one sequence (with checkpointing when possible) is over the budget


def _largest(shape: ModelShape, budget: int, minibatch: int, seq_len: int, checkpointing: bool, chunk: int,
             reference: bool) -> int:
    """Largest micro-batch in [0, minibatch] whose estimate fits ``budget`` (0: not even one sequence)."""
    def est(m: int) -> int:
        return estimate_bytes(shape, m, seq_len, checkpointing=checkpointing, chunk=chunk, reference=reference)

    lo, hi = 0, minibatch
    while lo < hi:  # the estimate grows with m
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if est(mid) <= budget else (lo, mid - 1)
    return lo


def plan(shape: ModelShape, budget_bytes: int, minibatch: int, seq_len: int, *, chunk: int, reference: bool,
         can_checkpoint: bool, checkpointing: bool = False, cpu: bool = False) -> MemoryPlan:
    """The micro-batch size and whether to checkpoint (already on: ``checkpointing``) for a GPU or, with ``cpu``,
    a CPU; see the module docstring."""
    minibatch = max(minibatch, 1)
    plain = _largest(shape, budget_bytes, minibatch, seq_len, checkpointing, chunk, reference)
    ckpt = checkpointing
    if not checkpointing and can_checkpoint and plain < min(minibatch, 1 if cpu else MIN_MICRO_BATCH):
        with_ckpt = _largest(shape, budget_bytes, minibatch, seq_len, True, chunk, reference)
        if with_ckpt > plain or plain == 0:  # more fit, or nothing fits: at least use less
            plain, ckpt = with_ckpt, True
    if cpu and plain > 1:
        plain = min(plain, max(1, CPU_ACTIVATION_BYTES // sequence_bytes(shape, seq_len, ckpt)))
    micro = max(plain, 1)
    est = estimate_bytes(shape, micro, seq_len, checkpointing=ckpt, chunk=chunk, reference=reference)
    return MemoryPlan(micro, ckpt, est, plain >= 1)


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory this process could grow to: free GPU memory on CUDA; else ``MemAvailable`` (Linux) plus this
    process's resident set, else total physical memory."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_allocated(dev))
    try:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024
                for line in Path("/proc/meminfo").read_text().splitlines() if line.split()[1:]}
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return info["MemAvailable"] + rss
    except (OSError, KeyError, ValueError, IndexError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def default_budget_bytes(device: torch.device | str = "cpu") -> int:
    """``BUDGET_FRACTION`` of :func:`available_bytes` (``optim.memory_budget_gb: null``)."""
    return int(BUDGET_FRACTION * available_bytes(device))


class AutoMicroBatch:
    """The micro-batch size of each minibatch when ``micro_batch_size`` is 0 (auto), from the budget; turns
    the policy's activation checkpointing on (once, for the rest of the run) when the plan needs it."""

    def __init__(self, model: nn.Module, budget_gb: float | None, *, reference: bool, micro_batch_size: int = 0,
                 extra_bytes: int = 0):
        """``extra_bytes``: memory held beside the policy for the whole step (a separate critic's weights,
        gradients and AdamW moments), taken off the budget."""
        from llmrl.models.device import module_device

        self.model, self.fixed, self.reference = model, micro_batch_size, reference
        device = module_device(model)
        self.budget = (round(budget_gb * GiB) if budget_gb else default_budget_bytes(device)) - extra_bytes
        self.cpu = device.type == "cpu"
        self.checkpointing = any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
        self.chunk = resolve_chunk_tokens(model)[1]
        try:
            self.shape: ModelShape | None = ModelShape.of(model)
        except (AttributeError, TypeError, ValueError):  # not a Hugging Face LM: the whole minibatch, as before
            self.shape = None
        self.last: MemoryPlan | None = None
        self.size = 0  # the last micro-batch returned (sequences, or pairs from :meth:`pairs`)
        self._warned = False

    def __call__(self, minibatch: Batch) -> int:
        """Sequences per forward/backward for ``minibatch`` (the configured size when it is not 0)."""
        if self.fixed > 0:
            return self.fixed
        return self.rows(minibatch.size, int(minibatch.input_ids.shape[1]))

    def pairs(self, batch: Any) -> int:
        """Preference pairs per forward/backward for a :class:`~llmrl.train.pairs.PairBatch` (two rows of its
        padded length per pair; the configured size when it is not 0)."""
        if self.fixed > 0:
            return self.fixed
        self.size = max(1, self.rows(2 * batch.num_pairs, int(batch.input_ids.shape[1])) // 2)
        return self.size

    def scoring(self, batch: Batch) -> int:
        """Sequences per no-grad forward (reference / old log-probs) of ``batch``: the configured micro-batch when
        it is not 0, else as many as :func:`scoring_bytes` lets fit in what the budget leaves beside the floor and
        one chunk's logits (on a CPU at most :data:`CPU_ACTIVATION_BYTES`): usually the whole batch, as nothing
        is kept for a backward and bigger matmuls run faster."""
        if self.fixed > 0:
            return self.fixed
        n, seq_len = batch.size, int(batch.input_ids.shape[1])
        if self.shape is None:
            return n
        room = (self.budget - floor_bytes(self.shape, self.reference)
                - logits_bytes(self.shape, n * seq_len, self.chunk))
        if self.cpu:
            room = min(room, CPU_ACTIVATION_BYTES)
        return max(1, min(n, room // scoring_bytes(self.shape, seq_len)))

    def rows(self, n: int, seq_len: int) -> int:
        """The plan's micro-batch for ``n`` sequences of ``seq_len`` tokens (all ``n`` for a model whose shape
        is unknown); turns checkpointing on when the plan needs it."""
        if self.shape is None:
            return n
        from llmrl.models.device import enable_gradient_checkpointing

        can = getattr(self._target(), "supports_gradient_checkpointing", False) is True
        p = plan(self.shape, self.budget, n, seq_len, chunk=self.chunk, reference=self.reference,
                 can_checkpoint=can, checkpointing=self.checkpointing, cpu=self.cpu)
        if p.gradient_checkpointing and not self.checkpointing:
            enable_gradient_checkpointing(self.model)
            self.checkpointing = True
        if not p.fits and not self._warned:
            self._warned = True
            warnings.warn(f"llmrl: one sequence of {seq_len} tokens is estimated at "
                          f"{p.estimate_bytes / GiB:.1f} GiB, over optim.memory_budget_gb "
                          f"({self.budget / GiB:.1f} GiB); training one sequence at a time", stacklevel=3)
        self.last, self.size = p, p.micro_batch_size
        return p.micro_batch_size

    def _target(self) -> nn.Module:
        m = self.model
        return m.get_base_model() if callable(getattr(m, "get_base_model", None)) else m

    def metrics(self) -> dict[str, float]:
        """The last plan, for the step's metrics (the micro-batch in the caller's unit: sequences, or pairs)."""
        if self.last is None or self.fixed > 0:
            return {}
        return {"memory/micro_batch_size": float(self.size),
                "memory/estimate_gb": self.last.estimate_bytes / GiB,
                "memory/gradient_checkpointing": float(self.last.gradient_checkpointing)}


__all__ = ["CPU_ACTIVATION_BYTES", "AutoMicroBatch", "MemoryPlan", "ModelShape", "available_bytes", "default_budget_bytes",
           "estimate_bytes", "floor_bytes", "plan", "scoring_bytes", "sequence_bytes"]
