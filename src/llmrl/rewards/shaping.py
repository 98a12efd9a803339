"""Reward shaping for RL from a reward model: PAR and the baselines it is compared with (arXiv 2502.18770).

Shapes (all tensors are floating point; an integer input is cast to the default dtype):

* ``rewards``: ``[B]``, one raw scalar reward per response (batch of B responses);
* ``ref_rewards``: ``[B, M]``, for each response the rewards of M reference responses to *the same
  prompt*, sampled from the SFT policy (see :func:`collect_reference_rewards`). ``NaN`` entries are
  missing references and are ignored, so prompts may have different numbers of references; a ragged
  ``list[list[float]]`` is accepted too and padded with ``NaN`` (:func:`stack_reference_rewards`);
* the result: ``[B]``, same dtype as ``rewards``. Inputs are never modified.

Every shaper has the one signature ``fn(rewards, *, ref_rewards=None, stats=None, **options)`` and is
registered by name in :data:`SHAPERS`:

============  ======================================================================  =========
name          formula (r = raw reward, r_ref,m = m-th reference reward of the prompt)  range
============  ======================================================================  =========
``par``       (1/M) Σ_m σ(k·(r − r_ref,m)),  k = 1                                     (0, 1)
``centered``  (1/M) Σ_m (r − r_ref,m)  = r − mean_m r_ref,m                           ℝ
``lsc``       log σ(r − r_ref^0.85),  r_ref^0.85 = mean + z_0.85·std of the refs       (−∞, 0)
``meanstd``   (r − μ)/σ  (running μ, σ; σ = 0 → divide by 1)                          ℝ
``clip``      clamp(r, μ − σ, μ + σ)  (running)                                        [μ−σ, μ+σ]
``minmax``    (r − min)/(max − min)  (running; max = min → divide by 1)               [0, 1]
``ceil``      min(r, c)                                                                (−∞, c]
``vanilla``   r                                                                        ℝ
============  ======================================================================  =========

Documented choices:

* Running statistics (``meanstd``, ``clip``, ``minmax``): the shaper first **updates** ``stats`` with
  the raw batch, **then uses** them (as PAR's ``reward_shaper.py`` does), so every reward of the batch
  lies in [min, max] and ``minmax`` stays in [0, 1]. σ is the *population* standard deviation
  sqrt(M2/n) of every reward seen so far (PAR: ``M2 / n``).
* ``lsc`` fits the normal by maximum likelihood: *population* std (ddof 0) by default,
  ``unbiased=True`` for the ddof-1 estimate (a prompt with a single reference then gets std 0).
  z_0.85 = Φ⁻¹(0.85) = 1.0364333894937898 (``percentile_z`` overrides it; 0.8416212335729143 would be
  the 80th percentile). PAR adds 1e-5 to the std; we do not (a 1e-5 shift).
* ``par`` is mathematically in the open interval (0, 1); in floating point σ(x) rounds to exactly 1
  once x = k·(r − r_ref) exceeds ≈ 37 (float64) or ≈ 17 (float32), and to 0 below ≈ −745 / −104.
* The length penalty (:func:`length_penalty`) is applied by the caller *before* shaping, as in PAR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from llmrl.core.registry import Registry, check_options
from llmrl.rewards.base import RewardFn, safe_score

if TYPE_CHECKING:
    from llmrl.rollout.base import Generator, SamplingParams

Z_085 = 1.0364333894937898
"""Φ⁻¹(0.85): the 85th percentile of the standard normal (scipy ``norm.ppf(0.85)``, as PAR's code uses).
Note 0.8416212335729143 is Φ⁻¹(0.80), not Φ⁻¹(0.85)."""

Rewards = Tensor | Sequence[float]
"""``[B]`` raw rewards."""
RefRewards = Tensor | Sequence[Sequence[float]] | None
"""``[B, M]`` reference rewards (NaN = missing) or a ragged per-prompt list of lists."""
ShaperFn = Callable[..., Tensor]
SHAPERS: Registry[ShaperFn] = Registry("reward shaper")
RESERVED = ("ref_rewards", "stats")
"""Keywords every shaper receives from the trainer (never user options)."""


class RunningStats:
    """Running count / mean / M2 (Welford, merged batch-wise after Chan et al.), min and max.

    Batch merge of (n_a, μ_a, M2_a) with a batch (n_b, μ_b, M2_b), δ = μ_b − μ_a, n = n_a + n_b:
    μ = μ_a + δ·n_b/n,   M2 = M2_a + M2_b + δ²·n_a·n_b/n.
    ``variance`` = M2/n (population; 0 before any value), ``std`` = sqrt(variance).
    Accumulates in Python floats (float64) whatever the input dtype.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def update(self, values: Tensor | Sequence[float]) -> None:
        """Fold a batch of values (any shape; flattened) into the statistics. Empty → no-op.
        Non-finite values raise ``ValueError`` (they would poison the statistics for good)."""
        v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        n_b = v.numel()
        if n_b == 0:
            return
        if not bool(torch.isfinite(v).all()):
            raise ValueError("RunningStats.update: values must be finite")
        mean_b = float(v.mean())
        m2_b = float(((v - mean_b) ** 2).sum())
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.count * n_b / n
        self.count = n
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    @property
    def variance(self) -> float:
        return self.m2 / self.count if self.count > 0 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(max(self.variance, 0.0))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (min/max are None before the first value)."""
        empty = self.count == 0
        return {"count": self.count, "mean": self.mean, "m2": self.m2,
                "min": None if empty else self.min, "max": None if empty else self.max}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"count", "mean", "m2", "min", "max"} - set(state)
        if missing:
            raise ValueError(f"RunningStats state lacks {sorted(missing)}")
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
        self.min = math.inf if state["min"] is None else float(state["min"])
        self.max = -math.inf if state["max"] is None else float(state["max"])

    def __repr__(self) -> str:
        return f"RunningStats(count={self.count}, mean={self.mean:.6g}, std={self.std:.6g}, " \
               f"min={self.min:.6g}, max={self.max:.6g})"


# ----------------------------------------------------------------------------------------- helpers
def _as_rewards(rewards: Rewards) -> Tensor:
    r = torch.as_tensor(rewards)
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    if r.dim() != 1:
        raise ValueError(f"rewards must have shape [B], got {tuple(r.shape)}")
    return r


def stack_reference_rewards(refs: Sequence[Sequence[float]], dtype: torch.dtype | None = None) -> Tensor:
    """Ragged per-prompt reference rewards → ``[B, M]`` tensor (M = longest list), NaN-padded."""
    width = max((len(row) for row in refs), default=0)
    out = torch.full((len(refs), width), math.nan, dtype=dtype or torch.get_default_dtype())
    for i, row in enumerate(refs):
        if len(row):
            out[i, : len(row)] = torch.as_tensor([float(x) for x in row], dtype=out.dtype)
    return out


def _as_refs(ref_rewards: RefRewards, r: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """(refs [B, M] in r's dtype, valid mask [B, M]); every row needs at least one non-NaN entry."""
    if ref_rewards is None:
        raise ValueError(f"reward shaper {name!r} needs ref_rewards [B, M] (see collect_reference_rewards)")
    if isinstance(ref_rewards, Tensor):
        refs = ref_rewards.to(dtype=r.dtype)
    else:
        refs = stack_reference_rewards(ref_rewards, dtype=r.dtype)
    if refs.dim() != 2 or refs.shape[0] != r.shape[0]:
        raise ValueError(f"ref_rewards must have shape [B={r.shape[0]}, M], got {tuple(refs.shape)}")
    valid = ~torch.isnan(refs)
    empty = (valid.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"reward shaper {name!r}: rows {empty[:10]} have no reference rewards")
    return refs, valid


def _masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean over dim 1 of the entries where ``valid`` (NaNs elsewhere are never touched)."""
    return torch.where(valid, x, torch.zeros_like(x)).sum(dim=1) / valid.sum(dim=1).to(x.dtype)


def _need_stats(stats: RunningStats | None, name: str) -> RunningStats:
    if stats is None:
        raise ValueError(f"reward shaper {name!r} needs a RunningStats (stats=...)")
    return stats


# ----------------------------------------------------------------------------------------- shapers
@SHAPERS.register("par")
def par(rewards: Rewards, *, ref_rewards: RefRewards = None, stats: RunningStats | None = None,
        k: float = 1.0) -> Tensor:
    """Preference As Reward: (1/M) Σ_m σ(k·(r − r_ref,m)), the mean win probability against the
    references under a Bradley-Terry model. In (0, 1); ``stats`` is unused."""
    r = _as_rewards(rewards)
    refs, valid = _as_refs(ref_rewards, r, "par")
    return _masked_mean(torch.sigmoid(k * (r[:, None] - refs)), valid)


@SHAPERS.register("centered")
def centered(rewards: Rewards, *, ref_rewards: RefRewards = None,
             stats: RunningStats | None = None) -> Tensor:
    """(1/M) Σ_m (r − r_ref,m) = r − mean of the prompt's reference rewards."""
    r = _as_rewards(rewards)
    refs, valid = _as_refs(ref_rewards, r, "centered")
    return r - _masked_mean(refs, valid)


@SHAPERS.register("lsc")
def lsc(rewards: Rewards, *, ref_rewards: RefRewards = None, stats: RunningStats | None = None,
        percentile_z: float = Z_085, unbiased: bool = False) -> Tensor:
    """Log-sigmoid centering: log σ(r − r_ref^0.85), r_ref^0.85 = mean + z_0.85·std of a normal fitted
    to the prompt's references (population std unless ``unbiased``; one reference → std 0).
    Computed with a stable log-sigmoid; in (−∞, 0)."""
    r = _as_rewards(rewards)
    refs, valid = _as_refs(ref_rewards, r, "lsc")
    mean = _masked_mean(refs, valid)
    count = valid.sum(dim=1).to(r.dtype)
    sq = torch.where(valid, (refs - mean[:, None]) ** 2, torch.zeros_like(refs)).sum(dim=1)
    denom = (count - 1.0).clamp(min=1.0) if unbiased else count
    std = torch.sqrt(sq / denom)
    return F.logsigmoid(r - (mean + percentile_z * std))


@SHAPERS.register("meanstd")
def meanstd(rewards: Rewards, *, ref_rewards: RefRewards = None,
            stats: RunningStats | None = None) -> Tensor:
    """(r − μ)/σ with running μ, σ (updated with this batch first); σ = 0 → (r − μ)."""
    r = _as_rewards(rewards)
    st = _need_stats(stats, "meanstd")
    st.update(r)
    return (r - st.mean) / (st.std if st.std > 0 else 1.0)


@SHAPERS.register("clip")
def clip(rewards: Rewards, *, ref_rewards: RefRewards = None, stats: RunningStats | None = None) -> Tensor:
    """clamp(r, μ − σ, μ + σ) with running μ, σ (updated with this batch first)."""
    r = _as_rewards(rewards)
    st = _need_stats(stats, "clip")
    st.update(r)
    return r.clamp(min=st.mean - st.std, max=st.mean + st.std)


@SHAPERS.register("minmax")
def minmax(rewards: Rewards, *, ref_rewards: RefRewards = None,
           stats: RunningStats | None = None) -> Tensor:
    """(r − min)/(max − min) with running min, max (updated with this batch first, so the result is in
    [0, 1]); max = min → divide by 1 (all rewards then equal min: result 0)."""
    r = _as_rewards(rewards)
    st = _need_stats(stats, "minmax")
    st.update(r)
    span = st.max - st.min
    return (r - st.min) / (span if span > 0 else 1.0)


@SHAPERS.register("ceil")
def ceil(rewards: Rewards, *, ref_rewards: RefRewards = None, stats: RunningStats | None = None,
         c: float | None = None) -> Tensor:
    """min(r, c). The ceiling ``c`` has no default (PAR: ``reward_ceil``, unset by default)."""
    if c is None:
        raise ValueError("reward shaper 'ceil' needs the option c (the ceiling)")
    return _as_rewards(rewards).clamp(max=float(c))


@SHAPERS.register("vanilla")
def vanilla(rewards: Rewards, *, ref_rewards: RefRewards = None,
            stats: RunningStats | None = None) -> Tensor:
    """r unchanged (a copy)."""
    return _as_rewards(rewards).clone()


def shape_rewards(name: str, rewards: Rewards, *,
                  ref_rewards: RefRewards = None,
                  stats: RunningStats | None = None, **options: Any) -> Tensor:
    """Look up shaper ``name`` in :data:`SHAPERS`, check ``options`` against its keywords, apply it."""
    fn = SHAPERS.get(name)
    check_options(fn, options, f"reward shaper {name!r}", reserved=RESERVED)
    return fn(rewards, ref_rewards=ref_rewards, stats=stats, **options)


# ----------------------------------------------------------------------------- length and RM loss
def length_penalty(rewards: Rewards, lengths: Tensor | Sequence[int],
                   threshold: int = 300, coef: float = 0.01) -> Tensor:
    """r − coef·max(len − threshold, 0): PAR's penalty on responses longer than ``threshold`` tokens
    (applied before shaping). ``rewards`` and ``lengths`` are ``[B]``; returns a new ``[B]`` tensor."""
    r = _as_rewards(rewards)
    n = torch.as_tensor(lengths, dtype=r.dtype)
    if n.shape != r.shape:
        raise ValueError(f"lengths shape {tuple(n.shape)} != rewards shape {tuple(r.shape)}")
    return r - coef * (n - threshold).clamp(min=0.0)


def reg_rm_loss(r_chosen: Tensor, r_rejected: Tensor, coef: float = 0.005) -> Tensor:
    """Reward-model loss with the Reg penalty, averaged over the batch:
    mean_b[ −log σ(r_c − r_r) + coef·(r_c² + r_r²) ] (stable log-sigmoid). Scalar tensor."""
    rc, rr = torch.as_tensor(r_chosen), torch.as_tensor(r_rejected)
    return (-F.logsigmoid(rc - rr) + coef * (rc**2 + rr**2)).mean()


# ----------------------------------------------------------------------------- reference rewards
def collect_reference_rewards(generator: Generator, tokenizer: Any, samples: Sequence[Mapping[str, Any]],
                              reward_fn: RewardFn, m: int = 10, params: SamplingParams | None = None,
                              chat_template: bool | None = None, *, failure_value: float | None = None,
                              batch_size: int | None = None) -> list[list[float]]:
    """Sample ``m`` responses per prompt from ``generator`` (the SFT policy) and score each with
    ``reward_fn(completion, sample)``; returns one list of rewards per sample, in order.

    ``params`` (default: ``SamplingParams(temperature=0.9, top_p=0.9)``, PAR's sampling settings) is
    used with ``n`` replaced by ``m``. The completion is scored as the generator returns it (the
    sample's ``assistant_prefix`` is not prepended: reward functions that need it read it from the
    sample). Failures (:func:`~llmrl.rewards.base.safe_score`: a raise, a NaN/inf or None) are
    **skipped** by default, so a list can be shorter than ``m`` (possibly empty); with
    ``failure_value`` set they count as that value instead. ``batch_size`` prompts per generate call
    (default: all at once).
    """
    from llmrl.rollout.base import SamplingParams  # lazy: keep llmrl.rewards import-light
    from llmrl.rollout.episodes import generate_episodes

    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    base = params if params is not None else SamplingParams(temperature=0.9, top_p=0.9)
    p = replace(base, n=m)
    items = [dict(s) for s in samples]
    step = batch_size or max(len(items), 1)
    out: list[list[float]] = [[] for _ in items]
    for start in range(0, len(items), step):
        chunk = items[start : start + step]
        for ep in generate_episodes(generator, tokenizer, chunk, p, chat_template, group_offset=start):
            value, _err = safe_score(reward_fn, ep.completion, ep.sample)
            if value is None:
                if failure_value is None:
                    continue
                value = float(failure_value)
            out[ep.group_id].append(value)
    return out


def attach_reference_rewards(samples: Sequence[dict[str, Any]], refs: Sequence[Sequence[float]],
                             key: str = "ref_rewards") -> Sequence[dict[str, Any]]:
    """Store ``refs[i]`` (as a list of Python floats: JSON-serialisable) under ``samples[i][key]``,
    in place; returns ``samples``. Read them back for a batch with
    ``stack_reference_rewards([s[key] for s in batch])``."""
    if len(samples) != len(refs):
        raise ValueError(f"{len(samples)} samples but {len(refs)} reference-reward lists")
    for sample, row in zip(samples, refs):
        values = [float(x) for x in row]
        if not all(math.isfinite(x) for x in values):
            raise ValueError("reference rewards must be finite")
        sample[key] = values
    return samples
