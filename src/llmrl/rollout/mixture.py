"""Sampling from a log-linear mixture of K causal LMs that share a tokenizer (MPO: Wang et al., 2025, arXiv:2502.18699).

MPO's mixed policy is sequence-level: π_λ(y|x) ∝ Π_k π_k(y|x)^{λ_k}. Normalising it needs a sum over all
sequences, so :class:`MixtureSampler` implements the practical token-level approximation: each next token
is drawn from

    p(y_t | x, y_<t) = softmax(Σ_k λ_k · logits_k(x, y_<t) / T)  ∝  Π_k π_k(y_t | x, y_<t)^{λ_k}

(per-model normalisers cancel in the softmax). The two agree exactly when K = 1 or when all λ but one are 0;
in general the token-level product is renormalised at every step instead of once over whole sequences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from llmrl.models.loading import eval_mode
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.rollout.sampler import (
    KVCacheSampler,
    eos_token_ids,
    sample_loop,
    unwrap_peft,
)


class MixtureError(ValueError):
    """The models or weights of a mixture do not fit together (the message says which)."""


def vocab_size(model: nn.Module) -> int:
    """Number of logits the model produces per position (its output embedding's rows)."""
    base = unwrap_peft(model)
    out = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is not None:
        return int(out.weight.shape[0])
    return int(base.config.vocab_size)


def check_weights(weights: Sequence[float], k: int) -> list[float]:
    """One finite weight >= 0 per model, not all zero; returns them as floats."""
    w = [float(x) for x in weights]
    if len(w) != k:
        raise MixtureError(f"got {len(w)} mixture weight(s) for {k} polic{'y' if k == 1 else 'ies'}")
    bad = [x for x in w if not math.isfinite(x) or x < 0]
    if bad:
        raise MixtureError(f"mixture weights must be finite and >= 0, got {w}")
    if sum(w) <= 0:
        raise MixtureError(f"mixture weights must not all be 0, got {w}")
    return w


def check_same_tokenizer(tokenizers: Sequence[Any], names: Sequence[str] | None = None) -> None:
    """The tokenizers must map every token string to the same id (a mixture adds logits id by id)."""
    names = list(names) if names is not None else [f"policy {i}" for i in range(len(tokenizers))]
    first = tokenizers[0].get_vocab()
    for name, tok in zip(names[1:], tokenizers[1:]):
        vocab = tok.get_vocab()
        if vocab != first:
            diff = sorted(set(vocab.items()) ^ set(first.items()), key=str)[:3]
            raise MixtureError(f"the tokenizer of {name} differs from that of {names[0]} ({len(vocab)} vs "
                               f"{len(first)} tokens; first differences: {diff}); a mixture needs one shared "
                               f"tokenizer")
        for attr in ("eos_token_id", "pad_token_id", "bos_token_id"):
            if getattr(tok, attr, None) != getattr(tokenizers[0], attr, None):
                raise MixtureError(f"{attr} of {name} ({getattr(tok, attr, None)}) differs from that of "
                                   f"{names[0]} ({getattr(tokenizers[0], attr, None)})")


class MixtureSampler:
    """Generator over the token-level geometric mixture softmax(Σ_k λ_k · logits_k / T) of K causal LMs.

    Each model keeps its own KV cache (the fast decoder of :mod:`llmrl.rollout.fast_decoder` where the model
    supports it, the generic HF forward otherwise); models with λ_k = 0 are not run at all. Sampling,
    top-k / top-p, stop strings and seeding behave exactly as in :class:`KVCacheSampler`, and
    ``Generation.logprobs`` are log-probs under the mixture (at temperature T; 1 when greedy). With K = 1
    and λ = 1 the outputs equal :class:`KVCacheSampler`'s for the same seed. ``weights`` are used as given
    (Σλ = 1 is MPO's simplex; other sums sharpen or flatten the mixture). All models must be on one device.
    """

    def __init__(self, models: Sequence[nn.Module], tokenizer: Any, weights: Sequence[float], *,
                 fast_path: bool | None = None) -> None:
        if not models:
            raise MixtureError("a mixture needs at least one model")
        self.models, self.tokenizer = list(models), tokenizer
        self.weights = check_weights(weights, len(self.models))
        sizes = [vocab_size(m) for m in self.models]
        if len(set(sizes)) > 1:
            raise MixtureError(f"the models' vocabulary sizes differ: {sizes}; a mixture needs one shared vocabulary")
        devices = {next(m.parameters()).device for m in self.models}
        if len(devices) > 1:
            raise MixtureError(f"the models are on different devices: {sorted(map(str, devices))}")
        self.parts = [KVCacheSampler(m, tokenizer, fast_path=fast_path) for m in self.models]
        self.eos_ids: list[int] = []
        for m in self.models:
            self.eos_ids += [i for i in eos_token_ids(m, tokenizer) if i not in self.eos_ids]
        self.pad_id = self.parts[0].pad_id

    def _mix(self, logits: list[Tensor], active: list[int]) -> Tensor:
        """Σ_k λ_k · logits_k in float32.  [B, V] each -> [B, V]"""
        out = self.weights[active[0]] * logits[0].float()
        for k, lg in zip(active[1:], logits[1:]):
            out = out.add_(lg.float(), alpha=self.weights[k])
        return out

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """For each prompt (token ids), ``params.n`` generations (see :class:`Generation`)."""
        active = [k for k, w in enumerate(self.weights) if w > 0]

        def open_decoder(n: int, batch: int, total_len: int) -> _MixedDecoder:
            return _MixedDecoder([self.parts[k].open_decoder(n, batch, total_len) for k in active],
                                 lambda logits: self._mix(logits, active))

        with eval_mode(*self.models):
            return sample_loop(self.tokenizer, prompts, params, self.pad_id, self.eos_ids,
                               next(self.models[0].parameters()).device, open_decoder)


class _MixedDecoder:
    """Steps K decoders in lockstep; the logits are their weighted sum (``mix``)."""

    def __init__(self, decoders: list[Any], mix: Any) -> None:
        self.decoders, self.mix = decoders, mix

    def prefill(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.mix([d.prefill(ids, mask) for d in self.decoders])

    def step(self, tok: Tensor, s: int) -> Tensor:
        return self.mix([d.step(tok, s) for d in self.decoders])

    def release(self) -> None:
        for d in self.decoders:
            d.release()


__all__ = ["MixtureError", "MixtureSampler", "check_same_tokenizer", "check_weights", "vocab_size"]
