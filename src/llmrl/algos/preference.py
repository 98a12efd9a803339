"""Offline preference losses (the DPO family), registered by name in :data:`PREFERENCE_LOSSES`.

Every loss has one signature::

    fn(policy_chosen_logps [B], policy_rejected_logps [B], ref_chosen_logps [B] | None,
       ref_rejected_logps [B] | None, *, beta, **own_options) -> (losses [B], metrics)

The log-probs are SUMS over completion tokens (``llmrl.train.pairs.completion_logps``), except for
``simpo``, which takes length-AVERAGED log-probs (``completion_logps(..., average=True)``); ``ipo`` takes
whichever the caller passes (see below). With the log-ratios ρ_w = π_w − ref_w and ρ_l = π_l − ref_l
(π_w = policy_chosen_logps, ...) and Δ = ρ_w − ρ_l, per pair:

=========  ===========================================================================================
sigmoid    −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ)        DPO (Rafailov et al. 2023); ε = ``label_smoothing``
           (default 0) gives conservative DPO (cDPO, Mitchell 2023)
ipo        (Δ − 1/(2β))²                           IPO (Azar et al. 2023, eq. 17, τ = β)
hinge      max(0, 1 − βΔ)                          SLiC-style hinge (as TRL's ``hinge``)
robust     [−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)] / (1−2ε)   unbiased DPO under label-flip rate ε
           (Chowdhury et al. 2024); ε = ``label_smoothing`` in [0, 0.5); ε = 0 is plain DPO
simpo      −(1−ε)·log σ(β(π̄_w − π̄_l) − γ) − ε·log σ(−β(π̄_w − π̄_l) + γ)   SimPO (Meng et al. 2024),
           reference-free (ref log-probs ignored, may be None), π̄ = length-averaged log-probs;
           γ = ``gamma`` if given, else ``gamma_beta_ratio``·β (default 0.5; the paper uses β ≈ 2–2.5)
dpop       −log σ(β·(Δ − λ·max(0, ref_w − π_w)))    DPO-Positive (Pal et al. 2024), λ = ``lam``
           (default 10, the value NotaGen's CLaMP-DPO uses); penalises lowering the chosen likelihood
=========  ===========================================================================================

IPO and length: the paper writes Δ with sequence log-probs; TRL (≥ 0.12) divides each log-ratio by its
completion length before squaring (a choice it reports confirming with the IPO authors). This function
squares whatever Δ it is given: pass summed log-probs for the paper's formula, averaged ones
(``average=True``) for TRL's. The ``dpo`` trainer's ``pref.average_logps`` picks (default: averaged for
``ipo`` and ``simpo``, summed otherwise).

Metrics (0-d, detached, means over the batch): ``rewards/chosen`` = mean β·ρ_w, ``rewards/rejected`` =
mean β·ρ_l (simpo: β·π̄_w and β·π̄_l), ``rewards/margins`` = mean of their difference,
``rewards/accuracies`` = fraction of pairs with chosen reward > rejected reward; dpop adds
``dpop/penalty`` = mean max(0, ref_w − π_w).

The optional SFT term of RPO (Pang et al. 2024) is not a loss type: the ``dpo`` trainer adds
``rpo_alpha`` · mean over pairs of −π_w/|y_w| (the chosen completion's per-token negative log-likelihood).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from llmrl.algos.pair_options import check_beta, check_lam, check_smoothing
from llmrl.core.registry import Registry, check_options, closest

PairLossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]
"""``fn(pc, pr, rc, rr, *, beta, **own_options) -> (losses [B], metrics)`` (see the module docstring)."""

PREFERENCE_LOSSES: Registry[PairLossFn] = Registry("preference loss")
"""Name → preference loss."""


def _check(*xs: Tensor | None) -> None:
    shape = xs[0].shape if xs[0] is not None else None
    for x in xs:
        if x is not None and (x.shape != shape or x.dim() != 1):
            shapes = [tuple(t.shape) for t in xs if t is not None]
            raise ValueError(f"preference loss: log-probs must all have shape [B]; got {shapes}")


def _logratios(pc: Tensor, pr: Tensor, rc: Tensor | None, rr: Tensor | None, name: str) -> tuple[Tensor, Tensor]:
    if rc is None or rr is None:
        raise ValueError(f"preference loss {name!r} needs reference log-probs (only 'simpo' is reference-free)")
    return pc - rc.detach(), pr - rr.detach()


def _metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, Tensor]:
    c, r = chosen_rewards.detach(), rejected_rewards.detach()
    return {"rewards/chosen": c.mean(), "rewards/rejected": r.mean(), "rewards/margins": (c - r).mean(),
            "rewards/accuracies": (c > r).to(c.dtype).mean()}


def _smoothed_sigmoid(logits: Tensor, eps: float) -> Tensor:
    """−(1−ε)·log σ(x) − ε·log σ(−x)."""
    loss = -F.logsigmoid(logits)
    return loss if eps == 0.0 else (1.0 - eps) * loss - eps * F.logsigmoid(-logits)


@PREFERENCE_LOSSES.register("sigmoid")
def sigmoid(pc: Tensor, pr: Tensor, rc: Tensor | None, rr: Tensor | None, *, beta: float,
            label_smoothing: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO; with ``label_smoothing`` ε > 0, conservative DPO (cDPO)."""
    check_smoothing(label_smoothing, "sigmoid")
    cw, cl = _logratios(pc, pr, rc, rr, "sigmoid")
    return _smoothed_sigmoid(beta * (cw - cl), label_smoothing), _metrics(beta * cw, beta * cl)


