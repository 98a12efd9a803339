"""ReVISE decoding pieces (arXiv 2502.14565; PAPERS.md §11; docs/agents.md): a trajectory is
``y_1 [refine] y_2 [refine] ... y_k [eos]``; the model accepts an answer with EOS or rejects it with ``[refine]``
and writes a new one.

* :func:`split_answers` cuts a sampled trajectory (token ids) into its answers;
* :func:`eos_confidence` is the model's verification confidence c = P([eos] | x, y) after each answer;
* :func:`weighted_vote` is confidence-aware decoding (weights c_i: argmax_y sum_{i: y_i = y} c_i) and, with
  unit weights, majority voting.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmrl.models.device import module_device
from llmrl.models.loading import eval_mode


@dataclass
class Trajectory:
    """The answers of one sampled trajectory (token ids, without the [refine] / EOS marks between them)."""

    answers: list[list[int]]
    accepted: bool  # the last answer was closed by EOS (else: by [refine] then the token budget ran out, or cut)

    @property
    def first(self) -> list[int]:
        """The first answer: what plain decoding gives."""
        return self.answers[0]

    @property
    def final(self) -> list[int]:
        """The answer the refine loop ends with: the accepted one; when the budget ran out, the last answer that
        was completed (followed by [refine]), else the unfinished one."""
        if self.accepted or len(self.answers) == 1:
            return self.answers[-1]
        return self.answers[-2]

    @property
    def refines(self) -> int:
        """How many times the model emitted [refine]."""
        return len(self.answers) - 1


def split_answers(token_ids: Sequence[int], refine_id: int, eos_ids: Sequence[int]) -> Trajectory:
    """Cut ``token_ids`` at each ``refine_id`` and at the first EOS (what follows an EOS is ignored).

    >>> split_answers([5, 6, 9, 7, 2, 8], refine_id=9, eos_ids=[2])
    Trajectory(answers=[[5, 6], [7]], accepted=True)
    """
    eos = set(int(e) for e in eos_ids)
    answers: list[list[int]] = [[]]
    for t in token_ids:
        if t in eos:
            return Trajectory(answers, True)
        if t == refine_id:
            answers.append([])
        else:
            answers[-1].append(int(t))
    return Trajectory(answers, False)


def eos_confidence(model: nn.Module, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                   eos_id: int, pad_id: int = 0, batch_size: int = 256) -> list[float]:
    """c_i = P(eos_id | prompt_i + answer_i) under ``model`` (temperature 1, full vocabulary), one per row.

    Rows are right-padded; the probability is read at each row's last real token."""
    if len(prompts) != len(answers):
        raise ValueError(f"eos_confidence: {len(prompts)} prompts for {len(answers)} answers")
    device = module_device(model)
    out: list[float] = []
    with eval_mode(model), torch.no_grad():
        for s in range(0, len(prompts), batch_size):
            rows = [list(p) + list(a) for p, a in zip(prompts[s : s + batch_size], answers[s : s + batch_size])]
            if any(not r for r in rows):
                raise ValueError("eos_confidence: an empty prompt + answer has no next-token distribution")
            L = max(len(r) for r in rows)
            ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
            attn = torch.zeros(len(rows), L, dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
                attn[i, : len(r)] = 1
            last = attn.sum(1) - 1  # [b] position of each row's last token
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits  # [b, L, V]
            at = logits[torch.arange(len(rows), device=device), last.to(device)].float()  # [b, V]
            out += torch.softmax(at, -1)[:, eos_id].tolist()
    return out


def weighted_vote(keys: Sequence[Hashable | None], weights: Sequence[float] | None = None) -> Hashable | None:
    """argmax_k sum of the weights of the entries equal to k (None entries, unparsed answers, never win); unit
    weights = majority vote. Ties go to the key seen first. None when every key is None.

    >>> weighted_vote(["3", "4", "4", "3"], [0.9, 0.2, 0.3, 0.1])
    '3'
    >>> weighted_vote(["3", "4", "4", "3", "4"])
    '4'
    """
    if weights is not None and len(weights) != len(keys):
        raise ValueError(f"weighted_vote: {len(keys)} keys and {len(weights)} weights")
    totals: dict[Any, float] = {}
    for i, k in enumerate(keys):
        if k is not None:
            totals[k] = totals.get(k, 0.0) + (1.0 if weights is None else float(weights[i]))
    if not totals:
        return None
    return max(totals, key=lambda k: totals[k])  # max keeps the first of equal totals (dict order = first seen)


__all__ = ["Trajectory", "eos_confidence", "split_answers", "weighted_vote"]
