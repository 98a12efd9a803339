"""Generator backend on ``model.generate`` — the comparison baseline (what TRL's GRPOTrainer calls) and a
fallback for models nothing else supports."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig

from llmrl.models.loading import eval_mode
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.rollout.sampler import build_generations, eos_token_ids, find_stop, left_pad, unwrap_peft


def first_stop_index(tokenizer: Any, ids: list[int], stops: list[str]) -> int | None:
    """Index of the token whose addition first makes the decoded text hold a stop string (None: never)."""
    if not stops or find_stop(tokenizer.decode(ids, skip_special_tokens=True), stops) < 0:
        return None
    for i in range(len(ids)):
        if find_stop(tokenizer.decode(ids[: i + 1], skip_special_tokens=True), stops) >= 0:
            return i
    return None  # pragma: no cover - unreachable: the full text contains a stop string


class HFGenerateSampler:
    """Generator backed by ``model.generate`` with a clean GenerationConfig built from SamplingParams.

    Unset generation options take transformers' global defaults, not the model's generation_config
    (no repetition penalty etc.): it samples from the same distribution as :class:`KVCacheSampler`.
    Log-probs are recomputed from the raw per-step logits (``output_logits``) as
    log_softmax(logits / T) at the drawn token (T = 1 when greedy). Seeding forks the global torch RNG.
    """

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.eos_ids = eos_token_ids(model, tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)

    def _config(self, params: SamplingParams) -> GenerationConfig:
        sample = params.temperature > 0
        kw: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            pad_token_id=self.pad_id,
            eos_token_id=None if params.ignore_eos else list(self.eos_ids),
            output_logits=True,
            return_dict_in_generate=True,
        )
        if sample:
            kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        if params.stop:
            kw["stop_strings"] = list(params.stop)
        return GenerationConfig(**kw)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """For each prompt (token ids), ``params.n`` generations (see :class:`Generation`)."""
        dev = next(self.model.parameters()).device
        ids, mask = left_pad(prompts, self.pad_id)
        # n samples per prompt = rows repeated n times (num_return_sequences is refused for greedy).
        ids, mask = (
            ids.repeat_interleave(params.n, 0).to(dev),
            mask.repeat_interleave(params.n, 0).to(dev).long(),
        )
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        with eval_mode(self.model), torch.inference_mode(), \
                torch.random.fork_rng(devices=[] if dev.type == "cpu" else [dev]):
            torch.manual_seed(seed)
            extra = {"tokenizer": self.tokenizer} if params.stop else {}
            # generate() fills every unset field from model.generation_config (its EOS included, which
            # would break ignore_eos, and model-specific penalties): swap in a neutral one for the call.
            target = unwrap_peft(self.model)
            saved = target.generation_config
            target.generation_config = GenerationConfig()
            try:
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=self._config(params), **extra
                )
            finally:
                target.generation_config = saved
            new = out.sequences[:, ids.shape[1] :]  # [B, steps]
            logits = torch.stack(out.logits, 1).float()  # [B, steps, V]
            T = params.temperature if params.temperature > 0 else 1.0
            lps = torch.gather(F.log_softmax(logits / T, -1), -1, new[..., None])[..., 0]
        tok_rows, lp_rows = new.tolist(), lps.tolist()
        stop_at = (
            [first_stop_index(self.tokenizer, r, params.stop) for r in tok_rows] if params.stop else None
        )
        return build_generations(self.tokenizer, tok_rows, lp_rows, params, self.eos_ids, stop_at, params.n)