@PREFERENCE_LOSSES.register("ipo")
def ipo(pc: Tensor, pr: Tensor, rc: Tensor | None, rr: Tensor | None, *,
        beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """IPO: (Δ − 1/(2β))² (see the module docstring on summed vs averaged log-probs)."""
    cw, cl = _logratios(pc, pr, rc, rr, "ipo")
    return (cw - cl - 1.0 / (2.0 * beta)) ** 2, _metrics(beta * cw, beta * cl)


@PREFERENCE_LOSSES.register("hinge")
def hinge(pc: Tensor, pr: Tensor, rc: Tensor | None, rr: Tensor | None, *,
          beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """max(0, 1 − βΔ)."""
    cw, cl = _logratios(pc, pr, rc, rr, "hinge")
    return torch.relu(1.0 - beta * (cw - cl)), _metrics(beta * cw, beta * cl)


@PREFERENCE_LOSSES.register("robust")
def robust(pc: Tensor, pr: Tensor, rc: Tensor | None, rr: Tensor | None, *, beta: float,
           label_smoothing: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Unbiased DPO under a known label-flip rate ε (Chowdhury et al. 2024)."""
    check_smoothing(label_smoothing, "robust")
    cw, cl = _logratios(pc, pr, rc, rr, "robust")
    x, eps = beta * (cw - cl), label_smoothing
    loss = (-(1.0 - eps) * F.logsigmoid(x) + eps * F.logsigmoid(-x)) / (1.0 - 2.0 * eps)
    return loss, _metrics(beta * cw, beta * cl)


@PREFERENCE_LOSSES.register("simpo")
def simpo(pc: Tensor, pr: Tensor, rc: Tensor | None, rr: Tensor | None, *, beta: float,
          gamma_beta_ratio: float = 0.5, gamma: float | None = None,
          label_smoothing: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """SimPO: reference-free; ``pc``/``pr`` must be length-AVERAGED log-probs; margin γ."""
    check_smoothing(label_smoothing, "simpo")
    margin = gamma if gamma is not None else gamma_beta_ratio * beta
    return _smoothed_sigmoid(beta * (pc - pr) - margin, label_smoothing), _metrics(beta * pc, beta * pr)


@PREFERENCE_LOSSES.register("dpop")
def dpop(pc: Tensor, pr: Tensor, rc: Tensor | None, rr: Tensor | None, *, beta: float,
         lam: float = 10.0) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO-Positive: −log σ(β(Δ − λ·max(0, ref_w − π_w)))."""
    check_lam(lam)
    cw, cl = _logratios(pc, pr, rc, rr, "dpop")
    penalty = torch.clamp(-cw, min=0.0)  # max(0, ref_w − π_w)
    metrics = _metrics(beta * cw, beta * cl)
    metrics["dpop/penalty"] = penalty.detach().mean()
    return -F.logsigmoid(beta * (cw - cl - lam * penalty)), metrics


def preference_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor | None,
                    ref_rejected_logps: Tensor | None, *, loss_type: str = "sigmoid", beta: float = 0.1,
                    **options: float | None) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-pair loss of ``loss_type`` (a name in :data:`PREFERENCE_LOSSES`) and detached metrics.

    Inputs are [B] completion log-probs (sums over tokens; length-averaged for ``simpo``); reference
    log-probs are treated as constants and may be None for ``simpo``. ``options`` are the loss's own
    keyword options (``label_smoothing``, ``gamma_beta_ratio``, ``gamma``, ``lam``); an unknown one is a
    ValueError. Returns ``(losses [B], metrics)``; reduce the losses with ``.mean()``.
    """
    check_beta(beta)
    if loss_type not in PREFERENCE_LOSSES:
        raise ValueError(f"unknown preference loss {loss_type!r}; {closest(loss_type, PREFERENCE_LOSSES.names())}")
    fn = PREFERENCE_LOSSES.get(loss_type)
    check_options(fn, options, f"preference loss {loss_type!r}", reserved=("beta",))
    _check(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta, **options)


REFERENCE_FREE = frozenset({"simpo"})
"""Loss types that ignore the reference model (no reference log-probs are computed for them)."""

AVERAGED_BY_DEFAULT = frozenset({"simpo", "ipo"})
"""Loss types whose log-probs the ``dpo`` trainer length-averages unless ``pref.average_logps`` says otherwise."""

__all__ = ["AVERAGED_BY_DEFAULT", "PREFERENCE_LOSSES", "REFERENCE_FREE", "PairLossFn", "preference_loss"]
