"""The fast decoder: Llama / Qwen2 / Mistral decoding over the model's own weights with a static KV cache.

:class:`FastDecoder` reads the model's weight tensors at the start of every ``generate`` call (so it never goes
stale after an optimizer step; peft LoRA deltas are merged on the fly), folds every RMSNorm weight into the GEMM
that follows it (see :func:`_fold`), runs q/k/v as one GEMM and gate/up as one 2-batch bmm, shares each prompt's
keys/values between its ``n`` samples and masks left padding explicitly. It gives the same logits as
``model(input_ids, attention_mask, position_ids)`` up to float rounding.

The per-step attention (rotary, cache write, softmax attention) has two implementations with the same results:

* :class:`_CAttention` with the C kernels of ``decode_kernels.c`` (one call per layer; RMSNorm and SwiGLU are
  fused too), used for float32 CPU models when a C compiler is available (see :mod:`llmrl.rollout.ckernels`);
* :class:`_TorchAttention`, pure torch, everywhere else (other dtypes, GPUs, no compiler, ``kernels=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmrl.rollout.ckernels import DecodeKernels, decode_kernels, usable

FAST_MODEL_TYPES = frozenset({"llama", "qwen2", "mistral"})
_STATIC_ROPE = frozenset({"default", "linear", "llama3", "yarn"})  # inv_freq fixed at init: read the buffer


class _Unsupported(Exception):
    """The fast decoder cannot run this model (the generic path is used instead)."""



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
    eps1_f: float = field(init=False)  # eps1 / eps2 as Python floats (for the C kernels)
    eps2_f: float = field(init=False)

    def __post_init__(self) -> None:
        self.eps1_f, self.eps2_f = float(self.eps1), float(self.eps2)


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
    """Decoder for :func:`fast_path_issue`-approved models (see the module docstring).

    ``kernels``: None = the C kernels when they apply (float32 on CPU, compiler available), False = pure torch,
    or a :class:`~llmrl.rollout.ckernels.DecodeKernels` to use. ``workspace``: a dict in which :meth:`release`
    leaves the KV-cache buffers (up to :data:`KEEP_BYTES`) for the next decoder of the same shape to take: fresh
    multi-MB buffers on every ``generate`` call cost thousands of page faults each time.
    """

    def __init__(self, model: nn.Module, n: int, batch: int, max_len: int,
                 kernels: DecodeKernels | bool | None = None, workspace: dict[str, Tensor] | None = None) -> None:
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
        self.norm_eps_f = float(self.norm_eps)
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
        if kernels is None:
            kernels = usable(self.dtype, self.dev) and max_len <= _C_MAX_LEN and decode_kernels(self.hd)
        self.kernels: DecodeKernels | None = kernels or None
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
        self.attn: _TorchAttention | _CAttention | None = None  # set by prefill
        self.workspace, self.buffers = workspace, {}
        self.scratches: dict[str, Tensor] = {}

    def buffer(self, name: str, *shape: int) -> Tensor:
        """An uninitialised ``shape`` tensor of the model's dtype/device, taken from the workspace if one fits."""
        spare = self.workspace.pop(name, None) if self.workspace is not None else None
        if spare is None or spare.shape != shape or spare.dtype != self.dtype or spare.device != self.dev:
            spare = torch.empty(shape, dtype=self.dtype, device=self.dev)
        self.buffers[name] = spare
        return spare

    def release(self) -> None:
        """Done decoding: hand the buffers to the workspace (the decoder must not be stepped again)."""
        if self.workspace is not None:
            kept = 0
            for k, t in self.buffers.items():  # up to KEEP_BYTES in all: more is memory held through the update
                if kept + t.nbytes <= KEEP_BYTES:
                    self.workspace[k], kept = t, kept + t.nbytes
        self.buffers, self.attn = {}, None

    @staticmethod
    def _d_eps(norm: nn.Module) -> Tensor:
        return torch.tensor(norm.weight.shape[0] * float(norm.variance_epsilon), device=norm.weight.device)

    def _rope(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x * cos + rotate_half(x) * sin, with rotate_half = roll by hd/2 and its sign folded into sin."""
        return torch.addcmul(x * cos, x.roll(self.hd // 2, -1), sin)

    def scratch(self, name: str, *shape: int) -> Tensor:
        """A reused tensor for an intermediate that the very next op consumes (valid until the next call with
        the same name): a decode step would otherwise allocate a dozen small tensors per layer."""
        t = self.scratches.get(name)
        if t is None or t.shape != shape:
            t = self.scratches[name] = torch.empty(shape, dtype=self.dtype, device=self.dev)
        return t

    def _norm(self, x: Tensor, d_eps: Tensor, d_eps_f: float) -> Tensor:
        if self.kernels is not None:
            return self.kernels.rms_norm(x, self.scratch("norm", *x.shape), d_eps_f)
        return _rms(x, d_eps)

    def _mlp_and_residual(self, x: Tensor, attn: Tensor, L: _Layer) -> Tensor:
        x = torch.addmm(x, attn, L.wo_t) if L.bo is None else x + F.linear(attn, L.wo_t.t(), L.bo)
        h = self._norm(x, L.eps2, L.eps2_f)
        h2 = h.expand(2, *h.shape)  # gate and up as one batched GEMM (splits better over threads than one mm)
        gu = torch.bmm(h2, L.wgu) if L.bgu is None else torch.baddbmm(L.bgu, h2, L.wgu)
        if self.kernels is not None:
            h = self.kernels.swiglu(gu, self.scratch("act", *gu.shape[1:]))
        else:
            h = F.silu(gu[0]).mul_(gu[1])
        return torch.addmm(x, h, L.wd_t) if L.bd is None else x + F.linear(h, L.wd_t.t(), L.bd)

    def _logits(self, x: Tensor) -> Tensor:
        return _mm(self._norm(x, self.norm_eps, self.norm_eps_f), self.lm_w, self.lm_b)

    def prefill(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids/mask [Bu, P] (left-padded unique prompts) -> next-token logits [Bu * n, V]; fills the cache."""
        Bu, P = ids.shape
        H, K, hd, dev = self.H, self.K, self.hd, self.dev
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)  # [Bu, P]
        cos, sin = self.cos_tab[pos][:, :, None], self.sin_tab[pos][:, :, None]  # [Bu, P, 1, hd]
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        eye = torch.eye(P, dtype=torch.bool, device=dev)
        keep = causal & (mask[:, None, :] | eye)  # [Bu, P, P]; pad queries see themselves (no empty rows)
        abias = torch.zeros(Bu, 1, 1, P, P, dtype=self.dtype, device=dev).masked_fill_(
            ~keep[:, None, None], -torch.inf
        )
        x = F.embedding(ids, self.embed).view(Bu * P, -1)  # [Bu*P, D]
        R = H // K
        keys: list[Tensor] = []  # per layer [Bu, K, P, hd] (rotated)
        values: list[Tensor] = []
        for li, L in enumerate(self.layers):
            qkv = _mm(_rms(x, L.eps1), L.wqkv, L.bqkv).view(Bu, P, H + 2 * K, hd)
            qk = self._rope(qkv[:, :, : H + K], cos, sin)  # [Bu, P, H+K, hd]
            k = qk[:, :, H:].transpose(1, 2).contiguous()  # [Bu, K, P, hd]
            v = qkv[:, :, H + K :].transpose(1, 2).contiguous()
            keys.append(k)
            values.append(v)
            # The last layer only needs the last position (the one whose logits are returned).
            Q = 1 if li == len(self.layers) - 1 else P
            q = qk[:, P - Q :, :H].transpose(1, 2).reshape(Bu, K, R * Q, hd)  # heads grouped per kv head
            scores = torch.matmul(q, k.transpose(-1, -2)).view(Bu, K, R, Q, P) * self.scale
            p = (scores + abias[..., P - Q :, :]).softmax(-1).view(Bu, K, R * Q, P)
            a = torch.matmul(p, v).view(Bu, H, Q, hd).transpose(1, 2).reshape(Bu * Q, H * hd)
            if Q != P:
                x = x.view(Bu, P, -1)[:, P - Q :].reshape(Bu * Q, -1)
            x = self._mlp_and_residual(x, a, L)
        state = _CAttention if self.kernels is not None else _TorchAttention
        self.attn = state(self, mask, keys, values)
        return self._logits(x).repeat_interleave(self.n, 0)  # x: [Bu, D], every prompt's last token

    def step(self, tok: Tensor, s: int) -> Tensor:
        """Feed generated token ``s`` of every row ([B] long) -> next-token logits [B, V]."""
        assert self.attn is not None, "prefill first"
        x = F.embedding(tok, self.embed)  # [B, D]
        for li, L in enumerate(self.layers):
            qkv = _mm(self._norm(x, L.eps1, L.eps1_f), L.wqkv, L.bqkv)  # [B, (H+2K)*hd]
            x = self._mlp_and_residual(x, self.attn(li, qkv, s), L)
        return self._logits(x)


