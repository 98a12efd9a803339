"""Critic pieces: generalised advantage estimation (GAE) and the clipped value loss.

Positions. All tensors are ``[B, T]`` and target-aligned like :class:`llmrl.core.types.Batch`: position t
is the decision that produces token t+1, ``values[b, t]`` = V(s_t) is the value of the state before that
token, ``rewards[b, t]`` is the reward for it, and ``mask[b, t] == 1`` iff the policy produced it.

Masked positions (prompt, environment turns, padding) are not time steps: the recursion skips them, so
"the next state" of a valid position t is the next *valid* position s > t (an environment turn in
between does not discount, exactly like :func:`llmrl.algos.advantages.discounted_returns`), and the value
after the last valid position is 0 (the episode has ended). With n(t) the next valid position::

    δ_t = r_t + γ·V_{n(t)} − V_t            (V_{n(t)} := 0 after the last valid position)
    A_t = δ_t + γλ·A_{n(t)}                (A_{n(t)} := 0 after the last valid position)
    R_t = A_t + V_t                        (the value target, "returns")

Rewards and values at masked positions are ignored; outputs are 0 there and carry no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from llmrl.algos.advantages import ADVANTAGES
from llmrl.algos.aggregation import aggregate
from llmrl.core.ops import batch_moments, masked_mean, masked_whiten


def _check(rewards: Tensor, values: Tensor, mask: Tensor) -> None:
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(f"gae expects rewards, values and mask of one shape [B, T]; got {tuple(rewards.shape)}, "
                         f"{tuple(values.shape)} and {tuple(mask.shape)}")


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over the valid tokens of each row.

    Args:
        rewards: [B, T] per-token rewards (e.g. :func:`llmrl.algos.token_rewards`).
        values: [B, T] V(s_t) at each position (from the critic at sampling time).
        mask: [B, T] float mask, 1 = a policy token (holes allowed; see the module docstring).
        gamma: discount γ per policy token, in [0, 1].
        lam: GAE λ in [0, 1]; λ = 1 gives A_t = (discounted return) − V_t, λ = 0 gives A_t = δ_t.

    Returns:
        (advantages [B, T], returns [B, T]) with returns = advantages + values, both 0 where mask is 0.
    """
    _check(rewards, values, mask)
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gae needs gamma and lam in [0, 1]; got gamma={gamma}, lam={lam}")
    m = (mask > 0).to(values.dtype)  # [B, T]
    r = torch.where(m > 0, rewards.to(values.dtype), 0.0)  # [B, T]
    v = torch.where(m > 0, values, 0.0)  # [B, T]
    adv = torch.zeros_like(v)
    next_v = torch.zeros_like(v[:, 0])  # [B] value of the next valid state (0 after the end)
    next_a = torch.zeros_like(v[:, 0])  # [B] advantage at the next valid position
    for t in range(v.shape[1] - 1, -1, -1):  # one vectorised step per position, over the batch
        mt = m[:, t]
        a = r[:, t] + gamma * next_v - v[:, t] + gamma * lam * next_a
        adv[:, t] = a * mt
        next_v = torch.where(mt > 0, v[:, t], next_v)  # masked positions pass the next state through
        next_a = torch.where(mt > 0, a, next_a)
    return adv, (adv + v) * m


@ADVANTAGES.register("gae")
def gae_advantages(
    rewards: Tensor,
    mask: Tensor,
    *,
    group_ids: Tensor,
    baseline: Tensor | None,
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten: bool = True,
    eps: float = 1e-8,
) -> Tensor:
    """GAE with a critic: ``baseline`` is the critic's values [B, T] (V(s_t) per position, see :func:`gae`).

    A = :func:`gae` advantages; with ``whiten`` (default, as PPO/DVPO) A ← (A − mean)/(std + eps) over all
    valid tokens of the batch (unbiased std). The value targets (returns) are the UNwhitened A + V; the
    trainer computes them with :func:`gae` itself. Defaults γ = 1, λ = 0.95 (PAR and DVPO settings)."""
    if baseline is None or baseline.shape != mask.shape:
        got = None if baseline is None else tuple(baseline.shape)
        raise ValueError(f"advantage estimator 'gae' needs the critic's values as `baseline` with the shape of the "
                         f"mask {tuple(mask.shape)}; got {got} (is a critic configured?)")
    adv, _ = gae(rewards.detach(), baseline.detach(), mask, gamma, lam)
    return masked_whiten(adv, mask, eps=eps) if whiten else adv


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip: float | None = 0.2,
    agg: str = "token-mean",
    num_seqs: float | Tensor | None = None,
    num_tokens: float | Tensor | None = None,
    constant: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped value loss, reduced with :func:`llmrl.algos.aggregate` (mode ``agg``).

    Per valid token, with V the new values, V_old the values at sampling time, R the returns and
    V_clip = V_old + clamp(V − V_old, −clip, clip)::

        ℓ_t = ½·max((V − R)², (V_clip − R)²)          (clip = None: ℓ_t = ½·(V − R)²)

    The ½ makes ∂ℓ/∂V = V − R on the unclipped branch. Taking the max (the pessimistic branch) is the
    PPO2 / OpenAI-baselines form: a value that moves more than ``clip`` away from V_old gets no
    gradient when moving further helps. ``num_seqs``/``num_tokens``/``constant`` are passed to
    ``aggregate`` (whole-minibatch counts under micro-batching).

    Returns:
        (loss 0-d, metrics): ``vf_clipfrac`` (fraction of valid tokens on the clipped branch),
        ``value_mean``, ``value_error`` (masked mean of (V − R)²), all detached.
    """
    if not (values.shape == old_values.shape == returns.shape == mask.shape):
        raise ValueError(f"value_loss expects values, old_values, returns and mask of one shape; got "
                         f"{tuple(values.shape)}, {tuple(old_values.shape)}, {tuple(returns.shape)}, "
                         f"{tuple(mask.shape)}")
    if clip is not None and clip <= 0:
        raise ValueError(f"value_loss: clip must be > 0 or None; got {clip}")
    valid = mask > 0
    v = torch.where(valid, values, 0.0)
    old, ret = torch.where(valid, old_values.detach(), 0.0), torch.where(valid, returns.detach(), 0.0)
    err = (v - ret) ** 2  # [B, T]
    per_tok, clipped = err, torch.zeros_like(err, dtype=torch.bool)
    if clip is not None:
        v_clip = old + (v - old).clamp(-clip, clip)
        err_clip = (v_clip - ret) ** 2
        per_tok, clipped = torch.maximum(err, err_clip), err_clip > err
    loss = aggregate(0.5 * per_tok, mask, agg, num_seqs=num_seqs, num_tokens=num_tokens, constant=constant)
    fmask = valid.to(err.dtype)
    with torch.no_grad():
        metrics = {"vf_clipfrac": masked_mean(clipped.to(err.dtype), fmask), "value_mean": masked_mean(v, fmask),
                   "value_error": masked_mean(err, fmask)}
    return loss, metrics


@torch.no_grad()
def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 − Var(R − V) / Var(R) over the valid tokens (1 = perfect critic, 0 = no better than a constant,
    negative = worse). NaN when the returns have zero variance. Inside ``core.ops.whole_batch``: over every
    process's share of the batch."""
    var_r = batch_moments(returns, mask)[1]
    ev = 1.0 - batch_moments(returns - values, mask)[1] / var_r.clamp(min=torch.finfo(var_r.dtype).tiny)
    return torch.where(var_r > 0, ev, torch.full_like(ev, float("nan")))


__all__ = ["explained_variance", "gae", "gae_advantages", "value_loss"]
