"""The fast decoder's C kernels: each against a torch reference, the sampler with and without them, and the
fallbacks (turned off, no compiler, a compiler that fails)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmrl.models import TinyModelSpec, build_tiny_model
from llmrl.rollout import KVCacheSampler, SamplingParams, ckernels
from llmrl.rollout.ckernels import decode_kernels


def _kernels(head_dim: int) -> ckernels.DecodeKernels:
    k = decode_kernels(head_dim)
    if k is None:
        pytest.skip("no C compiler here: the pure-torch ops are used (tested by the fallback tests)")
    return k


@pytest.fixture
def fresh_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """decode_kernels with an empty cache directory and its in-process memo cleared (before and after)."""
    monkeypatch.setenv("LLMRL_CACHE_DIR", str(tmp_path))
    decode_kernels.cache_clear()
    yield tmp_path
    decode_kernels.cache_clear()


def test_rms_norm_and_swiglu_match_torch() -> None:
    k = _kernels(32)
    g = torch.Generator().manual_seed(0)
    for rows, D in ((1, 8), (64, 128), (300, 96)):  # 300 x 96 takes the OpenMP-parallel branch
        x = torch.randn(rows, D, generator=g) * 3
        d_eps = D * 1e-6
        ref = x / torch.sqrt((x * x).sum(-1, keepdim=True) + d_eps)
        torch.testing.assert_close(k.rms_norm(x, torch.empty_like(x), d_eps), ref, rtol=1e-6, atol=1e-6)
    gu = torch.randn(2, 70, 512, generator=g) * 6
    gu[0, 0, :4] = torch.tensor([-200.0, -90.0, 90.0, 200.0])  # saturated sigmoid on both sides
    torch.testing.assert_close(k.swiglu(gu, gu.new_empty(70, 512)), F.silu(gu[0]) * gu[1], rtol=2e-6, atol=1e-6)


def _attention_reference(qkv, cos, sin, pk, pv, plen, gk, gv, n, H, K, s, scale):
    """Slow loop on plain layouts (prompt u's real keys/values in slots 0..plen[u]-1 of pk/pv [Bu, K, P, hd],
    generated ones in gk/gv [B, K, S, hd]): rotary, write slot s, softmax attention over real + 0..s."""
    B, hd = qkv.shape[0], cos.shape[1]
    half, R = hd // 2, H // K
    x = qkv.view(B, H + 2 * K, hd)
    out = torch.empty(B, H * hd, dtype=torch.float64)
    for b in range(B):
        u = b // n
        npu = int(plen[u])
        c, sn = cos[npu + s].double(), sin[npu + s].double()

        def rope(v: torch.Tensor, c: torch.Tensor = c, sn: torch.Tensor = sn) -> torch.Tensor:
            return v.double() * c + torch.cat([v[half:], v[:half]]).double() * sn

        for k in range(K):
            gk[b, k, s] = rope(x[b, H + k]).float()
            gv[b, k, s] = x[b, H + K + k]
        for h in range(H):
            k = h // R
            keys = torch.cat([pk[u, k, :npu], gk[b, k, : s + 1]]).double()
            vals = torch.cat([pv[u, k, :npu], gv[b, k, : s + 1]]).double()
            w = (keys @ (rope(x[b, h]) * scale)).softmax(0)
            out[b, h * hd : (h + 1) * hd] = w @ vals
    return out.float()


def _tiled(keys: torch.Tensor, tile: int) -> torch.Tensor:
    """[..., slots, hd] -> the kernel's key tiles [..., slots / tile, hd, tile]."""
    *lead, slots, hd = keys.shape
    return keys.reshape(*lead, slots // tile, tile, hd).transpose(-1, -2).contiguous()


@pytest.mark.parametrize("hd,H,K", [(32, 4, 4), (16, 4, 2), (24, 6, 3), (8, 2, 1)])
def test_attention_step_matches_a_slow_loop(hd: int, H: int, K: int) -> None:
    k = _kernels(hd)
    g = torch.Generator().manual_seed(hd)
    Bu, n, P, S, tile = 3, 2, 5, 7, k.tile
    assert tile == (16 if hd % 16 == 0 else 8)
    Pt, St = -(-P // tile) * tile, -(-S // tile) * tile
    B = Bu * n
    plen = torch.tensor([5, 2, 1], dtype=torch.int64)
    cos, sin = torch.randn(P + S, hd, generator=g), torch.randn(P + S, hd, generator=g)
    pk, pv = torch.randn(Bu, K, Pt, hd, generator=g), torch.randn(Bu, K, Pt, hd, generator=g)
    gk_ref, gv_ref = torch.randn(B, K, St, hd, generator=g), torch.randn(B, K, St, hd, generator=g)
    gk, gv = _tiled(gk_ref, tile), gv_ref.clone()
    for s in range(S):  # the cache fills step by step exactly as in decoding
        qkv = torch.randn(B, (H + 2 * K) * hd, generator=g)
        ref = _attention_reference(qkv, cos, sin, pk, pv, plen, gk_ref, gv_ref, n, H, K, s, hd**-0.5)
        out = k.attn_step(qkv, cos, sin, _tiled(pk, tile), pv, plen, gk, gv, torch.empty(B, H * hd), n, H, K, s,
                          hd**-0.5)  # fmt: skip
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        written = gk.transpose(-1, -2).reshape(B, K, St, hd)
        torch.testing.assert_close(written[:, :, : s + 1], gk_ref[:, :, : s + 1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gv[:, :, : s + 1], gv_ref[:, :, : s + 1])


LLAMA = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                      initializer_range=0.1)  # fmt: skip


def _generate(monkeypatch: pytest.MonkeyPatch, enabled: bool) -> list:
    monkeypatch.setenv("LLMRL_C_KERNELS", "1" if enabled else "0")
    decode_kernels.cache_clear()
    model, tok = build_tiny_model(LLAMA, seed=0)
    sampler = KVCacheSampler(model, tok)
    prompts = [tok.encode(t) for t in ("12+7=", "3*4=", "hello")]
    out = []
    for seed in (0, 1):  # twice: the second call reuses the first one's cache buffers
        params = SamplingParams(max_new_tokens=12, temperature=1.0, n=3, seed=seed, ignore_eos=True)
        out.append(sampler.generate(prompts, params))
    decode_kernels.cache_clear()
    return out


def test_sampler_same_with_and_without_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    _kernels(16)
    with_c, without = _generate(monkeypatch, True), _generate(monkeypatch, False)
    for a, b in zip(with_c, without):
        assert [[g.token_ids for g in gr] for gr in a] == [[g.token_ids for g in gr] for gr in b]
        lp_a = torch.tensor([x for gr in a for g in gr for x in g.logprobs])
        lp_b = torch.tensor([x for gr in b for g in gr for x in g.logprobs])
        torch.testing.assert_close(lp_a, lp_b, atol=1e-5, rtol=0)


def test_turned_off_or_no_compiler_falls_back(monkeypatch: pytest.MonkeyPatch, fresh_build: Path) -> None:
    monkeypatch.setenv("LLMRL_C_KERNELS", "0")
    assert decode_kernels(32) is None
    decode_kernels.cache_clear()
    monkeypatch.setenv("LLMRL_C_KERNELS", "1")
    monkeypatch.setenv("CC", "no-such-compiler-llmrl")
    assert decode_kernels(32) is None
    assert not list(fresh_build.rglob("*.so"))


def test_failing_compiler_is_reported_once_and_sampling_still_works(
        monkeypatch: pytest.MonkeyPatch, fresh_build: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CC", "false")  # exits 1 for any arguments: every build attempt fails
    with caplog.at_level(logging.WARNING, logger="llmrl.rollout.ckernels"):
        assert decode_kernels(16) is None
        assert decode_kernels(16) is None  # memoised: not rebuilt, not reported again
    assert len([r for r in caplog.records if "could not build" in r.getMessage()]) == 1
    assert not list(fresh_build.rglob("*"))[1:]  # no library and no temporary file left behind
    model, tok = build_tiny_model(LLAMA, seed=0)
    gens = KVCacheSampler(model, tok).generate([tok.encode("1+1=")], SamplingParams(max_new_tokens=4, n=2, seed=0))
    assert len(gens[0]) == 2


def test_library_is_cached_per_head_dim(fresh_build: Path) -> None:
    if ckernels._compiler() is None:
        pytest.skip("no C compiler here")
    assert decode_kernels(16) is not None and decode_kernels(32) is not None
    libs = sorted(p.name for p in (fresh_build / "kernels").glob("*.so"))
    assert len(libs) == 2 and libs[0].startswith("decode_hd16_") and libs[1].startswith("decode_hd32_")
    decode_kernels.cache_clear()
    before = {p: p.stat().st_mtime_ns for p in (fresh_build / "kernels").glob("*.so")}
    assert decode_kernels(16) is not None  # found in the cache: not rebuilt
    assert {p: p.stat().st_mtime_ns for p in (fresh_build / "kernels").glob("*.so")} == before


def test_unloadable_cached_library_is_rebuilt(fresh_build: Path) -> None:
    cc = ckernels._compiler()
    if cc is None:
        pytest.skip("no C compiler here")
    lib = ckernels._build(cc, 24)  # built into the empty cache, not loaded in this process
    lib.unlink()
    lib.write_bytes(b"not a shared library")  # e.g. a file cut short by a full disk
    k = decode_kernels(24)
    assert k is not None and k.tile == 8 and lib.read_bytes()[:4] == b"\x7fELF"