_C_MAX_LEN = 32768  # the C attention keeps one row's scores on the stack
KEEP_BYTES = 64 << 20  # buffers kept in a workspace between generate calls, in all (a real model's KV cache at
# RL batch sizes, ~300 MB for SmolLM2 x 64 x 100 tokens, is left to the allocator: re-faulting it costs ~0.1 s)


class _CAttention:
    """Decode-step attention with the C kernel. A prompt's keys/values are shared by its samples, its real tokens
    moved to the front; keys are stored in tiles of ``kernels.tile`` keys (``[.., slots / tile, hd, tile]``),
    values as ``[.., slots, hd]`` (see ``decode_kernels.c``)."""

    def __init__(self, dec: FastDecoder, mask: Tensor, keys: list[Tensor], values: list[Tensor]) -> None:
        assert dec.kernels is not None
        self.dec, self.kernels = dec, dec.kernels
        Bu, P = mask.shape
        tile, L = self.kernels.tile, len(keys)
        Pt, St = -(-P // tile) * tile, -(-(dec.max_len - P) // tile) * tile  # slots: whole tiles
        self.plen = mask.sum(-1).to(torch.int64)
        # Real prompt tokens first: slot j of prompt u holds its position P - plen[u] + j (left padding).
        src = (P - self.plen[:, None] + torch.arange(Pt, device=dec.dev)).clamp(max=P - 1)  # [Bu, Pt]
        src = src[:, None, :, None].expand(Bu, dec.K, Pt, dec.hd)
        self.pv = [v.gather(2, src) for v in values]  # [Bu, K, Pt, hd]
        self.pk = [k.gather(2, src).view(Bu, dec.K, Pt // tile, tile, dec.hd).transpose(3, 4).contiguous()
                   for k in keys]  # fmt: skip
        self.gk = dec.buffer("gk", L, dec.B, dec.K, St // tile, dec.hd, tile).unbind(0)
        self.gv = dec.buffer("gv", L, dec.B, dec.K, St, dec.hd).unbind(0)
        self.cos, self.sin = dec.cos_tab.contiguous(), dec.sin_tab.contiguous()

    def __call__(self, li: int, qkv: Tensor, s: int) -> Tensor:
        d = self.dec
        out = d.scratch("attn", d.B, d.H * d.hd)
        return self.kernels.attn_step(qkv, self.cos, self.sin, self.pk[li], self.pv[li], self.plen, self.gk[li],
                                      self.gv[li], out, d.n, d.H, d.K, s, d.scale)


class _TorchAttention:
    """Decode-step attention in torch ops.

    The prompt keys/values ``[Bu*K, P, hd]`` are stored once per prompt and shared by its ``n`` samples (their
    queries are batched into one small GEMM against them). The generated part is time-major,
    ``[S, Bu, K, n, hd]``, so the keys/values of the first ``s+1`` steps form one contiguous block that is scored
    with streaming elementwise ops (on CPU this beats hundreds of 1-row GEMMs). One softmax runs over the
    concatenated scores. (Measured alternatives that lost: batch-major caches with bmm, SDPA, embedding_bag.)
    """

    def __init__(self, dec: FastDecoder, mask: Tensor, keys: list[Tensor], values: list[Tensor]) -> None:
        self.dec = dec
        H, K, hd, n, dev, dtype = dec.H, dec.K, dec.hd, dec.n, dec.dev, dec.dtype
        Bu, P = mask.shape
        S = dec.max_len - P
        # Rotary rows per step (same for a prompt's n samples), prompt-key bias, caches.
        dpos = mask.sum(-1)[None, :] + torch.arange(S, device=dev)[:, None]  # [S, Bu]
        qscale = torch.ones(H + K, 1, dtype=dtype, device=dev)
        qscale[:H] = dec.scale  # the attention scale is folded into the query rows' rotary tables
        self.dcs = list(zip(dec.cos_tab[dpos][:, :, None, None] * qscale,
                            dec.sin_tab[dpos][:, :, None, None] * qscale))  # fmt: skip
        bias = torch.zeros(Bu, K, n * (H // K), P, dtype=dtype, device=dev)
        self.pbias = bias.masked_fill_(~mask[:, None, None], -torch.inf).view(Bu * K, -1, P)  # pad keys
        gen = dec.buffer("gen", 2, len(keys), S, Bu * K * n, hd)
        self.kg, self.vg = gen[0].unbind(0), gen[1].unbind(0)  # per layer [S, Bu*K*n, hd]; [:s+1] read
        # Preallocated scratch for the per-step elementwise attention products (growing per-step
        # temporaries would be fresh mmaps, i.e. hundreds of page faults per step).
        self.work = dec.buffer("work", S, Bu * K * n, H // K, hd)
        self.kpT = [k.view(Bu * K, P, hd).transpose(1, 2) for k in keys]  # per layer [Bu*K, hd, P]
        self.vp = [v.view(Bu * K, P, hd) for v in values]  # per layer [Bu*K, P, hd]
        self.P, self.Bu = P, Bu

    def __call__(self, li: int, qkv: Tensor, s: int) -> Tensor:
        d = self.dec
        B, Bu, n, H, K, hd, P = d.B, self.Bu, d.n, d.H, d.K, d.hd, self.P
        R, T, half = H // K, s + 1, hd // 2  # query heads per kv head; generated keys so far
        G = Bu * K * n  # (prompt, kv head, sample) triples
        cos, sin = self.dcs[s]  # [Bu, 1, H+K, hd] rotary rows for this step, queries pre-scaled
        kg, vg, kpT, vp, work = self.kg[li], self.vg[li], self.kpT[li], self.vp[li], self.work
        qkv = qkv.view(Bu, n, H + 2 * K, hd)
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
        return o.view(Bu, K, n, R * hd).transpose(1, 2).reshape(B, H * hd)
