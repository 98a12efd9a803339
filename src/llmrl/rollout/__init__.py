"""Rollouts: the Generator protocol, its backends and multi-turn environments."""

from llmrl.rollout.base import Generation, Generator, SamplingParams
from llmrl.rollout.hf_generate import HFGenerateSampler
from llmrl.rollout.mixture import MixtureSampler
from llmrl.rollout.sampler import KVCacheSampler

__all__ = ["Generation", "Generator", "HFGenerateSampler", "KVCacheSampler", "MixtureSampler", "SamplingParams"]
