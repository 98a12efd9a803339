"""Value checks of the preference losses' scalar options (:mod:`llmrl.algos.preference`), kept free of torch so
that config validation (``llmrl config``, ``llmrl train`` before anything is loaded) runs them in milliseconds.
The losses call the same checks, so a direct call and a config fail with the same message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SMOOTHING_UPPER = {"sigmoid": 1.0, "robust": 0.5, "simpo": 1.0}
"""Losses with a ``label_smoothing`` option ε and the (exclusive) upper end of its range [0, upper)."""


def check_smoothing(eps: float, name: str) -> None:
    upper = SMOOTHING_UPPER[name]
    if not 0.0 <= eps < upper:
        raise ValueError(f"preference loss {name!r}: label_smoothing must be in [0, {upper}), got {eps}")


def check_lam(lam: float) -> None:
    if lam < 0:
        raise ValueError(f"preference loss 'dpop': lam must be >= 0, got {lam}")


def check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"preference loss: beta must be > 0, got {beta}")


def check_pair_options(loss_type: str, beta: float, options: Mapping[str, Any]) -> None:
    """The value ranges of ``beta`` and of ``loss_type``'s options (their names are checked against the loss's
    signature by :func:`llmrl.core.registry.check_options`)."""
    check_beta(beta)
    if loss_type in SMOOTHING_UPPER and options.get("label_smoothing") is not None:
        check_smoothing(float(options["label_smoothing"]), loss_type)
    if loss_type == "dpop" and options.get("lam") is not None:
        check_lam(float(options["lam"]))
