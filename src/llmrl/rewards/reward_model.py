"""A trained reward model (a :class:`~llmrl.models.value_head.ScalarHeadModel`) as a reward function.

``reward_model_reward(path_or_model, tokenizer)`` returns a callable ``(completion, sample) -> float``:
the model's scalar at the last token of prompt + completion + EOS. The text is tokenised exactly as the
reward model saw its training pairs (:func:`llmrl.train.pairs.encode_pairs`): the prompt rendered with
:func:`llmrl.models.render_prompt` from ``{"prompt": sample[prompt_key]}`` and encoded with
:func:`llmrl.models.encode_prompt`, then ``sample["assistant_prefix"]`` (if any) + the completion, encoded
without special tokens, then EOS. Same truncation rule: the prompt keeps its last ``max_prompt_length``
tokens, the completion its first ``max_length − len(prompt)``.

A directory written by the ``reward_model`` trainer also holds ``reward_model.json`` (max lengths, chat
template use, whether the model is user-conditioned); its values are the defaults here. A user-conditioned
model (Dong et al., 2025, arXiv:2502.19158) reads the user from ``sample[user_key]`` and sees the prompt rewritten by
:func:`user_conditioned_prompt`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from llmrl.core.ops import right_pad
from llmrl.models.loading import ModelLoadError, encode_prompt, eval_mode, read_model_json, render_prompt

RM_META = "reward_model.json"
"""Tokenisation settings saved next to a trained reward model."""

Prompt = str | list[dict[str, str]]


def user_conditioned_prompt(prompt: Prompt, user_id: str | None) -> Prompt:
    """The prompt a user-conditioned reward model sees: ``"[user: ID]\\n"`` + text for a plain prompt; for
    chat messages the tag goes into the system message (prepended to an existing one, else a new first
    message). ``user_id=None`` leaves the prompt unchanged."""
    if user_id is None:
        return prompt
    tag = f"[user: {user_id}]"
    if isinstance(prompt, str):
        return f"{tag}\n{prompt}"
    msgs = [dict(m) for m in prompt]
    if msgs and msgs[0].get("role") == "system":
        msgs[0]["content"] = f"{tag}\n{msgs[0]['content']}"
        return msgs
    return [{"role": "system", "content": tag}, *msgs]


def encode_scored(tokenizer: Any, prompt: Prompt, completion: str, *, max_length: int, max_prompt_length: int,
                  chat_template: bool | None = None) -> list[int]:
    """Token ids of prompt + completion + EOS, truncated like :func:`llmrl.train.pairs.encode_pairs`."""
    if not 1 <= max_prompt_length < max_length:
        raise ValueError(f"need 1 <= max_prompt_length < max_length, got {max_prompt_length}, {max_length}")
    p = encode_prompt(tokenizer, render_prompt(tokenizer, {"prompt": prompt}, chat_template))[-max_prompt_length:]
    eos = tokenizer.eos_token_id
    c = tokenizer.encode(completion, add_special_tokens=False) + ([eos] if eos is not None else [])
    return p + c[: max_length - len(p)]


@torch.no_grad()
def score_texts(model: torch.nn.Module, tokenizer: Any, items: Sequence[tuple[Prompt, str]], *, max_length: int = 1024,
                max_prompt_length: int = 512, chat_template: bool | None = None, batch_size: int = 16) -> list[float]:
    """Reward-model scores of (prompt, completion) pairs, in order (right-padded batches, eval mode)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    dev = next(model.parameters()).device
    seqs = [encode_scored(tokenizer, p, c, max_length=max_length, max_prompt_length=max_prompt_length,
                          chat_template=chat_template) for p, c in items]
    out: list[float] = []
    with eval_mode(model):
        for s in range(0, len(seqs), batch_size):
            chunk = seqs[s : s + batch_size]
            ids, mask = right_pad(chunk, pad)
            out += model.score(ids.to(dev), mask.to(dev)).float().cpu().tolist()  # type: ignore[operator]
    return out


