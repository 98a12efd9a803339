"""Adding a special token to a model and its tokenizer (ReVISE's ``[refine]``; docs/agents.md).

:func:`add_special_token` registers the token as one never-split special token, grows the input embedding (and
an untied LM head) to cover its id, and initialises the new row(s) to the mean of the existing rows, so the new
token starts as an "average" token: its logit is the mean logit, not a random one. Existing rows are kept
bit-for-bit. ``save_pretrained`` / :func:`llmrl.models.loading.save_model` then write the token with the
tokenizer (``added_tokens``) and the grown matrices with the weights, so a reloaded model has the same id.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def has_token(tokenizer: Any, token: str) -> bool:
    """Whether ``token`` is one token of ``tokenizer``'s vocabulary (added tokens included)."""
    return token in tokenizer.get_vocab()


def add_special_token(model: nn.Module, tokenizer: Any, token: str) -> int:
    """Add ``token`` as a special token of ``tokenizer`` and give ``model`` an embedding (and LM-head) row for
    it; returns its id. Idempotent: a token the tokenizer already has (a reloaded model) keeps its id and row.

    New rows = the mean of the rows of the ids the tokenizer had before (tied or untied head; a head bias gets
    its mean too). When the embedding already has spare rows past the vocabulary (padded vocabularies), the id
    lands in one of them and no resize is needed; otherwise ``resize_token_embeddings`` grows both matrices
    (and ``config.vocab_size``)."""
    if not token or not isinstance(token, str):
        raise ValueError(f"special token must be a non-empty string, got {token!r}")
    if hasattr(model, "peft_config"):
        raise ValueError("add_special_token: add the token before LoRA adapters are applied")
    if has_token(tokenizer, token):
        tid = int(tokenizer.convert_tokens_to_ids(token))
        rows = model.get_input_embeddings().weight.shape[0]
        if tid >= rows:
            raise ValueError(f"tokenizer has {token!r} (id {tid}) but the model's embedding has only {rows} rows")
        return tid
    n_old = len(tokenizer)
    tokenizer.add_tokens([token], special_tokens=True)
    tid = int(tokenizer.convert_tokens_to_ids(token))
    if tid < n_old or len(tokenizer.encode(token, add_special_tokens=False)) != 1:
        raise ValueError(f"tokenizer did not add {token!r} as one new token (id {tid})")
    if tid >= model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(tid + 1, mean_resizing=False)
    emb = model.get_input_embeddings().weight  # [V, H]
    head = model.get_output_embeddings()
    with torch.no_grad():
        emb[tid] = emb[:n_old].float().mean(0).to(emb.dtype)
        if head is not None and head.weight.data_ptr() != emb.data_ptr():  # untied LM head
            head.weight[tid] = head.weight[:n_old].float().mean(0).to(head.weight.dtype)
        if head is not None and getattr(head, "bias", None) is not None:
            head.bias[tid] = head.bias[:n_old].float().mean().to(head.bias.dtype)
    return tid


__all__ = ["add_special_token", "has_token"]
