"""Advantage estimators, registered by name in :data:`ADVANTAGES`, all with one signature::

    fn(rewards [B, T], mask [B, T], *, group_ids [B] long, baseline [B] | None, **own_options) -> [B, T]

``rewards`` are token-level: the scalar task score sits on the last valid token of each sequence (see
:func:`token_rewards`) and, when KL is folded into the reward, −β·kl_t sits on every valid token.
Sequence-level estimators use the per-sequence return R_b = Σ_t rewards_{b,t}·mask_{b,t} and broadcast
their advantage over the sequence's valid tokens. Outputs are 0 where the mask is 0 and carry no
gradient (inputs are detached). ``group_ids`` may be any integers (not necessarily 0..G-1); sequences
with equal ids form a group (samples of the same prompt).

Standard deviations: ``grpo`` uses the UNBIASED group std (as ``torch.std``, divisor n−1, like the
GRPO reference implementations), with std := 0 for groups of size 1 (advantage 0). ``reinforce_pp``
whitens with the unbiased std over all valid tokens of the batch (``llmrl.core.ops.masked_whiten``).

Turn-level estimators (``grpo_turn``, ``rloo_turn``; multi-turn episodes) declare ``needs_turn_ids = True``
and also take ``turn_ids`` [B, T] (:func:`turn_index`: the policy turn of each target position): they credit
each turn with its own return over the later turns (per-turn rewards sit on each turn's last token).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from llmrl.core.ops import batch_mean, masked_whiten
from llmrl.core.registry import Registry

AdvantageFn = Callable[..., Tensor]
"""``fn(rewards [B, T], mask [B, T], *, group_ids [B], baseline [B] | None, **own_options) -> [B, T]``."""

ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")
"""Name → advantage estimator (see the module docstring for the shared signature)."""


# ----------------------------------------------------------------------------------------- helpers
def token_rewards(scores: Tensor, mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0) -> Tensor:
    """Token-level rewards: r_{b,t} = score_b·[t = last valid token of b] − kl_coef·kl_{b,t}, times mask.

    Args:
        scores: [B] scalar score of each sequence.
        mask: [B, T] float mask; the "last valid token" is the largest t with mask 1 (holes allowed).
        kl: optional [B, T] per-token KL estimate (pass it detached; see ``llmrl.algos.kl``).
        kl_coef: β, the weight of the reward-side KL penalty.

    Returns:
        [B, T] rewards, 0 where the mask is 0. A sequence with an empty mask gets no score.
    """
    B, T = mask.shape
    valid = mask > 0  # [B, T]
    pos = torch.arange(T, device=mask.device).expand(B, T)  # [B, T]
    last = torch.where(valid, pos, 0).amax(dim=-1, keepdim=True)  # [B, 1]
    on_last = (pos == last) & valid  # [B, T]
    rewards = torch.where(on_last, scores.to(mask.dtype).unsqueeze(-1), 0.0)  # [B, T]
    if kl is not None and kl_coef != 0.0:
        rewards = rewards - kl_coef * kl.to(mask.dtype)
    return rewards * mask


def sequence_returns(rewards: Tensor, mask: Tensor) -> Tensor:
    """R_b = Σ_t rewards_{b,t}·mask_{b,t}.  [B, T] -> [B] (detached)."""
    return (rewards.detach() * mask).sum(-1)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """Token returns G_t = Σ_{s≥t, s valid} γ^{k(s)−k(t)} r_s, with k counting VALID tokens.

    Discounting is per policy token: masked positions (prompt, environment turns, padding) are skipped
    (G carries through them unchanged) and their output is 0. With γ = 1 this is a reverse cumulative
    sum. [B, T] -> [B, T] (detached).
    """
    r = rewards.detach() * mask  # [B, T]
    if gamma == 1.0:
        return r.flip(-1).cumsum(-1).flip(-1) * mask
    returns = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])  # [B]
    for t in range(r.shape[1] - 1, -1, -1):
        m = mask[:, t]
        running = m * (r[:, t] + gamma * running) + (1 - m) * running
        returns[:, t] = running
    return returns * mask


def _group_index(group_ids: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """Dense group index [B] (0..G-1) and the size of each item's group [B] (dtype of ``like``)."""
    _, inv = torch.unique(group_ids, return_inverse=True)  # [B]
    ones = torch.ones_like(like)  # [B]
    counts = torch.zeros_like(like).index_add_(0, inv, ones)  # [B]; only the first G entries are used
    return inv, counts[inv]


