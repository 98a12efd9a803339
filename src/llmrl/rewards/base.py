"""Reward-function contract and the one weighted-sum helper.

A reward function is a plain callable ``fn(completion: str, sample: dict) -> float | None``
(None = no opinion: the component is skipped). Parameterised rewards are factories returning such
callables. Model output can be anything, so ``safe_score`` turns exceptions and non-finite values into
a configured failure value and reports that it did so; the run goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

RewardFn = Callable[[str, Mapping[str, Any]], "float | None"]


@dataclass
class RewardOutcome:
    total: float
    components: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # "name: error" for each component that failed


def safe_score(fn: RewardFn, completion: str, sample: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """Call a reward function; return (value, error). A raise (``SystemExit`` included; only
    ``KeyboardInterrupt`` propagates), a NaN/inf, or a non-number (a string such as ``"7.5"`` too) becomes
    (None, message)."""
    try:
        value = fn(completion, sample)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # model output must never crash a run, not even via sys.exit()
        return None, f"{type(exc).__name__}: {exc}"
    if value is None:
        return None, None
    if isinstance(value, str | bytes):
        return None, f"returned {type(value).__name__} {value[:40]!r}, not a number"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, f"returned non-numeric {type(value).__name__}"
    if not math.isfinite(value):
        return None, f"returned {value}"
    return value, None


def safe_check(fn: Callable[[str, Mapping[str, Any]], Any], completion: str, sample: Mapping[str, Any]) -> bool:
    """A verifier's verdict (``is_correct`` / ``is_well_formed``) as a bool; a raise counts as False."""
    try:
        return bool(fn(completion, sample))
    except KeyboardInterrupt:
        raise
    except BaseException:
        return False


def combine_rewards(
    fns: Mapping[str, RewardFn],
    completion: str,
    sample: Mapping[str, Any],
    weights: Mapping[str, float] | None = None,
    failure_value: float = 0.0,
) -> RewardOutcome:
    """Weighted sum of named reward components. A failing component contributes ``failure_value``
    (unweighted: it replaces the whole reward contribution of that component) and is listed in
    ``failures``; a component returning None is skipped."""
    out = RewardOutcome(total=0.0)
    for name, fn in fns.items():
        value, err = safe_score(fn, completion, sample)
        if err is not None:
            out.failures.append(f"{name}: {err}")
            out.components[name] = failure_value
            out.total += failure_value
            continue
        if value is None:
            continue
        out.components[name] = value
        out.total += (1.0 if weights is None else weights.get(name, 1.0)) * value
    return out
