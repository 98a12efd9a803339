"""KV-cache sampler: batched sampling with per-token log-probs, built for small models on CPU.

Two decoders share one sampling loop:

* :class:`FastDecoder`, a pure-torch decoder for Llama / Qwen2 / Mistral models. It reads the model's
  own weight tensors at the start of every ``generate`` call (so it never goes stale after an optimizer
  step; peft LoRA deltas are merged on the fly), keeps a preallocated static KV cache, shares each
  prompt's cache between its ``n`` samples and masks left padding explicitly;
* :class:`HFDecoder`, which calls the Hugging Face forward with its own cache, for any other model.

Both give the same logits as ``model(input_ids, attention_mask, position_ids)`` up to float rounding.
Rows are the prompts repeated ``n`` times (``[p0]*n + [p1]*n + ...``). Finished rows keep being computed
(the batch is static) but their outputs are ignored; the loop ends when every row has finished.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmrl.models.loading import eval_mode
from llmrl.rollout.base import Generation, SamplingParams

FAST_MODEL_TYPES = frozenset({"llama", "qwen2", "mistral"})
_STATIC_ROPE = frozenset({"default", "linear", "llama3", "yarn"})  # inv_freq fixed at init: read the buffer


class _Unsupported(Exception):
    """The fast decoder cannot run this model (the generic path is used instead)."""


def eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """EOS ids from the model's generation config and the tokenizer (union, order kept)."""
    ids: list[int] = []
    gc = getattr(model, "generation_config", None)
    for src in (getattr(gc, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        for i in src if isinstance(src, (list, tuple)) else [src]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


def sample_next(logits: Tensor, params: SamplingParams, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Draw one token per row.  logits [B, V] -> (tokens [B] long, logprobs [B] float32).

    The log-prob is under softmax(logits / T) of the full vocabulary (T = 1 when greedy); top-k / top-p
    only restrict which tokens can be drawn.
    """
    logits = logits.float()
    if params.temperature == 0:
        tok = logits.argmax(-1)
        return tok, F.log_softmax(logits, -1).gather(1, tok[:, None])[:, 0]
    scaled = logits if params.temperature == 1.0 else logits / params.temperature
    logp = F.log_softmax(scaled, -1)  # [B, V]
    if params.top_k > 0 or params.top_p < 1.0:
        probs = F.softmax(filter_top_k_top_p(scaled, params.top_k, params.top_p), -1)
    else:
        probs = logp.exp()
    # Inverse-CDF draw: one uniform per row (much cheaper than torch.multinomial's V exponentials).
    cdf = probs.cumsum(-1)  # [B, V]
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=gen, device=cdf.device, dtype=cdf.dtype).mul_(total)
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total even after rounding
    tok = torch.searchsorted(cdf, u, right=True)  # [B, 1] first index with cdf > u: never a 0-prob token
    return tok[:, 0], logp.gather(1, tok)[:, 0]


def filter_top_k_top_p(scaled: Tensor, top_k: int, top_p: float) -> Tensor:
    """Set logits outside the top-k and outside the nucleus (smallest set with mass >= top_p) to -inf."""
    V = scaled.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]  # [B, 1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
        sorted_probs = F.softmax(sorted_logits, -1)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs  # [B, V] probability mass of better tokens
        drop_sorted = mass_before >= top_p  # the first token is always kept
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled


def find_stop(text: str, stops: list[str]) -> int:
    """Index of the earliest occurrence of any stop string in ``text`` (-1 if none)."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def build_generations(
    tokenizer: Any,
    token_rows: list[list[int]],
    logprob_rows: list[list[float]],
    params: SamplingParams,
    eos_ids: list[int],
    stop_at: list[int | None] | None = None,
    n: int = 1,
) -> list[list[Generation]]:
    """Cut each row at its first EOS (unless ignore_eos) or at ``stop_at[row]`` (index of the token that
    completed a stop string), decode it, cut the text before the stop string, group rows by prompt."""
    eos = set() if params.ignore_eos else set(eos_ids)
    out: list[Generation] = []
    for r, (toks, lps) in enumerate(zip(token_rows, logprob_rows)):
        end = next((i + 1 for i, t in enumerate(toks) if t in eos), None)
        stop_end = None if stop_at is None or stop_at[r] is None else stop_at[r] + 1
        if stop_end is not None and (end is None or stop_end < end):
            end = stop_end
        reason = "stop" if end is not None else "length"
        end = len(toks) if end is None else end
        text = tokenizer.decode(toks[:end], skip_special_tokens=True)
        cut = find_stop(text, params.stop) if params.stop else -1
        if cut >= 0:
            text, reason = text[:cut], "stop"
        out.append(Generation(token_ids=toks[:end], logprobs=lps[:end], text=text, finish_reason=reason))
    return [out[i : i + n] for i in range(0, len(out), n)]


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad token lists.  -> ids [B, P] long, attention mask [B, P] bool."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p) :] = torch.tensor(p, dtype=torch.long)
    return ids, torch.arange(P) >= torch.tensor([P - len(p) for p in prompts])[:, None]


class _Decoder(Protocol):
    def prefill(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids/mask [Bu, P] (unique prompts) -> next-token logits [Bu * n, V]."""
        ...

    def step(self, tok: Tensor, s: int) -> Tensor:
        """Feed generated token ``s`` of every row ([B] long) -> next-token logits [B, V]."""
        ...


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The underlying transformers model of a peft model (the model itself otherwise)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _linear(mod: nn.Module) -> tuple[Tensor, Tensor | None]:
    """(weight, bias) of a plain Linear or of a peft LoRA Linear with its active adapters merged in."""
    if type(mod) is nn.Linear:
        return mod.weight, mod.bias
    base = getattr(mod, "base_layer", None)
    if type(base) is not nn.Linear or not hasattr(mod, "lora_A") or not hasattr(mod, "get_delta_weight"):
        raise _Unsupported(f"layer type {type(mod).__name__}")
    w = base.weight
    if not mod.disable_adapters and not mod.merged:
        for a in mod.active_adapters:
            if a not in mod.lora_A:
                continue
            if a in getattr(mod, "lora_variant", {}) or getattr(mod, "lora_bias", {}).get(a, False):
                raise _Unsupported("LoRA variants (DoRA, ...) and LoRA biases")
            w = w + mod.get_delta_weight(a).to(w.dtype)
    return w, base.bias


def _fuse(parts: list[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor | None]:
    """Fuse Linear (weight, bias) pairs into one ``[in, out]`` matrix (x @ W: MKL's fastest layout here)."""
    w = torch.cat([w.t() for w, _ in parts], 1)
    if all(b is None for _, b in parts):
        return w, None
    return w, torch.cat([b if b is not None else w.new_zeros(w_.shape[0]) for w_, b in parts])


def _mm(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """x @ w (+ b) for a fused ``[in, out]`` weight."""
    return torch.mm(x, w) if b is None else torch.addmm(b, x, w)


@dataclass
class _Layer:
    eps1: Tensor  # D * eps of input_layernorm (see _rms)
    wqkv: Tensor  # [D, (H+2K)*hd], input_layernorm's weight folded in
    bqkv: Tensor | None
    wo_t: Tensor  # [H*hd, D] (transposed view of o_proj.weight)
    bo: Tensor | None
    eps2: Tensor
    wgu: Tensor  # [2, D, I] (gate, up), post_attention_layernorm's weight folded in
    bgu: Tensor | None  # [2, 1, I]
    wd_t: Tensor  # [I, D]
    bd: Tensor | None


def fast_path_issue(model: nn.Module) -> str | None:
    """Why the fast decoder cannot run ``model`` (None = it can)."""
    base = unwrap_peft(model)
    cfg = getattr(base, "config", None)
    mtype = getattr(cfg, "model_type", None)
    if mtype not in FAST_MODEL_TYPES:
        return f"model_type {mtype!r} is not one of {sorted(FAST_MODEL_TYPES)}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r}"
    if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "nested"
    if rope_type not in _STATIC_ROPE:
        return f"rope_type {rope_type!r}"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "sliding-window layers"
    try:
        inner = base.model
        if type(inner.embed_tokens) is not nn.Embedding or not hasattr(inner.rotary_emb, "inv_freq"):
            return "embedding / rotary module"
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            names = ("q_proj", "k_proj", "v_proj", "o_proj")
            for mod in [getattr(a, x) for x in names] + [m.gate_proj, m.up_proj, m.down_proj, base.lm_head]:
                _linear(mod)
            for norm in (layer.input_layernorm, layer.post_attention_layernorm, inner.norm):
                if not hasattr(norm, "variance_epsilon"):
                    return f"norm {type(norm).__name__}"
    except _Unsupported as e:
        return str(e)
    except AttributeError as e:
        return f"unexpected module layout ({e})"
    return None


def _fold(norm: Tensor, w: Tensor) -> Tensor:
    """diag(norm) * sqrt(D) @ w for ``[.., D, out]`` weights: an RMSNorm's weight (and the sqrt(D) of its mean,
    see :func:`_rms`) folded into the following GEMM."""
    return (norm.float()[:, None] * norm.shape[0] ** 0.5 * w.float()).to(w.dtype)


def _rms(x: Tensor, d_eps: Tensor) -> Tensor:
    """RMSNorm / sqrt(D) without its weight (both folded into the next GEMM, see :func:`_fold`), statistics in
    float32 as Hugging Face: x / sqrt(mean(x^2) + eps) / sqrt(D) = x / sqrt(sum(x^2) + D * eps)."""
    xf = x.float()
    nrm = torch.linalg.vector_norm(xf, dim=-1, keepdim=True)
    return (xf * torch.addcmul(d_eps, nrm, nrm).rsqrt_()).to(x.dtype)


class FastDecoder:
    """Pure-torch Llama/Qwen2/Mistral decoder over the model's own weights with a static KV cache.

    The cache is split in two. The prompt part ``[Bu*K, P, hd]`` is stored once per prompt and shared by
    its ``n`` samples (their queries are batched into one small GEMM against it). The generated part is
    time-major, ``[S, Bu, K, n, hd]``, so the keys/values of the first ``s+1`` steps form one contiguous
    block that is scored with streaming elementwise ops (on CPU this beats hundreds of 1-row GEMMs).
    One softmax runs over the concatenated scores. Decode on CPU is bound by this memory traffic.
    (Measured alternatives that lost in this loop: batch-major caches with bmm, SDPA, embedding_bag.)
    Every RMSNorm weight is folded into the GEMM that follows it (see :func:`_fold`), gate and up run as
    one 2-batch bmm.
    """

    def __init__(self, model: nn.Module, n: int, batch: int, max_len: int) -> None:
        base = unwrap_peft(model)
        cfg, inner = base.config, base.model
        attn0 = inner.layers[0].self_attn
        self.H = cfg.num_attention_heads
        self.K = getattr(cfg, "num_key_value_heads", None) or self.H
        self.hd = attn0.head_dim
        self.scale = float(attn0.scaling)
        self.n, self.B, self.max_len = n, batch, max_len
        self.embed = inner.embed_tokens.weight
        lm_w, self.lm_b = _linear(base.lm_head)
        self.lm_w, self.norm_eps = _fold(inner.norm.weight, lm_w.t()), self._d_eps(inner.norm)
        self.layers: list[_Layer] = []
        for layer in inner.layers:
            a, m, ln1, ln2 = layer.self_attn, layer.mlp, layer.input_layernorm, layer.post_attention_layernorm
            (wo, bo), (wd, bd), (wg, bg), (wu, bu) = map(_linear, (a.o_proj, m.down_proj, m.gate_proj, m.up_proj))
            wqkv, bqkv = _fuse([_linear(a.q_proj), _linear(a.k_proj), _linear(a.v_proj)])
            bgu = None if bg is None and bu is None else torch.stack([
                b if b is not None else w.new_zeros(w.shape[0]) for w, b in ((wg, bg), (wu, bu))])[:, None]
            self.layers.append(_Layer(
                self._d_eps(ln1), _fold(ln1.weight, wqkv), bqkv, wo.t(), bo,
                self._d_eps(ln2), _fold(ln2.weight, torch.stack([wg.t(), wu.t()])), bgu, wd.t(), bd,
            ))  # fmt: skip
        self.dtype, self.dev = self.embed.dtype, self.embed.device
        # Rotary tables for positions [0, max_len): exactly HF's float32 computation, then cast.
        rot = inner.rotary_emb
        inv_freq = rot.inv_freq.to(device=self.dev, dtype=torch.float32)
        freqs = torch.arange(max_len, device=self.dev).float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), -1)
        scaling = float(getattr(rot, "attention_scaling", 1.0))
        half = self.hd // 2
        sign = torch.cat([-torch.ones(half, device=self.dev), torch.ones(half, device=self.dev)])
        self.cos_tab = (emb.cos() * scaling).to(self.dtype)  # [max_len, hd]
        sin = (emb.sin() * scaling).to(self.dtype)
        self.sin_tab = sin * sign.to(self.dtype)  # rotate_half's minus sign folded in

    @staticmethod
    def _d_eps(norm: nn.Module) -> Tensor:
        return torch.tensor(norm.weight.shape[0] * float(norm.variance_epsilon), device=norm.weight.device)

    def _rope(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x * cos + rotate_half(x) * sin, with rotate_half = roll by hd/2 and its sign folded into sin."""
        return torch.addcmul(x * cos, x.roll(self.hd // 2, -1), sin)

    def _mlp_and_residual(self, x: Tensor, attn: Tensor, L: _Layer) -> Tensor:
        x = torch.addmm(x, attn, L.wo_t) if L.bo is None else x + F.linear(attn, L.wo_t.t(), L.bo)
        h = _rms(x, L.eps2)
        h2 = h.expand(2, *h.shape)  # gate and up as one batched GEMM (splits better over threads than one mm)
        gu = torch.bmm(h2, L.wgu) if L.bgu is None else torch.baddbmm(L.bgu, h2, L.wgu)
        h = F.silu(gu[0]).mul_(gu[1])
        return torch.addmm(x, h, L.wd_t) if L.bd is None else x + F.linear(h, L.wd_t.t(), L.bd)

    def _logits(self, x: Tensor) -> Tensor:
        return _mm(_rms(x, self.norm_eps), self.lm_w, self.lm_b)

    def prefill(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids/mask [Bu, P] (left-padded unique prompts) -> next-token logits [Bu * n, V]; fills the cache."""
        Bu, P = ids.shape
        H, K, hd, n, dev = self.H, self.K, self.hd, self.n, self.dev
        S = self.max_len - P
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)  # [Bu, P]
        cos, sin = self.cos_tab[pos][:, :, None], self.sin_tab[pos][:, :, None]  # [Bu, P, 1, hd]
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        eye = torch.eye(P, dtype=torch.bool, device=dev)
        keep = causal & (mask[:, None, :] | eye)  # [Bu, P, P]; pad queries see themselves (no empty rows)
        abias = torch.zeros(Bu, 1, 1, P, P, dtype=self.dtype, device=dev).masked_fill_(
            ~keep[:, None, None], -torch.inf
        )
        # Decode state: rotary rows per step (same for a prompt's n samples), prompt-key bias, caches.
        dpos = mask.sum(-1)[None, :] + torch.arange(S, device=dev)[:, None]  # [S, Bu]
        qscale = torch.ones(H + K, 1, dtype=self.dtype, device=dev)
        qscale[:H] = self.scale  # the attention scale is folded into the query rows' rotary tables
        self.dcs = list(
            zip(self.cos_tab[dpos][:, :, None, None] * qscale, self.sin_tab[dpos][:, :, None, None] * qscale)
        )
        bias = torch.zeros(Bu, K, n * (H // K), P, dtype=self.dtype, device=dev)
        self.pbias = bias.masked_fill_(~mask[:, None, None], -torch.inf).view(Bu * K, -1, P)  # pad keys
        gen = torch.empty(2, len(self.layers), S, Bu * K * n, hd, dtype=self.dtype, device=dev)
        self.kg, self.vg = gen[0].unbind(0), gen[1].unbind(0)  # per layer [S, Bu*K*n, hd]; [:s+1] read
        # Preallocated scratch for the per-step elementwise attention products (growing per-step
        # temporaries would be fresh mmaps, i.e. hundreds of page faults per step).
        self.work = torch.empty(S, Bu * K * n, H // K, hd, dtype=self.dtype, device=dev)
        self.kpT: list[Tensor] = []  # per layer [Bu*K, hd, P]
        self.vp: list[Tensor] = []  # per layer [Bu*K, P, hd]
        self.P, self.Bu = P, Bu
        x = F.embedding(ids, self.embed).view(Bu * P, -1)  # [Bu*P, D]
        R = H // K
        for li, L in enumerate(self.layers):
            qkv = _mm(_rms(x, L.eps1), L.wqkv, L.bqkv).view(Bu, P, H + 2 * K, hd)
            qk = self._rope(qkv[:, :, : H + K], cos, sin)  # [Bu, P, H+K, hd]
            k = qk[:, :, H:].transpose(1, 2).contiguous()  # [Bu, K, P, hd]
            v = qkv[:, :, H + K :].transpose(1, 2).contiguous()
            self.kpT.append(k.view(Bu * K, P, hd).transpose(1, 2))
            self.vp.append(v.view(Bu * K, P, hd))
            # The last layer only needs the last position (the one whose logits are returned).
            Q = 1 if li == len(self.layers) - 1 else P
            q = qk[:, P - Q :, :H].transpose(1, 2).reshape(Bu, K, R * Q, hd)  # heads grouped per kv head
            scores = torch.matmul(q, k.transpose(-1, -2)).view(Bu, K, R, Q, P) * self.scale
            p = (scores + abias[..., P - Q :, :]).softmax(-1).view(Bu, K, R * Q, P)
            a = torch.matmul(p, v).view(Bu, H, Q, hd).transpose(1, 2).reshape(Bu * Q, H * hd)
            if Q != P:
                x = x.view(Bu, P, -1)[:, P - Q :].reshape(Bu * Q, -1)
            x = self._mlp_and_residual(x, a, L)
        return self._logits(x).repeat_interleave(n, 0)  # x: [Bu, D], every prompt's last token

    def step(self, tok: Tensor, s: int) -> Tensor:
        """Feed generated token ``s`` of every row ([B] long) -> next-token logits [B, V]."""
        B, Bu, n, H, K, hd, P = self.B, self.Bu, self.n, self.H, self.K, self.hd, self.P
        R, T, half = H // K, s + 1, self.hd // 2  # query heads per kv head; generated keys so far
        G = Bu * K * n  # (prompt, kv head, sample) triples
        cos, sin = self.dcs[s]  # [Bu, 1, H+K, hd] rotary rows for this step, queries pre-scaled
        x, work = F.embedding(tok, self.embed), self.work  # [B, D]
        for L, kg, vg, kpT, vp in zip(self.layers, self.kg, self.vg, self.kpT, self.vp):
            qkv = _mm(_rms(x, L.eps1), L.wqkv, L.bqkv).view(Bu, n, H + 2 * K, hd)
            qk = qkv[:, :, : H + K]
            qk = torch.addcmul(qk * cos, qk.roll(half, -1), sin)  # [Bu, n, H+K, hd]
            kg[s].view(Bu, K, n, hd).copy_(qk[:, :, H:].transpose(1, 2))  # cache [S, Bu*K*n, hd]
            vg[s].view(Bu, K, n, hd).copy_(qkv[:, :, H + K :].transpose(1, 2))
            q = qk[:, :, :H].view(Bu, n, K, R, hd).transpose(1, 2).contiguous()  # [Bu, K, n, R, hd]
            sp = torch.baddbmm(self.pbias, q.view(Bu * K, n * R, hd), kpT)  # [Bu*K, n*R, P] shared prompt
            sg = torch.mul(kg[:T].unsqueeze(-2), q.view(G, R, hd), out=work[:T]).sum(-1)  # [T, G, R] own keys
            p = torch.cat([sp.view(G, R, P), sg.permute(1, 2, 0)], -1).softmax(-1)  # [G, R, P+T]
            o = torch.bmm(p[..., :P].view(Bu * K, n * R, P), vp)  # [Bu*K, n*R, hd]
            pg = p[..., P:].permute(2, 0, 1).unsqueeze(-1)  # [T, G, R, 1]
            o.view(G, R, hd).add_(torch.mul(vg[:T].unsqueeze(-2), pg, out=work[:T]).sum(0))
            x = self._mlp_and_residual(x, o.view(Bu, K, n, R * hd).transpose(1, 2).reshape(B, H * hd), L)
        return self._logits(x)


class HFDecoder:
    """Generic decoder: the Hugging Face forward with its own (dynamic) cache."""

    def __init__(self, model: nn.Module, n: int, max_len: int) -> None:
        self.model, self.n, self.max_len = model, n, max_len
        params = inspect.signature(unwrap_peft(model).forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.extra: dict[str, Any] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def _forward(self, **kw: Any) -> Tensor:
        out = self.model(**kw, use_cache=True, **self.extra)
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else getattr(out, "past_key_values", None)
        return out.logits[:, -1]

    def prefill(self, ids: Tensor, mask: Tensor) -> Tensor:
        ids, mask = ids.repeat_interleave(self.n, 0), mask.repeat_interleave(self.n, 0)
        B, P = ids.shape
        self.P = P
        self.amask = torch.ones(B, self.max_len, dtype=torch.long, device=ids.device)
        self.amask[:, :P] = mask.long()
        self.lens = mask.sum(-1)  # [B] position of the first generated token
        pos = (mask.long().cumsum(-1) - 1).masked_fill(~mask, 1)
        return self._forward(input_ids=ids, attention_mask=self.amask[:, :P], position_ids=pos)

    def step(self, tok: Tensor, s: int) -> Tensor:
        t = self.P + s
        return self._forward(
            input_ids=tok[:, None], attention_mask=self.amask[:, : t + 1],
            position_ids=(self.lens + s)[:, None], **{self.cache_kw: self.cache},
        )  # fmt: skip


class KVCacheSampler:
    """Generator backend: batched KV-cache sampling over a (peft-wrapped or plain) HF causal LM.

    ``fast_path``: None = use :class:`FastDecoder` when the model supports it (see
    :func:`fast_path_issue`), True = require it (ValueError otherwise), False = always use the generic
    :class:`HFDecoder`. Sampling is seeded by ``params.seed`` (a torch.Generator; without a seed one is
    drawn from the global torch RNG). The model is put in eval mode for the call and restored after.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, fast_path: bool | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.fast_issue = fast_path_issue(model) if fast_path is not False else "disabled by fast_path=False"
        if fast_path and self.fast_issue is not None:
            raise ValueError(f"fast path unavailable: {self.fast_issue}")
        self.eos_ids = eos_token_ids(model, tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)

    def uses_fast_path(self, total_len: int | None = None) -> bool:
        """Whether a generate call whose sequences reach ``total_len`` tokens runs the fast decoder."""
        if self.fast_issue is not None:
            return False
        window = getattr(unwrap_peft(self.model).config, "sliding_window", None)
        return window is None or total_len is None or total_len <= window

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """For each prompt (token ids), ``params.n`` generations (see :class:`Generation`)."""
        with eval_mode(self.model):
            return sample_loop(self.tokenizer, prompts, params, self.pad_id, self.eos_ids,
                               next(self.model.parameters()).device, self.open_decoder)

    def open_decoder(self, n: int, batch: int, total_len: int) -> _Decoder:
        if self.uses_fast_path(total_len):
            return FastDecoder(self.model, n, batch, total_len)
        return HFDecoder(self.model, n, total_len)


def sample_loop(tokenizer: Any, prompts: list[list[int]], params: SamplingParams, pad_id: int, eos_ids: list[int],
                device: torch.device, open_decoder: Callable[[int, int, int], _Decoder]) -> list[list[Generation]]:
    """The decode loop every sampler shares: left-pad the prompts, ``open_decoder(n, B, P + S)``, prefill,
    then sample token by token with one seeded generator until EOS / stop strings / ``max_new_tokens``.
    Call it with the model(s) in eval mode."""
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    n, S = params.n, params.max_new_tokens
    B, P = len(prompts) * n, ids.shape[1]
    seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
    gen = torch.Generator(device=device).manual_seed(seed)
    eos = torch.tensor([] if params.ignore_eos else eos_ids, dtype=torch.long, device=device)
    with torch.inference_mode():
        dec = open_decoder(n, B, P + S)
        out_tok = torch.empty(B, S, dtype=torch.long, device=device)
        out_lp = torch.empty(B, S, dtype=torch.float32, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        watch = _StopWatch(tokenizer, B, params, eos_ids) if params.stop else None
        logits = dec.prefill(ids, mask)
        steps = 0
        for s in range(S):
            tok, lp = sample_next(logits, params, gen)
            out_tok[:, s], out_lp[:, s] = tok, lp
            steps = s + 1
            if all_finished(watch, done, tok, eos, s) or s == S - 1:
                break
            logits = dec.step(tok, s)
        tok_rows, lp_rows = out_tok[:, :steps].tolist(), out_lp[:, :steps].tolist()
    stop_at = watch.stop_at if watch is not None else None
    return build_generations(tokenizer, tok_rows, lp_rows, params, eos_ids, stop_at, n)


def all_finished(watch: _StopWatch | None, done: Tensor, tok: Tensor, eos: Tensor, step: int) -> bool:
    """After sampling ``tok`` [B] at ``step``: whether every row has stopped. Stop strings are tracked by
    ``watch`` on the decoded text; otherwise ``done`` [B] (updated in place) records rows that emitted EOS."""
    if watch is not None:
        return watch.update(tok.tolist(), step)
    if eos.numel():
        done |= torch.isin(tok, eos)
        return bool(done.all())
    return False


class _StopWatch:
    """Per-row stop-string detection on the decoded generated text (only used when stop strings are set)."""

    def __init__(self, tokenizer: Any, batch: int, params: SamplingParams, eos_ids: list[int]) -> None:
        self.tokenizer, self.stops = tokenizer, params.stop
        self.eos = set() if params.ignore_eos else set(eos_ids)
        self.rows: list[list[int]] = [[] for _ in range(batch)]
        self.active = list(range(batch))
        self.stop_at: list[int | None] = [None] * batch  # step of the token that completed a stop string

    def update(self, toks: list[int], s: int) -> bool:
        """Feed step ``s``'s tokens; returns True when every row has finished."""
        check = []
        for r in self.active:
            self.rows[r].append(toks[r])
            if toks[r] not in self.eos:
                check.append(r)
        texts = self.tokenizer.batch_decode([self.rows[r] for r in check], skip_special_tokens=True)
        for r, text in zip(check, texts):
            if find_stop(text, self.stops) >= 0:
                self.stop_at[r] = s
        self.active = [r for r in check if self.stop_at[r] is None]
        return not self.active
