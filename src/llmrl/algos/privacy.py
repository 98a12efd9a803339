"""Label privacy for preference data (AUP-RLHF: Zhang et al., 2025, arXiv:2502.17515).

Two mechanisms, both for Bradley-Terry reward-model training on binary preference labels.

**Item-level randomized response (RR).** Each binary label is flipped independently with probability
ρ = 1/(1 + e^ε) (:func:`rr_flip_probability`, :func:`randomized_response`); every single label is then
ε-label-DP. A user who gives m labels gets, by basic (group) composition, mε-DP at user level, so a
user-level target ε needs ε′ = ε/m per label (:func:`rr_label_epsilon`). Training on the flipped labels
with the plain loss is biased towards ½; :func:`rr_debiased_bt_loss` is the standard unbiased estimator
of the clean loss (Natarajan et al. 2013, "Learning with noisy labels"):

    ℓ̃(m, ỹ) = ((1 − ρ)·ℓ(m, ỹ) − ρ·ℓ(m, 1 − ỹ)) / (1 − 2ρ),    ℓ(m, y) = −log σ((2y − 1)·m)

with m = r_a − r_b the reward margin and ỹ the observed (possibly flipped) label. For either true label
y, E_ỹ[ℓ̃(m, ỹ)] = ℓ(m, y) exactly (expand the two cases; the ℓ(m, 1 − y) terms cancel). ℓ̃ is not
bounded below (it can be negative and its minimiser can be at |m| → ∞ for a single example); in a
batch the averages behave. ρ < ½ (ε > 0) is required.

**User-level Gaussian mechanism (DP-SGD over users).** Each step: users are Poisson-sampled with rate q;
every sampled user's gradient is the gradient of that user's *mean* BT loss (the per-user average
gradient); it is clipped to L2 norm C; the clipped gradients are summed and Gaussian noise N(0, σ²C²·I)
is added to the sum (:class:`UserGradientSum`). Adding or removing one user changes the sum by at most
C in L2, so the noise multiplier σ alone fixes the privacy of one step. Dividing by the expected number
of users q·n is post-processing.

Calibration of σ:

* one release: the classical Gaussian mechanism σ = sqrt(2 ln(1.25/δ))/ε (Dwork & Roth 2014, Thm 3.22;
  proven for 0 < ε < 1), or the exact *analytic* Gaussian mechanism (Balle & Wang 2018, Thm 8) for any
  ε > 0 (:func:`gaussian_sigma`);
* T steps with sampling rate q (the trainer's case), two accountants (:class:`PrivacyAccountant`):
  ``rdp`` (default): Rényi DP of the Poisson-subsampled Gaussian mechanism at integer orders α = 2..256
  (Mironov, Talwar & Zhang 2019, §3.3): per step
  RDP(α) = log(Σ_{k=0}^{α} C(α,k)(1−q)^{α−k} q^k exp((k² − k)/(2σ²)))/(α − 1), composed additively over
  T steps, converted to (ε, δ) with ε = min_α [T·RDP(α) + log((α−1)/α) − (log δ + log α)/(α − 1)]
  (Canonne, Kamath & Steinke 2020, Prop. 12; the conversion Opacus uses). At q = 1 it reduces to the
  Gaussian mechanism's exact RDP α/(2σ²).
  ``zcdp``: analytic zCDP composition (Bun & Steinke 2016): the Gaussian mechanism is 1/(2σ²)-zCDP, T
  steps are ρ = T/(2σ²)-zCDP, and ε = ρ + 2·sqrt(ρ·ln(1/δ)). It gets no credit for sampling (a valid but
  conservative bound when q < 1).
  :func:`calibrate_noise_multiplier` finds the smallest σ meeting a target (ε, δ) by bisection.

Everything here is pure (tensors and floats in, tensors and floats out); the training loop that uses it
is ``llmrl.preference.train_rm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

RDP_ORDERS: tuple[int, ...] = tuple(range(2, 257))
"""Integer Rényi orders used by the RDP accountant."""
ACCOUNTANTS = ("rdp", "zcdp")


def _check_epsilon(epsilon: float, where: str) -> float:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"{where}: epsilon must be a finite number > 0, got {epsilon!r}")
    return float(epsilon)


def _check_delta(delta: float, where: str) -> float:
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ValueError(f"{where}: delta must be in (0, 1), got {delta!r}")
    return float(delta)


# --------------------------------------------------------------------------- randomized response
def rr_flip_probability(epsilon: float) -> float:
    """ρ = 1/(1 + e^ε): the flip probability of ε-DP randomized response on one binary label."""
    eps = _check_epsilon(epsilon, "rr_flip_probability")
    return 1.0 / (1.0 + math.exp(eps)) if eps < 700 else 0.0


def rr_label_epsilon(epsilon: float, labels_per_user: int) -> float:
    """Per-label ε′ = ε/m that makes randomized response ε-DP at user level for users giving m labels
    (basic composition over each user's m labels)."""
    _check_epsilon(epsilon, "rr_label_epsilon")
    if labels_per_user < 1:
        raise ValueError(f"rr_label_epsilon: labels_per_user must be >= 1, got {labels_per_user}")
    return float(epsilon) / labels_per_user


def randomized_response(labels: Tensor, epsilon: float, generator: torch.Generator | None = None,
                        ) -> tuple[Tensor, Tensor]:
    """Flip each binary label (0/1 or bool, any shape) independently with probability 1/(1+e^ε).

    Returns ``(noisy_labels, flipped)``: the noisy labels in the input's dtype and the bool mask of flips.
    """
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("randomized_response: labels must be binary (0/1 or bool)")
    rho = rr_flip_probability(epsilon)
    flipped = torch.rand(labels.shape, generator=generator) < rho
    noisy = torch.where(flipped, 1 - labels.long(), labels.long())
    return noisy.to(labels.dtype), flipped


def bt_loss(margins: Tensor, labels: Tensor) -> Tensor:
    """Bradley-Terry loss per example ``[B]``: ℓ(m, y) = −log σ((2y − 1)·m), m = r_a − r_b, y = 1 when a is
    preferred (stable log-sigmoid)."""
    sign = 2.0 * labels.to(margins.dtype) - 1.0
    return -F.logsigmoid(sign * margins)


def rr_debiased_bt_loss(margins: Tensor, noisy_labels: Tensor, flip_prob: float) -> Tensor:
    """Unbiased estimate ``[B]`` of the clean BT loss from randomized-response labels (module docstring):
    ((1 − ρ)·ℓ(m, ỹ) − ρ·ℓ(m, 1 − ỹ)) / (1 − 2ρ). ρ = 0 gives the plain BT loss."""
    rho = float(flip_prob)
    if not 0.0 <= rho < 0.5:
        raise ValueError(f"rr_debiased_bt_loss: flip_prob must be in [0, 0.5), got {flip_prob!r}")
    y = noisy_labels.to(margins.dtype)
    return ((1 - rho) * bt_loss(margins, y) - rho * bt_loss(margins, 1 - y)) / (1 - 2 * rho)


# --------------------------------------------------------------------------- Gaussian mechanism
def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def analytic_gaussian_delta(sigma: float, epsilon: float) -> float:
    """Smallest δ for which the Gaussian mechanism with noise σ (sensitivity 1) is (ε, δ)-DP (Balle & Wang
    2018, Thm 8): Φ(1/(2σ) − εσ) − e^ε·Φ(−1/(2σ) − εσ)."""
    a, b = 1.0 / (2 * sigma), epsilon * sigma
    tail = _phi(-a - b)
    return _phi(a - b) - (math.exp(epsilon) * tail if tail > 0 else 0.0)


def gaussian_sigma(epsilon: float, delta: float, method: str = "classical") -> float:
    """Noise multiplier σ (noise std / L2 sensitivity) for ONE (ε, δ)-DP release of a Gaussian mechanism.

    ``classical``: sqrt(2·ln(1.25/δ))/ε, proven for 0 < ε < 1 (larger ε raises ``ValueError``: use
    ``analytic``). ``analytic``: the smallest σ with :func:`analytic_gaussian_delta` ≤ δ (bisection,
    relative precision 1e-10); tighter than the classical one, valid for every ε > 0.
    """
    eps = _check_epsilon(epsilon, "gaussian_sigma")
    dlt = _check_delta(delta, "gaussian_sigma")
    if method == "classical":
        if eps >= 1:
            raise ValueError(f"gaussian_sigma: the classical calibration is proven only for epsilon < 1, got "
                             f"{eps}; use method='analytic'")
        return math.sqrt(2 * math.log(1.25 / dlt)) / eps
    if method == "analytic":
        return _bisect_sigma(lambda s: analytic_gaussian_delta(s, eps) <= dlt)
    raise ValueError(f"gaussian_sigma: unknown method {method!r}; valid: classical, analytic")


def _bisect_sigma(ok, lo: float = 1e-3, hi: float = 1.0, rel: float = 1e-10) -> float:  # noqa: ANN001
    """Smallest σ with ``ok(σ)`` (``ok`` monotone: false below the answer, true above)."""
    while not ok(hi):
        hi *= 2
        if hi > 1e8:
            raise ValueError("noise multiplier calibration did not converge (target too strict?)")
    while ok(lo) and lo > 1e-8:
        lo /= 2
    while hi - lo > rel * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def rdp_subsampled_gaussian(noise_multiplier: float, sample_rate: float,
                            orders: Sequence[int] = RDP_ORDERS) -> list[float]:
    """RDP ε(α) of ONE step of the Poisson-subsampled Gaussian mechanism, per integer order α ≥ 2
    (module docstring; q = 1 gives α/(2σ²))."""
    sigma, q = float(noise_multiplier), float(sample_rate)
    if not sigma > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
    if not 0 < q <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if any(int(a) != a or a < 2 for a in orders):
        raise ValueError(f"RDP orders must be integers >= 2, got {list(orders)!r}")
    alpha = torch.tensor([int(a) for a in orders], dtype=torch.float64)[:, None]  # [A, 1]
    if q == 1.0:
        return (alpha[:, 0] / (2 * sigma**2)).tolist()
    k = torch.arange(int(alpha.max()) + 1, dtype=torch.float64)[None, :]  # [1, K]
    valid = k <= alpha  # [A, K]: k = 0..α
    log_binom = torch.lgamma(alpha + 1) - torch.lgamma(k + 1) - torch.lgamma((alpha - k).clamp(min=0) + 1)
    terms = log_binom + (alpha - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * sigma**2)
    log_a = torch.logsumexp(torch.where(valid, terms, -math.inf), dim=1)  # [A]
    return (log_a.clamp(min=0.0) / (alpha[:, 0] - 1)).tolist()


def rdp_to_epsilon(rdp: Sequence[float], orders: Sequence[int], delta: float) -> tuple[float, int]:
    """(ε, best order) from composed RDP values: min over α of ε(α) + log((α−1)/α) − (log δ + log α)/(α−1)."""
    dlt = _check_delta(delta, "rdp_to_epsilon")
    best = (math.inf, int(orders[0]))
    for r, a in zip(rdp, orders):
        eps = r + math.log((a - 1) / a) - (math.log(dlt) + math.log(a)) / (a - 1)
        best = min(best, (max(eps, 0.0), int(a)))
    return best


def zcdp_epsilon(noise_multiplier: float, steps: int, delta: float) -> float:
    """ε after ``steps`` Gaussian releases with noise multiplier σ by zCDP composition: ρ = T/(2σ²),
    ε = ρ + 2·sqrt(ρ·ln(1/δ))."""
    dlt = _check_delta(delta, "zcdp_epsilon")
    rho = steps / (2 * float(noise_multiplier) ** 2)
    return rho + 2 * math.sqrt(rho * math.log(1 / dlt))


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                  accountant: str = "rdp") -> float:
    """ε of ``steps`` steps of the (subsampled) Gaussian mechanism at the given δ (0 for 0 steps)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if steps == 0:
        return 0.0
    if accountant == "rdp":
        per_step = rdp_subsampled_gaussian(noise_multiplier, sample_rate)
        return rdp_to_epsilon([steps * r for r in per_step], RDP_ORDERS, delta)[0]
    if accountant == "zcdp":
        return zcdp_epsilon(noise_multiplier, steps, delta)
    raise ValueError(f"unknown privacy accountant {accountant!r}; valid: {', '.join(ACCOUNTANTS)}")


def calibrate_noise_multiplier(epsilon: float, delta: float, steps: int, sample_rate: float = 1.0,
                               accountant: str = "rdp") -> float:
    """Smallest noise multiplier σ for which ``steps`` steps at ``sample_rate`` are (ε, δ)-DP under
    ``accountant`` (bisection to relative precision 1e-6)."""
    eps = _check_epsilon(epsilon, "calibrate_noise_multiplier")
    _check_delta(delta, "calibrate_noise_multiplier")
    if steps < 1:
        raise ValueError(f"calibrate_noise_multiplier: steps must be >= 1, got {steps}")
    return _bisect_sigma(lambda s: epsilon_spent(s, sample_rate, steps, delta, accountant) <= eps, lo=0.05, rel=1e-6)


@dataclass(frozen=True)
class PrivacyBudget:
    """The (ε, δ) spent so far and how it was computed."""

    epsilon: float
    delta: float
    steps: int
    noise_multiplier: float
    sample_rate: float
    accountant: str

    def __str__(self) -> str:
        return (f"user-level ({self.epsilon:.4g}, {self.delta:.3g})-DP after {self.steps} steps "
                f"(noise multiplier {self.noise_multiplier:.4g}, sampling rate {self.sample_rate:.4g}, "
                f"{self.accountant} accountant)")

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


class PrivacyAccountant:
    """Counts steps of the user-level Gaussian mechanism and reports the budget spent (:meth:`spent`)."""

    def __init__(self, noise_multiplier: float, sample_rate: float, delta: float, accountant: str = "rdp") -> None:
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown privacy accountant {accountant!r}; valid: {', '.join(ACCOUNTANTS)}")
        rdp_subsampled_gaussian(noise_multiplier, sample_rate, orders=(2,))  # validates σ and q
        self.noise_multiplier, self.sample_rate = float(noise_multiplier), float(sample_rate)
        self.delta, self.accountant = _check_delta(delta, "PrivacyAccountant"), accountant
        self.steps = 0

    def step(self, n: int = 1) -> None:
        self.steps += n

    def spent(self) -> PrivacyBudget:
        eps = epsilon_spent(self.noise_multiplier, self.sample_rate, self.steps, self.delta, self.accountant)
        return PrivacyBudget(eps, self.delta, self.steps, self.noise_multiplier, self.sample_rate, self.accountant)

    def state_dict(self) -> dict[str, float | int | str]:
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate, "delta": self.delta,
                "accountant": self.accountant, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:  # type: ignore[type-arg]
        self.__init__(state["noise_multiplier"], state["sample_rate"], state["delta"], state["accountant"])
        self.steps = int(state["steps"])


# --------------------------------------------------------------------------- per-user clipping + noise
def grad_norm(grads: Sequence[Tensor]) -> Tensor:
    """Global L2 norm (float32 scalar) of a list of gradient tensors."""
    if not grads:
        return torch.zeros(())
    return torch.sqrt(sum((g.detach().float() ** 2).sum() for g in grads))  # type: ignore[arg-type]


def clip_gradient(grads: Sequence[Tensor], clip: float) -> tuple[list[Tensor], Tensor]:
    """Scale ``grads`` (one user's gradient as a list of tensors) to L2 norm at most ``clip``:
    factor min(1, C/‖g‖). Returns (clipped gradients, norm before clipping)."""
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip!r}")
    norm = grad_norm(grads)
    factor = (clip / norm).clamp(max=1.0) if float(norm) > 0 else torch.ones(())
    return [g.detach() * factor.to(g.dtype) for g in grads], norm


def user_mean_losses(losses: Tensor, user_index: Tensor, num_users: int) -> Tensor:
    """``[U]`` mean of the per-example ``losses [N]`` of each user (``user_index [N]`` in 0..U−1); the
    gradient of entry u is user u's average per-example gradient. Users without examples get 0."""
    total = torch.zeros(num_users, dtype=losses.dtype, device=losses.device).index_add(0, user_index, losses)
    count = torch.zeros(num_users, dtype=losses.dtype, device=losses.device).index_add(
        0, user_index, torch.ones_like(losses))
    return total / count.clamp(min=1)


class UserGradientSum:
    """Accumulates per-user gradients clipped to ``clip``; :meth:`release` returns their sum plus Gaussian
    noise N(0, (noise_multiplier·clip)²) per coordinate (the user-level Gaussian mechanism)."""

    def __init__(self, clip: float, noise_multiplier: float) -> None:
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip!r}")
        if not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
        self.clip, self.noise_multiplier = float(clip), float(noise_multiplier)
        self.total: list[Tensor] | None = None
        self.users = 0
        self.clipped = 0
        self.norms: list[float] = []

    @property
    def noise_std(self) -> float:
        """σ·C: the standard deviation of the noise added to each coordinate of the sum."""
        return self.noise_multiplier * self.clip

    def add(self, grads: Sequence[Tensor]) -> float:
        """Clip one user's gradient and add it to the sum; returns its norm before clipping."""
        clipped, norm = clip_gradient(grads, self.clip)
        if self.total is None:
            self.total = [g.clone() for g in clipped]
        else:
            if len(clipped) != len(self.total):
                raise ValueError(f"UserGradientSum.add: got {len(clipped)} tensors, expected {len(self.total)}")
            for t, g in zip(self.total, clipped):
                t.add_(g)
        self.users += 1
        self.clipped += int(float(norm) > self.clip)
        self.norms.append(float(norm))
        return float(norm)

    def release(self, like: Sequence[Tensor] | None = None, generator: torch.Generator | None = None,
                ) -> list[Tensor]:
        """Sum of the clipped gradients + noise. ``like`` gives shapes/dtypes when no user was added (noise
        must be released even for an empty step). Noise is drawn on the CPU with ``generator``."""
        base = self.total if self.total is not None else (
            [torch.zeros_like(t) for t in like] if like is not None else None)
        if base is None:
            raise ValueError("UserGradientSum.release: no user was added; pass like= (the parameters)")
        std = self.noise_std
        out = []
        for t in base:
            noise = torch.randn(t.shape, generator=generator, dtype=torch.float32) * std if std > 0 else 0.0
            out.append(t + (noise.to(device=t.device, dtype=t.dtype) if std > 0 else 0.0))
        return out


__all__ = [
    "ACCOUNTANTS", "RDP_ORDERS", "PrivacyAccountant", "PrivacyBudget", "UserGradientSum", "analytic_gaussian_delta",
    "bt_loss", "calibrate_noise_multiplier", "clip_gradient", "epsilon_spent", "gaussian_sigma", "grad_norm",
    "randomized_response", "rdp_subsampled_gaussian", "rdp_to_epsilon", "rr_debiased_bt_loss", "rr_flip_probability",
    "rr_label_epsilon", "user_mean_losses", "zcdp_epsilon",
]
