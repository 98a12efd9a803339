"""MPO (arXiv 2502.18699): max–min weights of a log-linear mixture of K preference-aligned policies.

The mixed policy is log-linear, π_λ(y|x) ∝ Π_k π_k(y|x)^{λ_k}. Its max–min weights minimise, over the simplex,

    F(λ) = E_x log E_{y~π_ref} Π_k (π_k(y|x) / π_ref(y|x))^{λ_k}

(the log-partition of the mixture relative to π_ref; when each π_k is the KL-regularised optimum for a
normalised reward P(r_k)/β, F is the dual of max_π min_k [E_π P(r_k) − β KL(π‖π_ref)]). F is convex in λ;
its gradient is ∂F/∂λ_k = E_x E_{q_λ}[ℓ_k] with q_λ ∝ π_ref · exp(Σ_k λ_k ℓ_k).

Everything here works on ``ell``: per-sample log-ratios ℓ_jk = log π_k(y_j|x) − log π_ref(y_j|x) of m
responses y_j ~ π_ref of each prompt, shaped ``[m, K]`` (one prompt) or ``[B, m, K]`` (a batch of prompts).
Computation is in float64; results come back in ``ell``'s dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


def _as_batch(ell: Tensor) -> Tensor:
    """``[m, K]`` or ``[B, m, K]`` → float64 ``[B, m, K]``, checked."""
    if ell.dim() == 2:
        ell = ell[None]
    if ell.dim() != 3 or ell.shape[1] < 1 or ell.shape[2] < 1:
        raise ValueError(f"ell must be [m, K] or [B, m, K] with m, K >= 1, got shape {tuple(ell.shape)}")
    if not torch.isfinite(ell).all():
        raise ValueError("ell (log-ratios log pi_k - log pi_ref) has non-finite entries")
    return ell.double()


def _check_weights(lam: Tensor, k: int) -> Tensor:
    if lam.dim() != 1 or lam.shape[0] != k:
        raise ValueError(f"weights must be a vector of length K={k}, got shape {tuple(lam.shape)}")
    if not torch.isfinite(lam).all() or (lam < 0).any():
        raise ValueError(f"weights must be finite and >= 0, got {lam.tolist()}")
    return lam.double()


def mixture_log_partition(weights: Tensor, ell: Tensor) -> Tensor:
    """Per-prompt Monte-Carlo estimate of log E_{y~π_ref} exp(Σ_k λ_k ℓ_k) = logsumexp_j(s_j) − log m,
    with s_j = Σ_k λ_k ℓ_jk.  weights [K], ell [m, K] or [B, m, K] -> [B]"""
    e = _as_batch(ell)
    s = e @ _check_weights(weights, e.shape[2])  # [B, m]
    return (torch.logsumexp(s, -1) - math.log(e.shape[1])).to(ell.dtype)


def mixture_objective(weights: Tensor, ell: Tensor) -> Tensor:
    """The batch estimate of F(λ): the mean over prompts of :func:`mixture_log_partition`.  -> scalar"""
    return mixture_log_partition(weights, ell).mean()


def mixture_gradient(weights: Tensor, ell: Tensor) -> Tensor:
    """The batch estimate of ∇F(λ): v_k = mean over prompts of Σ_j w_j ℓ_jk, w = softmax_j(s_j).  -> [K]

    (The self-normalised importance estimate of E_{q_λ}[ℓ_k]; exact when the m responses enumerate a
    uniform π_ref.)"""
    e = _as_batch(ell)
    w = torch.softmax(e @ _check_weights(weights, e.shape[2]), -1)  # [B, m]
    return (w[..., None] * e).sum(1).mean(0).to(ell.dtype)  # [K]


def mirror_descent_step(weights: Tensor, ell: Tensor, lr: float) -> tuple[Tensor, Tensor]:
    """One batch stochastic mirror-descent (exponentiated-gradient) step on F over the simplex:
    λ_k ← λ_k · exp(−η v_k) / Z with v = :func:`mixture_gradient`, Z the sum of the numerators.

    ``weights`` must be a probability vector (>= 0, summing to 1). A zero weight stays zero.
    Returns (new weights [K], gradient estimate v [K]).
    """
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"mirror-descent step size must be > 0, got {lr}")
    lam = _check_weights(weights, _as_batch(ell).shape[2])
    if abs(float(lam.sum()) - 1.0) > 1e-6:
        raise ValueError(f"weights must sum to 1 (a point of the simplex), got sum {float(lam.sum())}")
    v = mixture_gradient(weights, ell).double()
    logits = torch.log(lam) - lr * v  # log 0 = -inf: a zero weight stays zero
    return torch.softmax(logits, 0).to(weights.dtype), v.to(ell.dtype)


@dataclass
class MaxMinResult:
    """Output of :func:`maxmin_weights`."""

    weights: Tensor  # [K] the average iterate (the answer)
    last: Tensor  # [K] the last iterate
    lr: float  # η = c / sqrt(T)
    steps: int  # T
    objective: list[float] = field(default_factory=list)  # batch estimate of F at each step's λ (before its update)
    gradients: list[list[float]] = field(default_factory=list)  # v at each step


def maxmin_weights(batches: Sequence[Tensor] | Callable[[int], Tensor], *, steps: int | None = None,
                   lr_c: float = 1.0, init: Tensor | None = None) -> MaxMinResult:
    """Max–min mixing weights by batch stochastic mirror descent on F (MPO, arXiv:2502.18699).

    ``batches`` is a sequence of ``ell`` tensors (one per step; ``steps`` defaults to its length) or a
    function ``t -> ell`` called for t = 0 .. steps−1 (each ``[m, K]`` or ``[B, m, K]``, fresh responses
    y ~ π_ref). Starting from ``init`` (default uniform 1/K), T = ``steps`` updates with η = c/√T are made
    (:func:`mirror_descent_step`); the result is the average of the T updated iterates λ_1 .. λ_T.
    """
    if callable(batches):
        if steps is None:
            raise ValueError("maxmin_weights: steps is required when batches is a function")
        get = batches
    else:
        seq = list(batches)
        steps = len(seq) if steps is None else steps
        if steps > len(seq):
            raise ValueError(f"maxmin_weights: steps={steps} but only {len(seq)} batches were given")

        def get(t: int) -> Tensor:
            return seq[t]

    if steps < 1:
        raise ValueError(f"maxmin_weights: steps must be >= 1, got {steps}")
    if not math.isfinite(lr_c) or lr_c <= 0:
        raise ValueError(f"maxmin_weights: lr_c must be > 0, got {lr_c}")
    lr = lr_c / math.sqrt(steps)
    lam: Tensor | None = None if init is None else init.double()
    total: Tensor | None = None
    out = MaxMinResult(weights=torch.empty(0), last=torch.empty(0), lr=lr, steps=steps)
    for t in range(steps):
        ell = get(t)
        if lam is None:
            lam = torch.full((_as_batch(ell).shape[2],), 1.0 / _as_batch(ell).shape[2], dtype=torch.float64)
        out.objective.append(float(mixture_objective(lam, ell.double())))
        lam, v = mirror_descent_step(lam, ell.double(), lr)
        out.gradients.append([float(x) for x in v])
        total = lam.clone() if total is None else total + lam
    assert lam is not None and total is not None
    out.weights, out.last = total / steps, lam
    return out


def normalized_reward(rewards: Tensor, ref_rewards: Tensor, beta: float) -> Tensor:
    """MPO's reward normalisation P(r) = r − β log E_{y~π_ref} exp(r(y)/β), per prompt.

    ``rewards`` [B, ...] are rewards of any responses to prompt b; ``ref_rewards`` [B, m] are the rewards of
    m responses sampled from π_ref for the same prompts (the expectation is their sample mean, computed
    as β·(logsumexp(r_ref/β) − log m)). After normalisation, E_{π_ref} exp(P(r)/β) = 1 on those samples,
    so π_ref·exp(P(r)/β) is already normalised.
    """
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if ref_rewards.dim() != 2 or ref_rewards.shape[1] < 1:
        raise ValueError(f"ref_rewards must be [B, m] with m >= 1, got shape {tuple(ref_rewards.shape)}")
    if rewards.dim() < 1 or rewards.shape[0] != ref_rewards.shape[0]:
        raise ValueError(f"rewards [B, ...] and ref_rewards [B, m] disagree on B: {tuple(rewards.shape)} vs "
                         f"{tuple(ref_rewards.shape)}")
    r = ref_rewards.double()
    log_mean = torch.logsumexp(r / beta, -1) - math.log(r.shape[1])  # [B]
    shift = (beta * log_mean).view(-1, *([1] * (rewards.dim() - 1)))
    return (rewards.double() - shift).to(rewards.dtype)


__all__ = [
    "MaxMinResult",
    "maxmin_weights",
    "mirror_descent_step",
    "mixture_gradient",
    "mixture_log_partition",
    "mixture_objective",
    "normalized_reward",
]