def _group_sum(x: Tensor, inv: Tensor) -> Tensor:
    """Σ of x over each item's group, returned per item.  [B] -> [B]."""
    return torch.zeros_like(x).index_add_(0, inv, x)[inv]


def _broadcast(adv_seq: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence advantage [B] -> [B, T] on the valid tokens."""
    return adv_seq.unsqueeze(-1) * mask


def _need(baseline: Tensor | None, name: str) -> Tensor:
    if baseline is None:
        raise ValueError(f"advantage estimator {name!r} needs `baseline` ([B] tensor); got None")
    return baseline.detach()


# -------------------------------------------------------------------------------------- estimators
@ADVANTAGES.register("grpo")
def grpo(
    rewards: Tensor,
    mask: Tensor,
    *,
    group_ids: Tensor,
    baseline: Tensor | None,
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """GRPO: A_b = (R_b − mean_g R) / (std_g R + eps), broadcast over b's valid tokens.

    std_g is the UNBIASED std of the group (divisor n_g − 1, like ``torch.std``); a group of size 1 has
    std 0 and advantage 0. ``scale_by_std=False`` gives R_b − mean_g R (same as ``dr_grpo``).
    """
    R = sequence_returns(rewards, mask)  # [B]
    inv, n = _group_index(group_ids, R)
    mean = _group_sum(R, inv) / n  # [B]
    centered = R - mean
    if not scale_by_std:
        return _broadcast(centered, mask)
    var = _group_sum(centered**2, inv) / (n - 1).clamp(min=1)  # unbiased (torch.std); 0 for singletons
    return _broadcast(torch.where(n > 1, centered / (var.sqrt() + eps), 0.0), mask)


@ADVANTAGES.register("dr_grpo")
def dr_grpo(rewards: Tensor, mask: Tensor, *, group_ids: Tensor, baseline: Tensor | None) -> Tensor:
    """Dr. GRPO: A_b = R_b − mean_g R (no std scaling). Pair with aggregation mode ``"constant"``."""
    R = sequence_returns(rewards, mask)  # [B]
    inv, n = _group_index(group_ids, R)
    return _broadcast(R - _group_sum(R, inv) / n, mask)


@ADVANTAGES.register("rloo")
def rloo(rewards: Tensor, mask: Tensor, *, group_ids: Tensor, baseline: Tensor | None) -> Tensor:
    """RLOO: A_i = R_i − mean_{j≠i, j in i's group} R_j = R_i − (S_g − R_i)/(n_g − 1); groups of size 1 → 0."""
    R = sequence_returns(rewards, mask)  # [B]
    inv, n = _group_index(group_ids, R)
    loo_mean = (_group_sum(R, inv) - R) / (n - 1).clamp(min=1)
    return _broadcast(torch.where(n > 1, R - loo_mean, 0.0), mask)


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(
    rewards: Tensor,
    mask: Tensor,
    *,
    group_ids: Tensor,
    baseline: Tensor | None,
    gamma: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++ (Logic-RL): G_t = Σ_{s≥t} γ^{s−t} r_s (see :func:`discounted_returns`), then
    A = (G − mean) / (std + eps) over ALL valid tokens of the batch (unbiased std). No group baseline."""
    return masked_whiten(discounted_returns(rewards, mask, gamma), mask, eps=eps)


@ADVANTAGES.register("remax")
def remax(rewards: Tensor, mask: Tensor, *, group_ids: Tensor, baseline: Tensor | None) -> Tensor:
    """ReMax: A_b = R_b − baseline_b, where baseline_b is the reward of the greedy sample of b's prompt."""
    return _broadcast(sequence_returns(rewards, mask) - _need(baseline, "remax"), mask)


@ADVANTAGES.register("reinforce")
def reinforce(rewards: Tensor, mask: Tensor, *, group_ids: Tensor, baseline: Tensor | None) -> Tensor:
    """REINFORCE with a baseline: A_b = R_b − baseline_b, baseline kept by the caller (see
    :class:`RunningMean`); a 0-d baseline broadcasts to every sequence."""
    return _broadcast(sequence_returns(rewards, mask) - _need(baseline, "reinforce"), mask)


# ------------------------------------------------------------------------------ turn-level estimators
def needs_turns(fn: AdvantageFn) -> bool:
    """Whether an estimator takes ``turn_ids`` (turn-level estimators declare ``needs_turn_ids = True``); the RL
    loop passes ``turn_ids=turn_index(...)`` only to those."""
    return bool(getattr(fn, "needs_turn_ids", False))


def turn_index(turn_spans: list[list[tuple[int, int]]], mask: Tensor) -> Tensor:
    """[B, T] long: the policy turn k (0-based) of each target position, −1 elsewhere. Turn k of row b spans
    tokens ``[start, end)`` (``Episode.turn_spans``), i.e. target positions ``start − 1 .. end − 2`` of the
    shifted mask (:class:`llmrl.core.types.Batch`); positions with mask 0 stay −1."""
    B, T = mask.shape
    if len(turn_spans) != B:
        raise ValueError(f"turn_index: {len(turn_spans)} span rows for a batch of {B}")
    ids = torch.full((B, T), -1, dtype=torch.long, device=mask.device)
    for b, spans in enumerate(turn_spans):
        for k, (start, end) in enumerate(spans):
            ids[b, max(start - 1, 0): max(min(end - 1, T), 0)] = k
    return torch.where(mask > 0, ids, -1)


def turn_returns(rewards: Tensor, mask: Tensor, turn_ids: Tensor, gamma: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-turn returns G_{b,k} = Σ_{j≥k} γ^{j−k} R_{b,j}, where R_{b,j} = Σ of row b's rewards on the tokens of
    turn j (its environment/task reward sits on the turn's last token, −β·kl on every token), and whether
    row b has turn k.  -> ([B, K] returns, [B, K] bool), K = the most turns of a row (detached)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"turn-level advantage: gamma must be in [0, 1], got {gamma}")
    if turn_ids.shape != mask.shape:
        raise ValueError(f"turn_ids {tuple(turn_ids.shape)} and mask {tuple(mask.shape)} differ in shape")
    valid = (turn_ids >= 0) & (mask > 0)  # [B, T]
    K = int(turn_ids.max().item()) + 1 if valid.any() else 0
    B = mask.shape[0]
    r = torch.where(valid, rewards.detach() * mask, 0.0)  # [B, T]
    k = torch.where(valid, turn_ids, 0)  # [B, T]
    R = torch.zeros(B, max(K, 1), dtype=r.dtype, device=r.device).scatter_add_(1, k, r)[:, :K]  # [B, K]
    present = torch.zeros(B, max(K, 1), dtype=torch.long, device=r.device).scatter_add_(1, k, valid.long())
    present = present[:, :K] > 0  # [B, K]
    G = torch.zeros_like(R)
    running = torch.zeros(B, dtype=R.dtype, device=R.device)
    for j in range(K - 1, -1, -1):
        running = torch.where(present[:, j], R[:, j] + gamma * running, running)
        G[:, j] = torch.where(present[:, j], running, 0.0)
    return G, present


def _turn_advantages(rewards: Tensor, mask: Tensor, group_ids: Tensor, turn_ids: Tensor, gamma: float,
                     kind: str, eps: float) -> Tensor:
    """Shared body of the turn-level estimators: returns normalised within (group, turn index)."""
    G, present = turn_returns(rewards, mask, turn_ids, gamma)  # [B, K]
    B, K = G.shape
    if K == 0:
        return torch.zeros_like(mask)
    inv_g, _ = _group_index(group_ids, G[:, 0])  # [B]
    key = (inv_g.unsqueeze(1) * K + torch.arange(K, device=G.device)).masked_select(present)  # [N]
    g = G.masked_select(present)  # [N] one entry per (row, turn) that exists
    inv, n = _group_index(key, g)
    total = _group_sum(g, inv)
    if kind == "rloo":
        adv = torch.where(n > 1, g - (total - g) / (n - 1).clamp(min=1), 0.0)
    else:
        centered = g - total / n
        std = (_group_sum(centered**2, inv) / (n - 1).clamp(min=1)).sqrt()
        adv = torch.where(n > 1, centered / (std + eps), 0.0) if kind == "grpo" else centered
    A = torch.zeros_like(G).masked_scatter_(present, adv)  # [B, K]
    per_token = A.gather(1, turn_ids.clamp(min=0).clamp(max=K - 1))  # [B, T]
    return torch.where((turn_ids >= 0) & (mask > 0), per_token, 0.0) * mask


@ADVANTAGES.register("grpo_turn")
def grpo_turn(rewards: Tensor, mask: Tensor, *, group_ids: Tensor, baseline: Tensor | None, turn_ids: Tensor,
              gamma: float = 1.0, scale_by_std: bool = True, eps: float = 1e-6) -> Tensor:
    """Turn-level GRPO for multi-turn episodes: each policy turn k of row b gets
    A_{b,k} = (G_{b,k} − mean G_{·,k}) / (std G_{·,k} + eps), the mean and UNBIASED std taken over the rows
    of b's group that have a turn k (:func:`turn_returns`: G discounted by γ across turns); broadcast over
    the turn's tokens. A (group, turn) with one row gets 0. ``scale_by_std=False``: G − mean only.
    ``turn_ids``: :func:`turn_index`. With one turn per row and γ = 1 this is :func:`grpo`."""
    return _turn_advantages(rewards, mask, group_ids, turn_ids, gamma, "grpo" if scale_by_std else "center", eps)


@ADVANTAGES.register("rloo_turn")
def rloo_turn(rewards: Tensor, mask: Tensor, *, group_ids: Tensor, baseline: Tensor | None, turn_ids: Tensor,
              gamma: float = 1.0) -> Tensor:
    """Turn-level RLOO: A_{b,k} = G_{b,k} − mean of G_{j,k} over the OTHER rows j of b's group that have a turn
    k (:func:`turn_returns`, γ across turns), broadcast over the turn's tokens; a (group, turn) with one
    row gets 0. With one turn per row and γ = 1 this is :func:`rloo`."""
    return _turn_advantages(rewards, mask, group_ids, turn_ids, gamma, "rloo", 0.0)


grpo_turn.needs_turn_ids = True  # type: ignore[attr-defined]
rloo_turn.needs_turn_ids = True  # type: ignore[attr-defined]


class RunningMean:
    """Exponential running mean of returns, the baseline of ``reinforce``.

    ``update(values)`` returns the baseline to use for ``values`` — the running mean BEFORE this batch
    (for the first batch: the batch's own mean) — and then folds the batch in:
    mean ← momentum·mean + (1 − momentum)·mean(values). Usage::

        baseline = running.update(R)           # 0-d tensor, broadcasts against R [B]
        adv = ADVANTAGES.get("reinforce")(rewards, mask, group_ids=gid, baseline=baseline)
    """

    def __init__(self, momentum: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"RunningMean momentum must be in [0, 1); got {momentum}")
        self.momentum = momentum
        self.mean: Tensor | None = None

    def update(self, values: Tensor) -> Tensor:
        v = values.detach()
        mean = batch_mean(v if v.is_floating_point() else v.float())  # torchrun: the whole batch's
        if self.mean is None:
            self.mean = mean
            return mean.clone()
        prev = self.mean.to(mean.device)
        self.mean = self.momentum * prev + (1 - self.momentum) * mean
        return prev

    def state_dict(self) -> dict[str, Any]:
        return {
            "momentum": self.momentum,
            "mean": None if self.mean is None else self.mean.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.momentum = float(state["momentum"])
        self.mean = None if state["mean"] is None else torch.as_tensor(state["mean"]).clone()


# GAE needs a critic's values; it lives with the value loss and registers itself when that module is imported
# (this lazy entry imports it on the first ADVANTAGES.get("gae")).
ADVANTAGES.register_lazy("gae", "llmrl.algos.value:gae_advantages",
                        doc="GAE with a critic: ``baseline`` is the critic's values [B, T] (V(s_t) per position, "
                            "see :func:`gae`).")
