"""Per-turn rewards of multi-turn / multi-agent episodes placed on token positions (the counterpart of
:func:`llmrl.algos.advantages.token_rewards`, which puts one score on a sequence's last token)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def turn_token_rewards(turn_rewards: Sequence[Sequence[float]], turn_spans: Sequence[Sequence[tuple[int, int]]],
                       mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0) -> Tensor:
    """r_{b,p} = turn_rewards[b][k] at the position p of the last token of turn k of row b, − kl_coef·kl_{b,p},
    times mask.

    Args:
        turn_rewards: per row, one reward per turn.
        turn_spans: per row, each turn's ``[start, end)`` in token indices (``Episode.turn_spans``); the
            turn's last token ``end − 1`` is target position ``end − 2`` of the shifted mask (see
            :class:`llmrl.core.types.Batch`).
        mask: [B, T] float mask of policy targets; a turn whose last token is masked out (e.g. by
            ``rollout.overlong_filter``) gets no reward.
        kl: optional [B, T] per-token KL estimate (detached); kl_coef: its weight β.

    Returns:
        [B, T] rewards, 0 where the mask is 0.
    """
    B, T = mask.shape
    if len(turn_rewards) != B or len(turn_spans) != B:
        raise ValueError(f"turn_token_rewards: {len(turn_rewards)} reward rows and {len(turn_spans)} span rows "
                         f"for a batch of {B}")
    rewards = torch.zeros_like(mask)
    for b, (rs, spans) in enumerate(zip(turn_rewards, turn_spans)):
        if len(rs) != len(spans):
            raise ValueError(f"turn_token_rewards: row {b} has {len(rs)} turn rewards for {len(spans)} turns")
        if not bool((mask[b] > 0).any()):  # a row without targets (rollout.overlong_filter dropped it): no reward
            continue
        for r, (start, end) in zip(rs, spans):
            p = end - 2
            if end <= start or not 0 <= p < T:
                raise ValueError(f"turn_token_rewards: row {b}: turn [{start}, {end}) has no target position in "
                                 f"[0, {T})")
            rewards[b, p] += float(r)
    if kl is not None and kl_coef != 0.0:
        rewards = rewards - kl_coef * kl.to(mask.dtype)
    return rewards * mask