def read_rm_meta(path: str | Path) -> dict[str, Any]:
    """The ``reward_model.json`` settings of a saved reward model ({} when absent)."""
    f = Path(path) / RM_META
    meta = read_model_json(f) if f.is_file() else {}
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{f}: not a JSON object")
    return meta


class RewardModelReward:
    """A reward function backed by a reward model; also scores batches (:meth:`score_batch`). A reward pool
    (:mod:`llmrl.rewards.pool`) calls it in the calling process (``in_process``), on the live model."""

    in_process = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, prompt_key: str = "prompt",
                 user_key: str | None = None, chat_template: bool | None = None, max_length: int = 1024,
                 max_prompt_length: int = 512, batch_size: int = 16) -> None:
        if not hasattr(model, "score"):
            raise TypeError(f"reward model must have .score(input_ids, attention_mask) (a ScalarHeadModel), "
                            f"got {type(model).__name__}")
        self.model, self.tokenizer = model, tokenizer
        self.prompt_key, self.user_key, self.chat_template = prompt_key, user_key, chat_template
        self.max_length, self.max_prompt_length, self.batch_size = max_length, max_prompt_length, batch_size

    def _item(self, completion: str, sample: Mapping[str, Any]) -> tuple[Prompt, str]:
        if self.prompt_key not in sample:
            raise KeyError(f"reward model: the sample has no {self.prompt_key!r} field")
        prompt = sample[self.prompt_key]
        if self.user_key is not None:
            uid = sample.get(self.user_key)
            prompt = user_conditioned_prompt(prompt, None if uid is None else str(uid))
        return prompt, str(sample.get("assistant_prefix", "")) + completion

    def score_batch(self, completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float]:
        items = [self._item(c, s) for c, s in zip(completions, samples, strict=True)]
        return score_texts(self.model, self.tokenizer, items, max_length=self.max_length,
                           max_prompt_length=self.max_prompt_length, chat_template=self.chat_template,
                           batch_size=self.batch_size)

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> float:
        return self.score_batch([completion], [sample])[0]


def reward_model_reward(path_or_model: str | Path | torch.nn.Module, tokenizer: Any = None, *,
                        prompt_key: str = "prompt", user_key: str | None = None, chat_template: bool | None = None,
                        max_length: int | None = None, max_prompt_length: int | None = None,
                        dtype: str = "float32", device: str | torch.device = "cpu",
                        batch_size: int = 16) -> RewardModelReward:
    """A reward function ``(completion, sample) -> float`` from a reward-model directory (written by the
    ``reward_model`` trainer or :meth:`ScalarHeadModel.save`) or an in-memory model + ``tokenizer``.

    Unset options come from the directory's ``reward_model.json`` (then: max_length 1024,
    max_prompt_length 512, chat template when the tokenizer has one). ``user_key`` defaults to
    the column the model was trained with (``user_id`` unless set) for a user-conditioned model and to no
    conditioning otherwise.
    """
    meta: dict[str, Any] = {}
    if isinstance(path_or_model, torch.nn.Module):
        model = path_or_model
        if tokenizer is None:
            raise ValueError("reward_model_reward: pass the tokenizer with an in-memory model")
    else:
        from llmrl.models.loading import load_tokenizer
        from llmrl.models.value_head import load_scalar_model

        model = load_scalar_model(path_or_model, dtype=dtype).to(device)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path_or_model)
        meta = read_rm_meta(path_or_model)
        model.eval()
    if user_key is None and meta.get("user_conditioned"):
        user_key = str(meta.get("user_key", "user_id"))
    return RewardModelReward(
        model, tokenizer, prompt_key=prompt_key, user_key=user_key,
        chat_template=chat_template if chat_template is not None else meta.get("chat_template"),
        max_length=max_length or int(meta.get("max_length", 1024)),
        max_prompt_length=max_prompt_length or int(meta.get("max_prompt_length", 512)), batch_size=batch_size)


__all__ = ["RM_META", "RewardModelReward", "encode_scored", "read_rm_meta", "reward_model_reward", "score_texts",
           "user_conditioned_prompt"]
