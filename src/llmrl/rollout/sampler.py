"""KV-cache sampler: batched sampling with per-token log-probs, built for small models on CPU.

Two decoders share one sampling loop:

* :class:`~llmrl.rollout.fast_decoder.FastDecoder` for Llama / Qwen2 / Mistral models: the model's own weights,
  a preallocated static KV cache shared by each prompt's ``n`` samples, fused C kernels on CPU when a compiler
  is available (see :mod:`llmrl.rollout.fast_decoder`);
* :class:`HFDecoder`, which calls the Hugging Face forward with its own cache, for any other model.

Both give the same logits as ``model(input_ids, attention_mask, position_ids)`` up to float rounding.
Rows are the prompts repeated ``n`` times (``[p0]*n + [p1]*n + ...``). Finished rows keep being computed
(the batch is static) but their outputs are ignored; the loop ends when every row has finished.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmrl.models.loading import eval_mode
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.rollout.fast_decoder import FastDecoder, fast_path_issue, unwrap_peft

__all__ = ["FastDecoder", "HFDecoder", "KVCacheSampler", "fast_path_issue", "sample_loop", "unwrap_peft"]


def eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """EOS ids from the model's generation config and the tokenizer (union, order kept)."""
    ids: list[int] = []
    gc = getattr(model, "generation_config", None)
    for src in (getattr(gc, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        for i in src if isinstance(src, (list, tuple)) else [src]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


def sample_next(logits: Tensor, params: SamplingParams,
                gen: torch.Generator | list[torch.Generator] | None) -> tuple[Tensor, Tensor]:
    """Draw one token per row.  logits [B, V] -> (tokens [B] long, logprobs [B] float32). ``gen``: one RNG for
    every row, or a list of K (one per prompt: rows ``i·B/K .. (i+1)·B/K - 1`` draw from ``gen[i]``).

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
    if isinstance(gen, list):  # per prompt: the same draws as sampling that prompt alone
        per = total.shape[0] // len(gen)
        u = torch.cat([torch.rand((per, 1), generator=g, device=cdf.device, dtype=cdf.dtype) for g in gen])
    else:
        u = torch.rand(total.shape, generator=gen, device=cdf.device, dtype=cdf.dtype)
    u.mul_(total)
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

    def release(self) -> None:
        """Decoding is over (its caches may be reused or freed)."""
        ...


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

    def release(self) -> None:
        self.cache = None

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
    :class:`HFDecoder`. ``kernels``: the fast decoder's C kernels, None = when they apply (float32 on CPU with a
    C compiler, see :mod:`llmrl.rollout.ckernels`), False = its pure-torch ops. Sampling is seeded by
    ``params.seed`` (a torch.Generator; without a seed one is drawn from the global torch RNG). The model is put
    in eval mode for the call and restored after.
    """

    supports_prompt_seeds = True  # SamplingParams.prompt_seeds: one RNG per prompt

    def __init__(self, model: nn.Module, tokenizer: Any, *, fast_path: bool | None = None,
                 kernels: bool | None = None) -> None:
        self.model, self.tokenizer, self.kernels = model, tokenizer, kernels
        self.fast_issue = fast_path_issue(model) if fast_path is not False else "disabled by fast_path=False"
        if fast_path and self.fast_issue is not None:
            raise ValueError(f"fast path unavailable: {self.fast_issue}")
        self.eos_ids = eos_token_ids(model, tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self.workspace: dict[str, Tensor] = {}  # KV-cache buffers kept between calls (see FastDecoder)

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
            return FastDecoder(self.model, n, batch, total_len, kernels=self.kernels, workspace=self.workspace)
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
    gen: torch.Generator | list[torch.Generator] = torch.Generator(device=device).manual_seed(seed)
    if params.prompt_seeds is not None:  # one RNG per prompt (SamplingParams.prompt_seeds)
        if len(params.prompt_seeds) != len(prompts):
            raise ValueError(f"prompt_seeds: {len(params.prompt_seeds)} seeds for {len(prompts)} prompts")
        gen = [torch.Generator(device=device).manual_seed(s) for s in params.prompt_seeds]
    eos = torch.tensor([] if params.ignore_eos else eos_ids, dtype=torch.long, device=device)
    with torch.inference_mode():
        dec = open_decoder(n, B, P + S)
        out_tok = torch.empty(B, S, dtype=torch.long, device=device)
        out_lp = torch.empty(B, S, dtype=torch.float32, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        watch = _StopWatch(tokenizer, B, params, eos_ids) if params.stop else None
        try:
            logits = dec.prefill(ids, mask)
            steps = 0
            for s in range(S):
                tok, lp = sample_next(logits, params, gen)
                out_tok[:, s], out_lp[:, s] = tok, lp
                steps = s + 1
                if all_finished(watch, done, tok, eos, s) or s == S - 1:
                    break
                logits = dec.step(tok, s)
        finally:
            dec.release()
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
