"""A causal LM split into its decoder (input ids -> final hidden states) and its LM head (hidden states ->
logits), so that log-probs can be computed a chunk of tokens at a time (:func:`llmrl.core.ops.chunked_token_logprobs`)
instead of from one [batch, tokens, vocab] logits tensor.

:func:`split_lm` returns the two halves of a Hugging Face ``*ForCausalLM`` (also under peft LoRA, adapters and
their disabled state included, and with tied embeddings: the head is the model's own output-embedding module) of
a family whose forward is known to be exactly ``logits = post(lm_head(decoder(ids).last_hidden_state))``:
:data:`PLAIN_FAMILIES` (no ``post``), Gemma 2 / 3 (final logit soft-capping), Cohere (``logit_scale``) and
Granite (``logits_scaling``). Any other model returns None, and the callers use its full forward (the old path,
with a one-time warning): a family with an unknown logits transform would otherwise be scored wrongly.

The chunk size is a property of the model (:func:`set_logits_chunk_tokens`, from ``model.logits_chunk_tokens``;
deep copies such as the KL reference keep it); :func:`logits_chunk_tokens` reads it: None (the default) =
:func:`auto_chunk_tokens` of the vocabulary, 0 = the full-logits path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

CHUNK_ELEMENTS = 1 << 26  # logits per chunk by default: 64 Mi float32 values = 256 MiB
_ATTR = "_llmrl_logits_chunk_tokens"

PLAIN_FAMILIES = frozenset({
    "llama", "mistral", "ministral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi", "phi3", "gemma",
    "olmo", "olmo2", "smollm3", "starcoder2", "stablelm",
})
"""``config.model_type`` of the families whose causal-LM forward is ``lm_head(decoder(...).last_hidden_state)``
with nothing after the head (checked against transformers 5.x's modeling files)."""

_warned: set[str] = set()


@dataclass(frozen=True)
class SplitLM:
    """``decoder`` (the base transformer) and ``head`` (the output embedding, or its LoRA wrapper), and ``post``,
    the family's transform of the head's output (None = none)."""

    decoder: nn.Module
    head: nn.Module
    post: Callable[[Tensor], Tensor] | None = None

    def hidden_states(self, input_ids: Tensor) -> Tensor:
        """Final hidden states [B, L, H] of ``input_ids`` [B, L] (no cache, causal attention only)."""
        out = self.decoder(input_ids=input_ids, use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    @property
    def vocab(self) -> int:
        """Size of the head's output (the vocabulary)."""
        n = getattr(self.head, "out_features", None)
        return int(n) if n is not None else int(self.head.weight.shape[0])  # type: ignore[union-attr]

    def linear(self) -> tuple[Tensor, Tensor | None] | None:
        """(weight, bias) when the logits are exactly ``F.linear(hidden, weight, bias)`` (a plain ``nn.Linear``
        head without hooks, no ``post``): the fused path :func:`llmrl.core.ops.linear_token_logprobs`; else
        None (a LoRA-wrapped head, soft-capping, ...: :func:`llmrl.core.ops.chunked_token_logprobs`)."""
        h = self.head
        if self.post is None and type(h) is nn.Linear and not (h._forward_hooks or h._forward_pre_hooks):
            return h.weight, h.bias
        return None

    def logits(self, hidden: Tensor) -> Tensor:
        """Logits of hidden states [..., H] -> [..., V], exactly as the model's forward computes them."""
        out = self.head(hidden)
        return out if self.post is None else self.post(out)


def _softcap(cap: float) -> Callable[[Tensor], Tensor]:
    def post(x: Tensor) -> Tensor:  # the same three ops as Gemma2ForCausalLM.forward
        return (x / cap).tanh() * cap

    return post


def _family_post(model: nn.Module, kind: str) -> tuple[bool, Callable[[Tensor], Tensor] | None]:
    """(known family, post transform) for ``config.model_type`` ``kind``."""
    cfg = model.config  # type: ignore[union-attr]
    if kind in PLAIN_FAMILIES:
        return True, None
    if kind in ("gemma2", "gemma3_text"):
        cap = getattr(cfg, "final_logit_softcapping", None)
        return True, (None if cap is None else _softcap(float(cap)))
    if kind == "cohere":
        scale = float(getattr(model, "logit_scale", cfg.logit_scale))
        return True, lambda x: x * scale
    if kind == "granite":
        div = float(cfg.logits_scaling)
        return True, lambda x: x / div
    return False, None


def split_lm(model: nn.Module, warn: bool = True) -> SplitLM | None:
    """The decoder / LM head split of ``model`` (see the module docstring), or None when the model is not a
    causal LM of a known family (then, with ``warn``, a one-time warning per class names the fallback)."""
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model  # peft
    kind = getattr(getattr(inner, "config", None), "model_type", None)
    prefix = getattr(inner, "base_model_prefix", "model")
    decoder = getattr(inner, prefix, None) if isinstance(prefix, str) else None
    head = inner.get_output_embeddings() if callable(getattr(inner, "get_output_embeddings", None)) else None
    known, post = _family_post(inner, kind) if isinstance(kind, str) else (False, None)
    if known and isinstance(decoder, nn.Module) and decoder is not inner and isinstance(head, nn.Module):
        return SplitLM(decoder, head, post)
    name = type(inner).__name__
    if warn and name not in _warned:
        _warned.add(name)
        warnings.warn(f"llmrl: {name} (model_type {kind!r}) is not split into decoder + LM head; its log-probs use "
                      "the full [batch, tokens, vocab] logits (model.logits_chunk_tokens has no effect)", stacklevel=2)
    return None


def auto_chunk_tokens(vocab: int) -> int:
    """The default chunk: :data:`CHUNK_ELEMENTS` logits (256 MiB in float32), between 64 and 4096 tokens
    (SmolLM2's 49,152 vocabulary: 1,365 tokens; Qwen2.5's 151,936: 441). Larger chunks run faster on a CPU
    (larger matmuls); the backward holds about three such [chunk, V] float32 tensors."""
    return max(64, min(4096, CHUNK_ELEMENTS // max(vocab, 1)))


def set_logits_chunk_tokens(model: nn.Module, tokens: int | None) -> nn.Module:
    """Score ``model``'s log-probs ``tokens`` positions at a time (None = :func:`auto_chunk_tokens`, 0 = the
    full-logits path). Returns ``model``."""
    if tokens is not None and tokens < 0:
        raise ValueError(f"logits_chunk_tokens must be >= 0, got {tokens}")
    setattr(model, _ATTR, None if tokens is None else int(tokens))
    return model


def logits_chunk_tokens(model: nn.Module) -> int | None:
    """The chunk size set on ``model`` (or on the model a peft wrapper holds); None = automatic."""
    value = getattr(model, _ATTR, None)
    return None if value is None else int(value)


def resolve_chunk_tokens(model: nn.Module, tokens: int | None = None) -> tuple[SplitLM | None, int]:
    """(split, chunk) for scoring ``model``: ``tokens`` (None = the model's setting, itself None = automatic
    from the vocabulary); (None, 0) for the full path (chunk 0, or a model :func:`split_lm` cannot split)."""
    tokens = logits_chunk_tokens(model) if tokens is None else tokens
    parts = split_lm(model) if tokens != 0 else None
    if parts is None:
        return None, 0
    return parts, (auto_chunk_tokens(parts.vocab) if tokens is None else tokens)


__all__ = ["CHUNK_ELEMENTS", "PLAIN_FAMILIES", "SplitLM", "auto_chunk_tokens", "logits_chunk_tokens",
           "resolve_chunk_tokens", "set_logits_chunk_tokens", "split_lm"]
