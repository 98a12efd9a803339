"""KV-cache sampler (fast pure-torch path and generic HF-forward path) and the model.generate backend."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig

from llmrl.models import TinyModelSpec, adapters_disabled, apply_lora, build_tiny_model
from llmrl.rollout import Generation, HFGenerateSampler, KVCacheSampler, SamplingParams
from llmrl.rollout.ckernels import decode_kernels
from llmrl.rollout.sampler import FastDecoder, fast_path_issue, filter_top_k_top_p, left_pad

LLAMA = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=128,
                      tie_word_embeddings=True, initializer_range=0.1)  # fmt: skip
QWEN_GQA = TinyModelSpec(arch="qwen2", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=128, tie_word_embeddings=False, rope_theta=500.0,
                         initializer_range=0.1)  # fmt: skip
TEXTS = ["hello world", "ab", "The quick brown fox", "x"]


def _model(spec: TinyModelSpec, seed: int = 0) -> tuple[torch.nn.Module, object]:
    model, tok = build_tiny_model(spec, seed=seed)
    if spec.arch == "qwen2":  # random (non-zero) q/k/v biases so that they are exercised
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(std=0.2)
    return model, tok




@pytest.fixture(scope="module")
def llama() -> tuple[torch.nn.Module, object]:
    return _model(LLAMA)


@pytest.fixture(scope="module")
def qwen() -> tuple[torch.nn.Module, object]:
    return _model(QWEN_GQA)


def _prompts(tok: object) -> list[list[int]]:
    return [tok.encode(t) for t in TEXTS]


def _hf_logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask.long(), position_ids=pos).logits


def _check_fast_logits(model: torch.nn.Module, prompts: list[list[int]], n: int = 1, steps: int = 6) -> None:
    """Prefill + decode logits of the fast decoder == the HF forward on the same left-padded sequences, with
    the C kernels (when this machine can build them) and with the pure-torch ops."""
    for kernels in (None, False):
        _check_fast_logits_with(model, prompts, n, steps, kernels)


def _check_fast_logits_with(model: torch.nn.Module, prompts: list[list[int]], n: int, steps: int,
                            kernels: bool | None) -> None:
    ids, mask = left_pad(prompts, pad_id=0)
    B = len(prompts) * n
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        dec = FastDecoder(model, n, B, ids.shape[1] + steps + 1, kernels=kernels)
        assert (dec.kernels is None) == (kernels is False or decode_kernels(dec.hd) is None)
        logits = dec.prefill(ids, mask)
        seq, m = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
        for s in range(steps + 1):
            ref = _hf_logits(model, seq, m)[:, -1]
            torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
            if s == steps:
                break
            tok = torch.randint(0, logits.shape[-1], (B,), generator=g)  # rows of a group diverge
            logits = dec.step(tok, s)
            seq, m = torch.cat([seq, tok[:, None]], 1), torch.cat([m, torch.ones(B, 1, dtype=torch.bool)], 1)


def test_fast_logits_llama_tied(llama: tuple) -> None:
    model, tok = llama
    assert fast_path_issue(model) is None and model.lm_head.weight is model.model.embed_tokens.weight
    _check_fast_logits(model, _prompts(tok))
    _check_fast_logits(model, _prompts(tok)[:2], n=3)


def test_fast_logits_qwen2_gqa_biases(qwen: tuple) -> None:
    model, tok = qwen
    assert fast_path_issue(model) is None and model.config.num_key_value_heads == 2
    _check_fast_logits(model, _prompts(tok))
    _check_fast_logits(model, _prompts(tok), n=2)


def test_fast_logits_mistral_and_static_rope_scaling() -> None:
    _, tok = build_tiny_model(LLAMA)
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=8, num_key_value_heads=2, head_dim=16, sliding_window=None)  # fmt: skip
    torch.manual_seed(0)
    mistral = AutoModelForCausalLM.from_config(cfg).eval()
    assert fast_path_issue(mistral) is None
    _check_fast_logits(mistral, _prompts(tok), n=2)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                      num_attention_heads=4, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                             "rope_theta": 10000.0})  # fmt: skip
    linear_rope = AutoModelForCausalLM.from_config(cfg).eval()
    assert fast_path_issue(linear_rope) is None
    _check_fast_logits(linear_rope, _prompts(tok))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                      num_attention_heads=4, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                             "rope_theta": 10000.0})  # fmt: skip
    dynamic = AutoModelForCausalLM.from_config(cfg).eval()
    assert "rope_type" in (fast_path_issue(dynamic) or "")
    with pytest.raises(ValueError, match="fast path unavailable"):
        KVCacheSampler(dynamic, tok, fast_path=True)
    assert not KVCacheSampler(dynamic, tok).uses_fast_path()


def _assert_same(a: list[list[Generation]], b: list[list[Generation]]) -> None:
    """Same tokens, texts and finish reasons; log-probs equal up to float rounding."""
    assert [[g.token_ids for g in gr] for gr in a] == [[g.token_ids for g in gr] for gr in b]
    assert [[(g.text, g.finish_reason) for g in gr] for gr in a] == [
        [(g.text, g.finish_reason) for g in gr] for gr in b
    ]
    lp_a = torch.tensor([lp for gr in a for g in gr for lp in g.logprobs])
    lp_b = torch.tensor([lp for gr in b for g in gr for lp in g.logprobs])
    torch.testing.assert_close(lp_a, lp_b, atol=1e-4, rtol=0)


def _samplers(model: torch.nn.Module, tok: object) -> dict[str, object]:
    return {
        "fast": KVCacheSampler(model, tok, fast_path=True),
        "generic": KVCacheSampler(model, tok, fast_path=False),
        "generate": HFGenerateSampler(model, tok),
    }


@pytest.mark.parametrize("arch", ["llama", "qwen"])
def test_greedy_paths_agree(arch: str, llama: tuple, qwen: tuple) -> None:
    model, tok = llama if arch == "llama" else qwen
    params = SamplingParams(max_new_tokens=24, temperature=0, n=2)
    outs = {name: s.generate(_prompts(tok), params) for name, s in _samplers(model, tok).items()}
    fast = outs["fast"]
    assert len(fast) == len(TEXTS) and all(len(g) == 2 for g in fast)
    _assert_same(fast, outs["generic"])
    _assert_same(fast, outs["generate"])
    for group in fast:
        assert group[0].token_ids == group[1].token_ids  # greedy: the n samples coincide


def _teacher_forced(
    model: torch.nn.Module, prompt: list[int], gen: Generation, temperature: float
) -> torch.Tensor:
    ids = torch.tensor([prompt + gen.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
    T = temperature if temperature > 0 else 1.0
    return F.log_softmax(logits / T, -1).gather(-1, torch.tensor(gen.token_ids)[:, None])[:, 0]


@pytest.mark.parametrize("path", ["fast", "generic", "generate"])
@pytest.mark.parametrize("params", [
    SamplingParams(max_new_tokens=20, temperature=0.7, top_p=0.9, n=3, seed=1),
    SamplingParams(max_new_tokens=20, temperature=1.3, top_k=7, n=2, seed=2),
    SamplingParams(max_new_tokens=12, temperature=0, seed=3),
])  # fmt: skip
def test_logprobs_match_teacher_forcing(path: str, params: SamplingParams, qwen: tuple) -> None:
    model, tok = qwen
    prompts = _prompts(tok)
    out = _samplers(model, tok)[path].generate(prompts, params)
    for prompt, group in zip(prompts, out):
        assert len(group) == params.n
        for g in group:
            assert len(g.token_ids) == len(g.logprobs) >= 1
            ref = _teacher_forced(model, prompt, g, params.temperature)
            torch.testing.assert_close(torch.tensor(g.logprobs), ref, atol=1e-4, rtol=0)


def test_seeded_reproducibility(llama: tuple) -> None:
    model, tok = llama
    for sampler in (KVCacheSampler(model, tok), KVCacheSampler(model, tok, fast_path=False)):
        p = SamplingParams(max_new_tokens=16, temperature=1.0, n=4, seed=123)
        a, b = sampler.generate(_prompts(tok), p), sampler.generate(_prompts(tok), p)
        assert a == b
        c = sampler.generate(_prompts(tok), SamplingParams(max_new_tokens=16, temperature=1.0, n=4, seed=124))
        assert a != c
        assert len({tuple(g.token_ids) for g in a[0]}) > 1  # the n samples of a prompt differ
    fast = KVCacheSampler(model, tok).generate(_prompts(tok), p)
    _assert_same(fast, KVCacheSampler(model, tok, fast_path=False).generate(_prompts(tok), p))


def test_top_k_1_is_greedy(qwen: tuple) -> None:
    model, tok = qwen
    sampler = KVCacheSampler(model, tok)
    greedy = sampler.generate(_prompts(tok), SamplingParams(max_new_tokens=15, temperature=0))
    top1 = sampler.generate(
        _prompts(tok), SamplingParams(max_new_tokens=15, temperature=1.0, top_k=1, seed=9)
    )
    for a, b in zip(greedy, top1):
        assert a[0].token_ids == b[0].token_ids
        torch.testing.assert_close(
            torch.tensor(a[0].logprobs), torch.tensor(b[0].logprobs), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("path", ["fast", "generic", "generate"])
def test_stop_strings(path: str, llama: tuple) -> None:
    model, tok = llama
    prompts = _prompts(tok)[:2]
    free = KVCacheSampler(model, tok).generate(
        prompts, SamplingParams(max_new_tokens=30, temperature=0, ignore_eos=True)
    )
    text = free[0][0].text
    stop = text[6:8]  # a 2-character stop string that first completes somewhere inside the free-running text
    cut = text.find(stop)
    params = SamplingParams(max_new_tokens=30, temperature=0, stop=[stop, "never-occurs"], ignore_eos=True)
    g = _samplers(model, tok)[path].generate(prompts, params)[0][0]
    assert g.finish_reason == "stop" and g.text == text[:cut]
    assert len(g.token_ids) == len(g.logprobs) == cut + len(stop)  # keeps the token completing the stop
    assert tok.decode(g.token_ids).endswith(stop)
    assert g.token_ids == free[0][0].token_ids[: cut + len(stop)]


def test_eos_stops_and_ignore_eos(llama: tuple) -> None:
    model, tok = llama
    prompts = _prompts(tok)
    free = KVCacheSampler(model, tok).generate(
        prompts, SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
    )
    target = free[0][0].token_ids[4]  # pretend this token is EOS
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [saved, target]
    try:
        for name, sampler in _samplers(model, tok).items():
            out = sampler.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0))
            g = out[0][0]
            k = g.token_ids.index(target)
            assert len(g.token_ids) == k + 1 and g.finish_reason == "stop", name
            assert g.token_ids == free[0][0].token_ids[: k + 1]
            full = sampler.generate(
                prompts, SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
            )
            assert all(len(x.token_ids) == 12 and x.finish_reason == "length" for gr in full for x in gr), (
                name
            )
    finally:
        model.generation_config.eos_token_id = saved


def test_weights_are_read_each_call() -> None:
    model, tok = _model(LLAMA, seed=4)
    sampler = KVCacheSampler(model, tok)
    params = SamplingParams(max_new_tokens=10, temperature=0)
    before = sampler.generate(_prompts(tok), params)
    with torch.no_grad():  # an "optimizer step"
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    after = sampler.generate(_prompts(tok), params)
    assert before != after
    _assert_same(after, KVCacheSampler(model, tok, fast_path=False).generate(_prompts(tok), params))


def test_lora_fast_path_and_adapters_disabled() -> None:
    model, tok = _model(QWEN_GQA, seed=1)
    prompts = _prompts(tok)
    params = SamplingParams(max_new_tokens=10, temperature=0)
    base = KVCacheSampler(model, tok).generate(prompts, params)
    peft_model = apply_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.3)
    assert fast_path_issue(peft_model) is None  # LoRA deltas are merged on the fly
    _check_fast_logits(peft_model, prompts, n=2, steps=3)
    fast = KVCacheSampler(peft_model, tok).generate(prompts, params)
    _assert_same(fast, KVCacheSampler(peft_model, tok, fast_path=False).generate(prompts, params))
    assert fast != base
    with adapters_disabled(peft_model):
        _assert_same(KVCacheSampler(peft_model, tok).generate(prompts, params), base)
        _check_fast_logits(peft_model, prompts, steps=2)
    peft_model.train()
    KVCacheSampler(peft_model, tok).generate(prompts, params)
    assert peft_model.training  # the train/eval mode is restored


def test_generic_path_other_architecture(llama: tuple) -> None:
    _, tok = llama
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128, eos_token_id=2)
    torch.manual_seed(0)
    gpt2 = AutoModelForCausalLM.from_config(cfg).eval()
    sampler = KVCacheSampler(gpt2, tok)
    assert "model_type 'gpt2'" in (sampler.fast_issue or "") and not sampler.uses_fast_path()
    params = SamplingParams(max_new_tokens=12, temperature=0, n=2)
    _assert_same(
        sampler.generate(_prompts(tok), params), HFGenerateSampler(gpt2, tok).generate(_prompts(tok), params)
    )
    sampled = sampler.generate(_prompts(tok), SamplingParams(max_new_tokens=8, temperature=0.9, seed=0))
    for prompt, group in zip(_prompts(tok), sampled):
        ref = _teacher_forced(gpt2, prompt, group[0], 0.9)
        torch.testing.assert_close(torch.tensor(group[0].logprobs), ref, atol=1e-4, rtol=0)


def test_filter_top_k_top_p_hand_computed() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    inf = float("-inf")
    assert torch.isinf(filter_top_k_top_p(logits, 2, 1.0)).tolist() == [[False, False, True, True, True]]
    kept = filter_top_k_top_p(logits, 0, 0.7)  # 0.5 + 0.2 reaches 0.7: keep two
    assert kept[0, 2:].eq(inf).all() and torch.isfinite(kept[0, :2]).all()
    kept = filter_top_k_top_p(logits, 0, 0.71)
    assert torch.isfinite(kept[0, :3]).all() and kept[0, 3:].eq(inf).all()
    assert torch.isfinite(filter_top_k_top_p(logits, 0, 0.1)[0, 0])  # the best token always survives


def test_top_p_restricts_sampling(llama: tuple) -> None:
    model, tok = llama
    out = KVCacheSampler(model, tok).generate(
        [tok.encode("ab")], SamplingParams(max_new_tokens=1, temperature=1.0, top_p=1e-6, n=32, seed=0)
    )
    assert len({g.token_ids[0] for g in out[0]}) == 1  # a tiny nucleus keeps only the argmax


def test_input_validation(llama: tuple) -> None:
    model, tok = llama
    with pytest.raises(ValueError, match="at least one token"):
        KVCacheSampler(model, tok).generate([[]], SamplingParams())
