"""ONPO's regression loss (optimistic online mirror descent for general preferences:
Zhang et al., 2025, arXiv:2502.16852).

Each ONPO iteration solves two regressions on the same labelled pairs (y_w ≻ y_l):

    π′_{t+1} = argmin_π E (g(π; π′_t) − target)²,   π_{t+1} = argmin_π E (g(π; π′_{t+1}) − target)²,
    g(π; anchor) = log π(y_w)/π(y_l) − log anchor(y_w)/anchor(y_l)

(sequence log-probabilities, i.e. sums over completion tokens). One regression per pair is
``(g − target)²``: the IPO loss (Δ − 1/(2β))² with the anchor as the reference and β = 1/(2·target), so
this module only maps ONPO's step size η to that β and calls the registered ``ipo`` loss (no second copy
of the formula).

The regression target. The paper's text is ambiguous between η/2 and 1/(2η); its reported setting is
"1/η = 0.01" (from {0.1, 0.05, 0.02, 0.01, 0.005}). We use **target = η/2** by default: the mirror-descent
step π_{t+1} ∝ π_t·exp(η·P(y ≻ π_t)), written for one labelled pair, moves its log-ratio by η times the
centred preference label, I(y_w ≻ y_l) − ½ = ½ — the same derivation that gives IPO its 1/(2τ) with
τ = 1/η. With the reported 1/η = 0.01 the target is 50 (IPO's 1/(2τ) at τ = 0.01).
The other reading, target = 1/(2η) (= 0.005 at the same setting, a regression to almost no change), is
available as ``convention="inv_2eta"``.
"""

from __future__ import annotations

from torch import Tensor

from llmrl.algos.preference import PREFERENCE_LOSSES

ONPO_TARGETS = ("eta_over_2", "inv_2eta")


def onpo_target(eta: float, convention: str = "eta_over_2") -> float:
    """The regression target for step size η: η/2 (``"eta_over_2"``, default) or 1/(2η) (``"inv_2eta"``)."""
    if not eta > 0:
        raise ValueError(f"onpo: eta must be > 0, got {eta}")
    if convention == "eta_over_2":
        return eta / 2.0
    if convention == "inv_2eta":
        return 1.0 / (2.0 * eta)
    raise ValueError(f"onpo: unknown target convention {convention!r}; valid: {', '.join(ONPO_TARGETS)}")


def onpo_beta(target: float) -> float:
    """The IPO β whose regression target 1/(2β) equals ``target``."""
    if not target > 0:
        raise ValueError(f"onpo: the regression target must be > 0, got {target}")
    return 1.0 / (2.0 * target)


def onpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, anchor_chosen_logps: Tensor,
              anchor_rejected_logps: Tensor, *, target: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-pair ONPO regression loss (g − target)², g = (π_w − π_l) − (anchor_w − anchor_l); the anchor's
    log-probs are constants. Inputs are [B] summed completion log-probs; returns ``(losses [B], metrics)``
    with the ``ipo`` loss's metrics (β = 1/(2·target)) plus ``onpo/g`` = mean g."""
    losses, metrics = PREFERENCE_LOSSES.get("ipo")(policy_chosen_logps, policy_rejected_logps, anchor_chosen_logps,
                                                   anchor_rejected_logps, beta=onpo_beta(target))
    g = (policy_chosen_logps - policy_rejected_logps) - (anchor_chosen_logps - anchor_rejected_logps)
    metrics["onpo/g"] = g.detach().mean()
    return losses, metrics


__all__ = ["ONPO_TARGETS", "onpo_beta", "onpo_loss", "onpo_target"]
