"""Preference pairs as tensors, and the log-probability of each completion under a model.

Layout of a :class:`PairBatch` of B pairs: rows ``0..B-1`` are prompt + chosen, rows ``B..2B-1`` are
prompt + rejected (the same prompt tokens), right-padded to the longest row. ``loss_mask`` is
target-aligned like :class:`llmrl.core.types.Batch`: ``loss_mask[r, t] == 1`` iff token ``t+1`` of row
``r`` is a completion token.

Tokenisation (the same as RL and SFT): the prompt is rendered with :func:`llmrl.models.render_prompt`
(chat template when the tokenizer has one, unless ``chat_template=False``; a pair's ``meta["assistant_prefix"]``
is appended like a task sample's) and encoded with :func:`llmrl.models.encode_prompt`; each completion is ``tokenizer.encode(text, add_special_tokens=False)``
followed by EOS.

Truncation rule (applied per pair, in this order):

1. a prompt longer than ``max_prompt_length`` tokens keeps its LAST ``max_prompt_length`` tokens (the
   part next to the completion; a leading BOS / system text is what gets dropped);
2. each completion (EOS included) keeps its FIRST ``max_length - len(prompt)`` tokens, so that every row
   fits in ``max_length`` tokens. A cut completion loses its EOS.

``truncated[r]`` marks rows where either step removed tokens. ``max_prompt_length < max_length`` is
required, so every completion keeps at least one token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from llmrl.core.types import Batch
from llmrl.models.loading import encode_prompt, render_prompt
from llmrl.tasks.io import DataError
from llmrl.tasks.preference import PreferencePair
from llmrl.train.update import policy_logprobs


@dataclass
class PairBatch:
    input_ids: Tensor  # [2B, L]  rows 0..B-1 = prompt+chosen, rows B..2B-1 = prompt+rejected; right padded
    attention_mask: Tensor  # [2B, L]
    loss_mask: Tensor  # [2B, L-1] target-aligned: 1 where token t+1 is a completion token
    num_pairs: int  # B
    truncated: Tensor  # [2B] bool: the completion or prompt was truncated

    @property
    def completion_lengths(self) -> Tensor:
        """Completion tokens per row (EOS included unless cut).  -> [2B]"""
        return self.loss_mask.sum(-1)

    def rows(self, idx: Tensor | slice) -> tuple[Tensor, Tensor]:
        """(input_ids, loss_mask) of rows ``idx``, trimmed to their longest sequence."""
        attn = self.attention_mask[idx]
        L = max(int(attn.sum(1).max()) if attn.numel() else 2, 2)
        return self.input_ids[idx][:, :L], self.loss_mask[idx][:, : L - 1]

    def select(self, pairs: Tensor | Sequence[int]) -> PairBatch:
        """The sub-batch of the given pair indices (both rows of each pair), trimmed."""
        p = torch.as_tensor(pairs, dtype=torch.long)
        idx = torch.cat([p, p + self.num_pairs])
        ids, mask = self.rows(idx)
        return PairBatch(input_ids=ids, attention_mask=self.attention_mask[idx][:, : ids.shape[1]], loss_mask=mask,
                         num_pairs=len(p), truncated=self.truncated[idx])


def _pad_id(tokenizer: Any) -> int:
    for t in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if t is not None:
            return int(t)
    return 0


def encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair], *, max_length: int, max_prompt_length: int,
                 chat_template: bool | None = None) -> PairBatch:
    """Tokenise ``pairs`` into a :class:`PairBatch` (see the module docstring for the truncation rule)."""
    if not pairs:
        raise ValueError("encode_pairs got no pairs")
    if not 1 <= max_prompt_length < max_length:
        raise ValueError(f"need 1 <= max_prompt_length < max_length, got max_prompt_length={max_prompt_length}, "
                         f"max_length={max_length}")
    eos = tokenizer.eos_token_id
    tail = [eos] if eos is not None else []
    seqs: list[list[int]] = []  # chosen rows, then rejected rows
    starts: list[int] = []
    cut: list[bool] = []
    rejected_rows: list[tuple[list[int], int, bool]] = []
    for i, pair in enumerate(pairs):
        sample = {"prompt": pair.prompt, **{k: pair.meta[k] for k in ("assistant_prefix",) if k in pair.meta}}
        prompt = encode_prompt(tokenizer, render_prompt(tokenizer, sample, chat_template))
        if not prompt:
            raise DataError(f"{pair.origin or f'pair {i}'}: the prompt is empty after tokenisation (nothing to "
                            "condition on)")
        p_cut = len(prompt) > max_prompt_length
        prompt = prompt[-max_prompt_length:]
        budget = max_length - len(prompt)
        rows = []
        for text in (pair.chosen, pair.rejected):
            comp = tokenizer.encode(text, add_special_tokens=False) + tail
            rows.append((prompt + comp[:budget], len(prompt), p_cut or len(comp) > budget))
        seqs.append(rows[0][0])
        starts.append(rows[0][1])
        cut.append(rows[0][2])
        rejected_rows.append(rows[1])
    for ids, start, c in rejected_rows:
        seqs.append(ids)
        starts.append(start)
        cut.append(c)
    n, L = len(seqs), max(max(len(s) for s in seqs), 2)
    input_ids = torch.full((n, L), _pad_id(tokenizer), dtype=torch.long)
    attention = torch.zeros(n, L, dtype=torch.long)
    loss_mask = torch.zeros(n, L - 1)
    for r, (ids, start) in enumerate(zip(seqs, starts)):
        input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[r, : len(ids)] = 1
        loss_mask[r, start - 1 : len(ids) - 1] = 1.0  # target t+1 in [start, len) <=> t in [start-1, len-1)
    return PairBatch(input_ids=input_ids, attention_mask=attention, loss_mask=loss_mask, num_pairs=len(pairs),
                     truncated=torch.tensor(cut, dtype=torch.bool))


def completion_logps(model: torch.nn.Module, batch: PairBatch, *, micro_batch_size: int = 0,
                     average: bool = False) -> Tensor:
    """Sum (``average=True``: mean) over completion tokens of log p(token | prefix) per row.  -> [2B]

    Chosen = ``[:B]``, rejected = ``[B:]``. Gradients flow when called with grad enabled; micro-batching
    (``micro_batch_size`` rows per forward, 0 = all) bounds activation memory for scoring under
    ``torch.no_grad()`` — for training, accumulate gradients over :meth:`PairBatch.select` sub-batches.
    Uses :func:`llmrl.train.update.policy_logprobs` (logits only from the first completion position); the
    result is on the model's device.
    """
    n = batch.input_ids.shape[0]
    size = micro_batch_size if micro_batch_size > 0 else n
    outs = []
    for s in range(0, n, size):
        ids, mask = batch.rows(slice(s, min(s + size, n)))
        b = ids.shape[0]
        view = Batch(input_ids=ids, attention_mask=torch.ones_like(ids), mask=mask, old_logprobs=torch.zeros_like(mask),
                     scores=torch.zeros(b), group_ids=torch.zeros(b, dtype=torch.long))
        lp, _ = policy_logprobs(model, view)  # [b, l-1], on the model's device
        outs.append(torch.where(mask.to(lp.device) > 0, lp, 0.0).sum(-1))
    out = torch.cat(outs)
    if average:
        out = out / batch.completion_lengths.clamp(min=1).to(out.device, out.dtype)
    return out


__all__ = ["PairBatch", "completion_logps", "encode_pairs"]
