"""Rollouts: the Generator protocol, its backends and multi-turn environments.

Generator backends by name: :data:`llmrl.rollout.base.GENERATORS` (``rollout.backend``). The re-exports below
are lazy (:mod:`llmrl.core.lazy`): importing ``llmrl.rollout.base`` does not import torch.
"""

from typing import TYPE_CHECKING

from llmrl.core.lazy import lazy_exports

if TYPE_CHECKING:
    from llmrl.rollout.base import GENERATORS, Generation, Generator, SamplingParams
    from llmrl.rollout.hf_generate import HFGenerateSampler
    from llmrl.rollout.mixture import MixtureSampler
    from llmrl.rollout.sampler import KVCacheSampler

__all__ = ["GENERATORS", "Generation", "Generator", "HFGenerateSampler", "KVCacheSampler", "MixtureSampler",
           "SamplingParams"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "GENERATORS": "base", "Generation": "base", "Generator": "base", "SamplingParams": "base",
    "HFGenerateSampler": "hf_generate", "MixtureSampler": "mixture", "KVCacheSampler": "sampler",
})
