"""Chunked log-probs / entropies (decoder -> hidden states -> LM head per chunk, recomputed in the backward) equal
the full-logits path, values and parameter gradients, in float64; no chunk holds more than ``chunk`` rows."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, GPT2Config, GraniteConfig

from llmrl.core.ops import chunked_token_logprobs, entropy_from_logits, linear_token_logprobs, token_logprobs
from llmrl.core.types import Batch, Episode
from llmrl.models.lm_head import (
    auto_chunk_tokens,
    logits_chunk_tokens,
    resolve_chunk_tokens,
    set_logits_chunk_tokens,
    split_lm,
)
from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.pairs import PairBatch, completion_logps
from llmrl.train.update import LossSpec, optimizer_step, policy_logprobs, sequence_logprobs

CHUNKS = (1, 5, 16, 512)  # 5 divides none of the batches' token counts; 512 > every count (one chunk)
TEMP = 0.7


def tiny(arch: str = "llama", tied: bool = True) -> torch.nn.Module:
    spec = TinyModelSpec(arch=arch, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                         tie_word_embeddings=tied, initializer_range=0.2)  # peaky random distributions
    model, _ = build_tiny_model(spec, build_char_tokenizer(), seed=0)
    return model.to(torch.float64)


def from_config(cfg: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float64).eval()


def small(cls: type, **kw: object) -> object:
    return cls(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, initializer_range=0.2, **kw)


def batch(n: int = 6, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    eps = []
    for i in range(n):
        p = torch.randint(4, 90, (3 + i % 4,), generator=g).tolist()
        c = torch.randint(4, 90, (2 + (i * 3) % 5,), generator=g).tolist()
        eps.append(Episode.single_turn(p, c, [-1.0] * len(c), {"prompt": "", "answer": ""}, reward=float(i % 2),
                                       group_id=i // 3))
    b = Batch.collate(eps, 0, dtype=torch.float64)
    b.advantages = (torch.arange(n, dtype=torch.float64)[:, None] - 2.5) * b.mask
    return b


def values_and_grads(model: torch.nn.Module, b: Batch, chunk: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """log-probs and entropies [B, L-1] (masked) and the gradients of a loss using both."""
    model.zero_grad(set_to_none=True)
    lp, ent = policy_logprobs(model, b, TEMP, with_entropy=True, chunk_tokens=chunk)
    w = torch.linspace(-1.0, 1.0, lp.numel(), dtype=lp.dtype).view_as(lp)
    ((lp * w + 0.3 * ent * w.flip(0)) * b.mask).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return lp.detach() * b.mask, ent.detach() * b.mask, grads


def assert_same(model: torch.nn.Module, b: Batch, chunks: tuple[int, ...] = CHUNKS) -> None:
    lp0, ent0, g0 = values_and_grads(model, b, 0)
    assert len(g0) > 0 and ent0.abs().sum() > 0
    for chunk in chunks:
        lp, ent, g = values_and_grads(model, b, chunk)
        assert torch.allclose(lp, lp0, atol=1e-6, rtol=0), chunk
        assert torch.allclose(ent, ent0, atol=1e-6, rtol=0), chunk
        assert g.keys() == g0.keys(), chunk
        for k in g0:
            assert torch.allclose(g[k], g0[k], atol=1e-6, rtol=0), (chunk, k)


def test_chunked_op_equals_full_on_hand_sized_rows():
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(11, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, 11, (7,), generator=g)
    for chunk in (1, 3, 7, 100):
        lp, ent = chunked_token_logprobs(h, t, lambda x: x @ w.T, 0.5, chunk, with_entropy=True)
        assert torch.allclose(lp, token_logprobs(h @ w.T, t, 0.5), atol=1e-12, rtol=0)
        assert ent is not None and torch.allclose(ent, entropy_from_logits(h @ w.T, 0.5), atol=1e-12, rtol=0)
    lp, ent = chunked_token_logprobs(h[:0], t[:0], lambda x: x @ w.T, 1.0, 4)
    assert lp.shape == (0,) and ent is None
    with pytest.raises(ValueError):
        chunked_token_logprobs(h, t, lambda x: x @ w.T, 1.0, 0)


@pytest.mark.parametrize("frozen", [False, True])
def test_fused_linear_op_values_and_gradients_equal_autograd(frozen):
    g = torch.Generator().manual_seed(1)
    h0 = torch.randn(7, 4, generator=g, dtype=torch.float64)
    w0, b0 = torch.randn(11, 4, generator=g, dtype=torch.float64), torch.randn(11, generator=g, dtype=torch.float64)
    t = torch.randint(0, 11, (7,), generator=g)
    c1, c2 = torch.randn(7, generator=g, dtype=torch.float64), torch.randn(7, generator=g, dtype=torch.float64)

    def run(chunk: int) -> tuple[torch.Tensor, ...]:
        h, w, b = h0.clone().requires_grad_(), w0.clone().requires_grad_(not frozen), b0.clone().requires_grad_()
        if chunk:
            lp, ent = linear_token_logprobs(h, t, w, b, 0.5, chunk, with_entropy=True)
        else:
            z = h @ w.T + b
            lp, ent = token_logprobs(z, t, 0.5), entropy_from_logits(z, 0.5)
        assert ent is not None
        ((lp * c1).sum() + (ent * c2).sum()).backward()
        return lp.detach(), ent.detach(), h.grad, b.grad, (w.grad if not frozen else torch.zeros(()))

    full = run(0)
    for chunk in (1, 3, 100):
        for a, b in zip(run(chunk), full, strict=True):
            assert torch.allclose(a, b, atol=1e-12, rtol=0), chunk


def test_one_chunk_keeps_its_logits_instead_of_recomputing_them(monkeypatch):
    import llmrl.core.ops as ops

    calls: list[int] = []
    real = ops._linear_logits
    monkeypatch.setattr(ops, "_linear_logits", lambda h, *a: calls.append(h.shape[0]) or real(h, *a))
    g = torch.Generator().manual_seed(2)
    h = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(13, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 13, (9,), generator=g)
    for chunk, forward, backward in ((9, [9], []), (64, [9], []), (4, [4, 4, 1], [4, 4, 1])):
        calls.clear()
        lp, ent = linear_token_logprobs(h, t, w, None, 0.7, chunk, with_entropy=True)
        assert calls == forward, chunk
        (lp.sum() + ent.sum()).backward()
        assert calls == forward + backward, chunk  # one chunk: its log-softmax was kept, no recompute
    calls.clear()
    with torch.no_grad():  # scoring keeps nothing
        linear_token_logprobs(h, t, w, None, 0.7, 64)
    assert calls == [9]


def test_no_tensor_of_more_than_a_chunk_of_vocab_rows_is_created():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        rows = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            for o in out if isinstance(out, tuple | list) else (out,):
                if isinstance(o, torch.Tensor) and o.shape[-1:] == (V,) and o.numel() != V * 32:  # [..., V], not W.T
                    Largest.rows = max(Largest.rows, o.numel() // V)
            return out

    model, b = tiny(tied=False), batch()
    V = model.config.vocab_size  # 101 (char tokenizer): no other dimension is 101
    assert split_lm(model) is not None and split_lm(model).linear() is not None
    with Largest():
        lp, ent = policy_logprobs(model, b, TEMP, with_entropy=True, chunk_tokens=5)
        ((lp + ent) * b.mask).sum().backward()
    assert 0 < Largest.rows <= 5
    Largest.rows = 0
    with Largest():
        policy_logprobs(model, b, TEMP, chunk_tokens=0)
    assert Largest.rows >= int(b.mask.sum())  # the full path: [B, T, V]


@pytest.mark.parametrize("arch,tied", [("llama", True), ("llama", False), ("qwen2", True)])
def test_tiny_models_chunked_equals_full(arch, tied):
    assert_same(tiny(arch, tied), batch())


@pytest.mark.parametrize("family", ["llama", "gemma2", "granite"])
def test_random_hf_models_chunked_equals_full(family):
    from transformers import LlamaConfig

    cfg = {"llama": lambda: small(LlamaConfig, tie_word_embeddings=False),
           "gemma2": lambda: small(Gemma2Config, final_logit_softcapping=0.5, sliding_window=4),
           "granite": lambda: small(GraniteConfig, logits_scaling=3.0)}[family]()
    model = from_config(cfg)
    parts = split_lm(model)
    assert parts is not None and (parts.post is None) == (family == "llama")
    assert_same(model, batch(seed=1), (1, 5, 512))


def test_soft_capping_is_applied_on_the_chunked_path():
    model = from_config(small(Gemma2Config, final_logit_softcapping=0.5, sliding_window=4))
    b = batch(seed=2)
    lp, _ = policy_logprobs(model, b, 1.0, chunk_tokens=4)
    assert lp.abs().max() > 0
    parts = split_lm(model)
    assert parts is not None
    with torch.no_grad():  # the cap matters: without it the values would differ
        h = parts.hidden_states(b.input_ids[:, :-1])
        raw = token_logprobs(parts.head(h), b.input_ids[:, 1:], 1.0) * b.mask
    assert not torch.allclose(lp * b.mask, raw, atol=1e-3)


@pytest.mark.parametrize("lm_head", [False, True])
def test_lora_chunked_equals_full_adapters_on_and_off(lm_head):
    from llmrl.models.lora import DEFAULT_TARGET_MODULES, adapters_disabled, apply_lora

    torch.manual_seed(0)
    targets = list(DEFAULT_TARGET_MODULES) + (["lm_head"] if lm_head else [])
    model = apply_lora(tiny("llama", tied=False), r=4, alpha=8, target_modules=targets).eval()
    for name, p in model.named_parameters():  # non-zero B: the adapters change the outputs
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    assert split_lm(model) is not None
    b = batch(seed=3)
    assert_same(model, b, (1, 5, 512))
    _, _, grads = values_and_grads(model, b, 5)
    assert grads and all("lora_" in k for k in grads)
    assert any("lm_head" in k for k in grads) == lm_head
    with adapters_disabled(model), torch.no_grad():
        off = [policy_logprobs(model, b, TEMP, chunk_tokens=c)[0] * b.mask for c in (0, 5)]
        on = policy_logprobs(model.get_base_model(), b, TEMP, chunk_tokens=0)[0] * b.mask
    assert torch.allclose(off[0], off[1], atol=1e-10, rtol=0)
    lp_on, _ = policy_logprobs(model, b, TEMP, chunk_tokens=5)
    assert not torch.allclose(lp_on.detach() * b.mask, off[1], atol=1e-4)  # disabled = another policy
    assert torch.allclose(on, off[0], atol=1e-10)  # base model's forward with adapters off


def test_no_chunk_holds_more_rows_than_the_chunk_size_forward_and_backward():
    model = tiny()
    rows: list[int] = []
    model.lm_head.register_forward_hook(lambda m, a, out: rows.append(out.shape[:-1].numel()))
    b = batch()
    lp, _ = policy_logprobs(model, b, TEMP, chunk_tokens=5)
    n_forward = len(rows)
    (lp * b.mask).sum().backward()
    assert n_forward == -(-int(b.mask.sum()) // 5) and len(rows) == 2 * n_forward  # recomputed in the backward
    assert max(rows) <= 5 and sum(rows[:n_forward]) == int(b.mask.sum())  # only the trained positions


def test_masked_positions_are_zero_and_no_grad_scoring_matches():
    model, b = tiny(), batch()
    lp, ent = policy_logprobs(model, b, TEMP, with_entropy=True, chunk_tokens=5)
    assert ent is not None and (lp[b.mask == 0] == 0).all() and (ent[b.mask == 0] == 0).all()
    full = sequence_logprobs(set_logits_chunk_tokens(copy.deepcopy(model), 0), b, TEMP, micro_batch_size=2)
    chunked = sequence_logprobs(set_logits_chunk_tokens(model, 3), b, TEMP, micro_batch_size=4)
    assert logits_chunk_tokens(model) == 3
    assert torch.allclose(chunked, full * b.mask, atol=1e-10, rtol=0)


def test_pairs_use_the_chunked_path():
    model = tiny()
    b = batch(4)
    pairs = PairBatch(input_ids=b.input_ids, attention_mask=b.attention_mask, loss_mask=b.mask, num_pairs=2,
                      truncated=torch.zeros(4, dtype=torch.bool))
    chunked = completion_logps(model, pairs)
    full = completion_logps(set_logits_chunk_tokens(copy.deepcopy(model), 0), pairs)
    assert torch.allclose(chunked, full, atol=1e-10, rtol=0)


@pytest.mark.parametrize("chunk", [0, 3])
def test_micro_batched_update_equals_full_batch_for_every_chunk_size(chunk):
    grads = []
    for micro in (0, 1, 8):
        model = set_logits_chunk_tokens(tiny(), chunk)
        b = batch(8)
        opt = build_optimizer(model.parameters(), 0.0)
        spec = LossSpec("ppo_clip", {}, "seq-mean-token-mean", None, TEMP, entropy_coef=0.01)
        ok, _ = optimizer_step(model, opt, build_scheduler(opt, 0, 1, "constant"), b, spec, micro, 0.0)
        assert ok
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert all(torch.allclose(grads[0], g, atol=1e-10, rtol=0) for g in grads[1:])


def test_a_family_that_cannot_be_split_falls_back_with_a_warning():
    model = from_config(GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    b = batch()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert split_lm(model) is None
        lp, _ = policy_logprobs(model, b, TEMP, chunk_tokens=5)
    lp0, _ = policy_logprobs(model, b, TEMP, chunk_tokens=0)
    assert torch.equal(lp, lp0)
    assert any("full [batch, tokens, vocab] logits" in str(w.message) for w in seen)


def test_default_chunk_is_a_fixed_number_of_logits():
    assert auto_chunk_tokens(49152) == 1365  # 2^26 // 49,152 (SmolLM2)
    assert auto_chunk_tokens(151936) == 441  # Qwen2.5
    assert auto_chunk_tokens(101) == 4096 and auto_chunk_tokens(10**7) == 64  # the bounds
    model = tiny()
    assert logits_chunk_tokens(model) is None and resolve_chunk_tokens(model)[1] == 4096
    assert resolve_chunk_tokens(set_logits_chunk_tokens(model, 7))[1] == 7
    assert resolve_chunk_tokens(set_logits_chunk_tokens(model, 0)) == (None, 0)
    with pytest.raises(ValueError):
        set_logits_chunk_tokens(model, -1)
