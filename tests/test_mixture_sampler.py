"""MixtureSampler: token-level geometric mixture softmax(Σ_k λ_k logits_k / T) of K causal LMs."""

from __future__ import annotations

import math

import pytest
import torch

from llmrl.models import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.rollout import Generation, KVCacheSampler, SamplingParams
from llmrl.rollout.mixture import MixtureError, MixtureSampler, check_same_tokenizer
from llmrl.train.evaluate import evaluate
from tests.conftest import CharCountTask

SPEC = TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64,
                     max_position_embeddings=64, initializer_range=0.1)
QWEN = TinyModelSpec(arch="qwen2", hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                     max_position_embeddings=64, initializer_range=0.1, tie_word_embeddings=False)
TEXTS = ["12+3=", "hello", "x"]


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module, object]:
    a, tok = build_tiny_model(SPEC, seed=1)
    b, _ = build_tiny_model(QWEN, tok, seed=2)  # another architecture, same tokenizer
    return a, b, tok


def _prompts(tok: object) -> list[list[int]]:
    return [tok.encode(t) for t in TEXTS]


def _same(x: list[list[Generation]], y: list[list[Generation]]) -> None:
    for gx, gy in zip(x, y, strict=True):
        for a, b in zip(gx, gy, strict=True):
            assert a.token_ids == b.token_ids and a.text == b.text and a.finish_reason == b.finish_reason
            assert a.logprobs == b.logprobs  # exact


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "generic"])
def test_single_model_equals_plain_sampler(fast: bool, models: tuple) -> None:
    a, _, tok = models
    for params in (SamplingParams(max_new_tokens=8, temperature=0.7, top_k=20, n=3, seed=5),
                   SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, n=2, seed=6),
                   SamplingParams(max_new_tokens=8, temperature=0.0)):
        mix = MixtureSampler([a], tok, [1.0], fast_path=fast).generate(_prompts(tok), params)
        _same(mix, KVCacheSampler(a, tok, fast_path=fast).generate(_prompts(tok), params))


def test_zero_weight_model_is_ignored(models: tuple) -> None:
    a, b, tok = models
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=3)
    _same(MixtureSampler([a, b], tok, [0.0, 1.0]).generate(_prompts(tok), params),
          KVCacheSampler(b, tok).generate(_prompts(tok), params))


def _product_logprobs(models: list, weights: list[float], prompt: list[int], gen: list[int]) -> list[list[float]]:
    """Per step, log of the normalised product Π_k p_k(v)^{λ_k} over the vocabulary, computed from each
    model's full-sequence forward pass (p_k = softmax of its logits, in float64)."""
    seq = torch.tensor([prompt + gen])
    probs = []
    with torch.no_grad():
        for m in models:
            probs.append(torch.softmax(m(input_ids=seq).logits[0].double(), -1))  # [L, V]
    out = []
    for t in range(len(gen)):
        pos = len(prompt) - 1 + t
        prod = torch.ones_like(probs[0][pos])
        for p, w in zip(probs, weights):
            prod = prod * p[pos] ** w
        out.append((prod / prod.sum()).log().tolist())
    return out


@pytest.mark.parametrize("weights", [[0.3, 0.7], [0.5, 1.5]])
def test_two_model_step_distribution_is_normalised_product(weights: list[float], models: tuple) -> None:
    a, b, tok = models
    prompts = _prompts(tok)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, n=2, seed=11, ignore_eos=True)
    out = MixtureSampler([a, b], tok, weights).generate(prompts, params)
    checked = 0
    for prompt, gens in zip(prompts, out):
        for g in gens:
            want = _product_logprobs([a, b], weights, prompt, g.token_ids)
            for t, tok_id in enumerate(g.token_ids):
                assert g.logprobs[t] == pytest.approx(want[t][tok_id], abs=1e-4)
                checked += 1
    assert checked == len(prompts) * 2 * 10
    # the mixture differs from both of its parts
    single = KVCacheSampler(a, tok).generate(prompts, params)
    assert any(x.logprobs != y.logprobs for gx, gy in zip(out, single) for x, y in zip(gx, gy))


def test_temperature_scales_the_mixed_logits(models: tuple) -> None:
    a, b, tok = models
    prompt = _prompts(tok)[0]
    g = MixtureSampler([a, b], tok, [0.4, 0.6]).generate(
        [prompt], SamplingParams(max_new_tokens=5, temperature=0.5, seed=0, ignore_eos=True))[0][0]
    # softmax(Σλ logits / T) = normalised Π_k p_k^{λ_k / T}
    want = _product_logprobs([a, b], [0.4 / 0.5, 0.6 / 0.5], prompt, g.token_ids)
    assert g.logprobs == pytest.approx([want[t][i] for t, i in enumerate(g.token_ids)], abs=1e-4)


def test_greedy_is_deterministic_and_the_product_argmax(models: tuple) -> None:
    a, b, tok = models
    prompts = _prompts(tok)
    sampler = MixtureSampler([a, b], tok, [0.5, 0.5])
    p1 = SamplingParams(max_new_tokens=8, temperature=0.0, seed=1, ignore_eos=True)
    p2 = SamplingParams(max_new_tokens=8, temperature=0.0, seed=99, ignore_eos=True)
    first = sampler.generate(prompts, p1)
    _same(first, sampler.generate(prompts, p2))
    generic = MixtureSampler([a, b], tok, [0.5, 0.5], fast_path=False).generate(prompts, p1)
    for (x,), (y,) in zip(first, generic):  # the other decoder: same tokens, log-probs up to float rounding
        assert x.token_ids == y.token_ids and x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    for prompt, (g,) in zip(prompts, first):
        want = _product_logprobs([a, b], [0.5, 0.5], prompt, g.token_ids)
        assert g.token_ids == [max(range(len(row)), key=row.__getitem__) for row in want]


def test_plugs_into_evaluate(models: tuple) -> None:
    a, b, tok = models
    task = CharCountTask()
    samples = task.samples(4, "test")
    out = evaluate(MixtureSampler([a, b], tok, [0.5, 0.5]), tok, task, samples, max_new_tokens=6,
                   chat_template=None, pass_k=[1, 2], n_samples=2, temperature=1.0, seed=0)
    assert {"accuracy", "reward", "pass@1", "pass@2", "reward/a_rate"} <= set(out)
    assert all(math.isfinite(v) for v in out.values())


def test_bad_input(models: tuple) -> None:
    a, b, tok = models
    with pytest.raises(MixtureError, match="2 mixture weight"):
        MixtureSampler([a], tok, [0.5, 0.5])
    with pytest.raises(MixtureError, match=">= 0"):
        MixtureSampler([a, b], tok, [-0.1, 1.1])
    with pytest.raises(MixtureError, match="all be 0"):
        MixtureSampler([a, b], tok, [0.0, 0.0])
    with pytest.raises(MixtureError, match="at least one"):
        MixtureSampler([], tok, [])
    other_tok = build_char_tokenizer()
    other_tok.add_tokens(["<extra>"])
    big, _ = build_tiny_model(SPEC, other_tok, seed=0)
    with pytest.raises(MixtureError, match="vocabulary sizes differ"):
        MixtureSampler([a, big], tok, [0.5, 0.5])
    with pytest.raises(MixtureError, match="tokenizer of p2 differs"):
        check_same_tokenizer([tok, other_tok], ["p1", "p2"])
    check_same_tokenizer([tok, build_char_tokenizer()])  # equal tokenizers pass
