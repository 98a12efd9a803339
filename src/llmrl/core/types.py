"""The Episode: the one unit every algorithm consumes, single- or multi-turn."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

Sample = dict[str, Any]
"""A task sample: at least ``task``, ``prompt`` (str or chat messages) and ``answer`` (the gold answer)."""


@dataclass
class Episode:
    """Prompt tokens followed by one or more turns.

    ``tokens``, ``loss_mask`` and ``logprobs`` have one entry per token of the whole sequence.
    ``loss_mask[i] == 1`` iff token i was produced by the policy being trained (0 = prompt, environment,
    other agent). ``logprobs[i]`` is the log-prob the sampler gave token i (0.0 where loss_mask is 0).
    Single-turn is the special case of one turn. Per-turn rewards of multi-turn episodes (environments,
    multi-agent discussions): ``metadata["turn_rewards"]``, one per ``turn_spans`` entry, summing to
    ``reward``; the RL loop puts each on its turn's last token.
    """

    tokens: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    sample: Sample
    prompt_len: int = 0
    completion: str = ""  # text of the policy's last turn (every turn: metadata["turn_texts"])
    reward: float = 0.0
    reward_components: dict[str, float] = field(default_factory=dict)
    group_id: int = 0
    agent_id: int = 0
    turn_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each policy turn
    truncated: bool = False  # a turn hit max_new_tokens without stopping
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.tokens) == len(self.loss_mask) == len(self.logprobs)):
            raise ValueError(
                f"Episode lengths disagree: tokens={len(self.tokens)} loss_mask={len(self.loss_mask)} "
                f"logprobs={len(self.logprobs)}"
            )

    @property
    def num_policy_tokens(self) -> int:
        return sum(self.loss_mask)

    @classmethod
    def single_turn(
        cls, prompt_ids: list[int], completion_ids: list[int], completion_logprobs: list[float], sample: Sample,
        **kw: Any,
    ) -> Episode:
        n_p, n_c = len(prompt_ids), len(completion_ids)
        return cls(
            tokens=list(prompt_ids) + list(completion_ids),
            loss_mask=[0] * n_p + [1] * n_c,
            logprobs=[0.0] * n_p + list(completion_logprobs),
            sample=sample,
            prompt_len=n_p,
            turn_spans=[(n_p, n_p + n_c)],
            **kw,
        )

    def append(self, ids: list[int], *, policy: bool, logprobs: list[float] | None = None) -> None:
        """Append a turn: policy tokens (trainable) or environment/other-agent tokens (mask 0)."""
        start = len(self.tokens)
        self.tokens += list(ids)
        self.loss_mask += [1 if policy else 0] * len(ids)
        if policy:
            if logprobs is None or len(logprobs) != len(ids):
                raise ValueError("policy tokens need one sampling log-prob each")
            self.logprobs += list(logprobs)
            self.turn_spans.append((start, start + len(ids)))
        else:
            self.logprobs += [0.0] * len(ids)


@dataclass
class Batch:
    """Episodes collated into right-padded tensors.

    Targets are shifted: position t of ``mask``/``old_logprobs`` refers to token t+1 of ``input_ids``,
    predicted from the logits at position t.
    """

    input_ids: Tensor  # [B, L]
    attention_mask: Tensor  # [B, L]
    mask: Tensor  # [B, L-1] float, 1 = policy token to train on
    old_logprobs: Tensor  # [B, L-1] sampling log-probs
    scores: Tensor  # [B] scalar reward per episode
    group_ids: Tensor  # [B] long
    advantages: Tensor | None = None  # [B, L-1], filled by the trainer
    ref_logprobs: Tensor | None = None  # [B, L-1] reference-model log-probs, when a reference is used
    values: Tensor | None = None  # [B, L-1] critic values V(s_t) at sampling time (PPO / DVPO)
    returns: Tensor | None = None  # [B, L-1] value targets of the critic (GAE returns)
    loss_weights: Tensor | None = None  # [B, L-1] constant policy-loss weights per token (rollout correction)

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    @classmethod
    def collate(cls, episodes: list[Episode], pad_id: int, dtype: torch.dtype = torch.float32) -> Batch:
        if not episodes:
            raise ValueError("cannot collate an empty list of episodes")
        L = max(len(e.tokens) for e in episodes)
        B = len(episodes)
        ids = torch.full((B, L), pad_id, dtype=torch.long)
        attn = torch.zeros(B, L, dtype=torch.long)
        lmask = torch.zeros(B, L, dtype=dtype)
        lps = torch.zeros(B, L, dtype=dtype)
        for i, e in enumerate(episodes):
            n = len(e.tokens)
            ids[i, :n] = torch.tensor(e.tokens, dtype=torch.long)
            attn[i, :n] = 1
            lmask[i, :n] = torch.tensor(e.loss_mask, dtype=dtype)
            lps[i, :n] = torch.tensor(e.logprobs, dtype=dtype)
        return cls(
            input_ids=ids,
            attention_mask=attn,
            mask=lmask[:, 1:].contiguous(),
            old_logprobs=lps[:, 1:].contiguous(),
            scores=torch.tensor([e.reward for e in episodes], dtype=dtype),
            group_ids=torch.tensor([e.group_id for e in episodes], dtype=torch.long),
        )

    def to(self, device: torch.device | str) -> Batch:
        """The batch with every tensor on ``device`` (this batch itself when they all are there already, as
        on the CPU): batches are built on the CPU and moved where they meet the model."""
        dev = torch.device(device)
        names = [f.name for f in fields(self)]
        if all(t is None or t.device == dev for t in (getattr(self, n) for n in names)):
            return self
        return Batch(**{n: None if getattr(self, n) is None else getattr(self, n).to(dev) for n in names})

    def select(self, idx: Tensor | slice) -> Batch:
        """Rows `idx`, trimmed to the longest remaining sequence."""
        attn = self.attention_mask[idx]
        L = int(attn.sum(1).max().item()) if attn.numel() else 1
        L = max(L, 2)

        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[idx][:, : L - 1]

        return Batch(
            input_ids=self.input_ids[idx][:, :L],
            attention_mask=attn[:, :L],
            mask=self.mask[idx][:, : L - 1],
            old_logprobs=self.old_logprobs[idx][:, : L - 1],
            scores=self.scores[idx],
            group_ids=self.group_ids[idx],
            advantages=cut(self.advantages),
            ref_logprobs=cut(self.ref_logprobs),
            values=cut(self.values),
            returns=cut(self.returns),
            loss_weights=cut(self.loss_weights),
        )
