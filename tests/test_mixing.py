"""MPO mixing weights (llmrl.algos.mixing): hand-computed values and convergence to known max–min weights."""

from __future__ import annotations

import math

import pytest
import torch

from llmrl.algos import (
    maxmin_weights,
    mirror_descent_step,
    mixture_gradient,
    mixture_log_partition,
    mixture_objective,
    normalized_reward,
)


def _softmax(xs: list[float]) -> list[float]:
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def test_single_step_hand_computed() -> None:
    # One prompt, m = 3 responses, K = 2 policies, λ = (0.25, 0.75), η = 0.5.
    ell = [[1.0, -0.5], [0.0, 2.0], [-1.0, 0.5]]
    lam, eta = [0.25, 0.75], 0.5
    s = [lam[0] * a + lam[1] * b for a, b in ell]  # 0.25*1 - 0.75*0.5 = -0.125, 1.5, 0.125
    w = _softmax(s)
    v = [sum(w[j] * ell[j][k] for j in range(3)) for k in range(2)]
    num = [lam[k] * math.exp(-eta * v[k]) for k in range(2)]
    expected = [x / sum(num) for x in num]
    new, got_v = mirror_descent_step(torch.tensor(lam, dtype=torch.float64), torch.tensor(ell, dtype=torch.float64),
                                     eta)
    assert got_v.tolist() == pytest.approx(v, abs=1e-12)
    assert new.tolist() == pytest.approx(expected, abs=1e-12)
    # F's per-prompt estimate: log (1/m) Σ_j exp(s_j)
    f = math.log(sum(math.exp(x) for x in s) / 3)
    assert float(mixture_log_partition(torch.tensor(lam), torch.tensor(ell))[0]) == pytest.approx(f, abs=1e-6)


def test_batch_step_averages_prompt_gradients() -> None:
    # Two prompts, m = 2, K = 3: v is the mean over prompts of each prompt's Σ_j w_j ℓ_jk.
    ell = [[[0.5, 0.0, -1.0], [1.0, 1.0, 0.0]], [[-2.0, 0.5, 0.5], [0.0, 0.0, 3.0]]]
    lam, eta = [0.2, 0.3, 0.5], 0.1
    v = [0.0, 0.0, 0.0]
    for prompt in ell:
        w = _softmax([sum(lam[k] * y[k] for k in range(3)) for y in prompt])
        for k in range(3):
            v[k] += sum(w[j] * prompt[j][k] for j in range(2)) / 2
    num = [lam[k] * math.exp(-eta * v[k]) for k in range(3)]
    t_lam, t_ell = torch.tensor(lam, dtype=torch.float64), torch.tensor(ell, dtype=torch.float64)
    assert mixture_gradient(t_lam, t_ell).tolist() == pytest.approx(v, abs=1e-12)
    assert mirror_descent_step(t_lam, t_ell, eta)[0].tolist() == pytest.approx([x / sum(num) for x in num], abs=1e-12)
    fs = [math.log(sum(math.exp(sum(lam[k] * y[k] for k in range(3))) for y in p) / 2) for p in ell]
    assert float(mixture_objective(t_lam, t_ell)) == pytest.approx(sum(fs) / 2, abs=1e-12)


def test_zero_weight_stays_zero_and_bad_input() -> None:
    ell = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    new, _ = mirror_descent_step(torch.tensor([0.0, 0.5, 0.5]), ell, 0.3)
    assert new[0] == 0.0 and float(new.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="length K=3"):
        mirror_descent_step(torch.tensor([0.5, 0.5]), ell, 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        mirror_descent_step(torch.tensor([-0.5, 1.0, 0.5]), ell, 0.1)
    with pytest.raises(ValueError, match="sum to 1"):
        mirror_descent_step(torch.tensor([0.5, 0.5, 0.5]), ell, 0.1)
    with pytest.raises(ValueError, match="non-finite"):
        mixture_gradient(torch.tensor([0.5, 0.5]), torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        mixture_gradient(torch.tensor([1.0]), torch.zeros(3))
    with pytest.raises(ValueError, match="steps is required"):
        maxmin_weights(lambda t: ell)


def test_maxmin_average_iterate_and_step_size() -> None:
    # Constant batch, T = 2, c = 1: η = 1/√2, output = mean of the two updated iterates.
    ell = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    res = maxmin_weights([ell, ell], lr_c=1.0)
    assert res.lr == pytest.approx(1 / math.sqrt(2))
    lam1, _ = mirror_descent_step(torch.tensor([0.5, 0.5], dtype=torch.float64), ell, res.lr)
    lam2, _ = mirror_descent_step(lam1, ell, res.lr)
    assert res.weights.tolist() == pytest.approx(((lam1 + lam2) / 2).tolist(), abs=1e-12)
    assert res.last.tolist() == pytest.approx(lam2.tolist(), abs=1e-12)
    assert len(res.objective) == 2 and len(res.gradients) == 2


# Two-point problem. y ∈ {0, 1}, π_ref = (1/2, 1/2), π_1 = (p, 1−p), π_2 = (q, 1−q); λ = (t, 1−t).
P, Q = 0.99, 0.4


def _two_point_ell() -> torch.Tensor:
    """ℓ_k(y) = log π_k(y) − log π_ref(y) for y = 0, 1 (rows) and k = 1, 2 (columns)."""
    return torch.tensor([[math.log(2 * P), math.log(2 * Q)], [math.log(2 * (1 - P)), math.log(2 * (1 - Q))]],
                        dtype=torch.float64)


def _two_point_optimum() -> float:
    """The max–min weight t* of the two-point problem, in closed form.

    F(t) = log Σ_y π_ref(y) (π_1/π_ref)^t (π_2/π_ref)^{1−t} = log(a + b), a = p^t q^{1−t},
    b = (1−p)^t (1−q)^{1−t} (the factors 2 cancel). F is convex; F'(t) = 0 ⇔
    a·log(p/q) + b·log((1−p)/(1−q)) = 0 ⇔ a/b = R := −log((1−p)/(1−q)) / log(p/q). Since
    log(a/b) = t·logit(p) + (1−t)·logit(q), t* = (log R − logit q) / (logit p − logit q).
    For p = 0.99, q = 0.4: t* ≈ 0.3827 (not 1/2, and not where mirror descent starts).
    """
    logit = lambda z: math.log(z / (1 - z))  # noqa: E731
    r = -math.log((1 - P) / (1 - Q)) / math.log(P / Q)
    return (math.log(r) - logit(Q)) / (logit(P) - logit(Q))


def test_two_point_optimum_is_the_minimiser_of_F() -> None:
    t_star = _two_point_optimum()

    def f(t: float) -> float:  # plain-python F
        return math.log(P**t * Q ** (1 - t) + (1 - P) ** t * (1 - Q) ** (1 - t))

    grid = min((i / 10000 for i in range(10001)), key=f)
    assert abs(grid - t_star) < 2e-4
    # the code's F estimate, with the two responses enumerating the uniform π_ref, is exact
    got = float(mixture_objective(torch.tensor([t_star, 1 - t_star], dtype=torch.float64), _two_point_ell()))
    assert got == pytest.approx(f(t_star), abs=1e-9)


def test_mirror_descent_converges_exact_two_point() -> None:
    """Exact gradients (both y enumerated, π_ref uniform): the average iterate is within 0.01 of t*."""
    res = maxmin_weights([_two_point_ell()] * 2000, lr_c=1.0)
    t_star = _two_point_optimum()
    assert abs(float(res.weights[0]) - t_star) < 0.01
    assert abs(float(res.last[0]) - t_star) < 1e-4


def test_mirror_descent_converges_stochastic_two_point() -> None:
    """Acceptance: stochastic batches (8 prompts × m = 32 responses y ~ π_ref per step, T = 1000) reach
    within 0.05 of the closed-form max–min weights (the self-normalised gradient is biased by O(1/m))."""
    ell, g = _two_point_ell(), torch.Generator().manual_seed(0)

    def batch(t: int) -> torch.Tensor:
        return ell[(torch.rand(8, 32, generator=g) < 0.5).long()]  # [B, m, K]

    res = maxmin_weights(batch, steps=1000, lr_c=1.0)
    t_star = _two_point_optimum()
    assert abs(float(res.weights[0]) - t_star) < 0.05
    assert abs(float(res.weights[1]) - (1 - t_star)) < 0.05


def test_mirror_descent_converges_stochastic_gaussian_three_objectives() -> None:
    """Acceptance, K = 3 with the optimum on the simplex's boundary.

    π_ref = N(0, 1) and π_k = N(μ_k, 1) over y ∈ ℝ, so ℓ_k(y) = μ_k·y − μ_k²/2. With a = Σ_k λ_k μ_k,
    E_{y~N(0,1)} exp(a·y) = exp(a²/2), hence F(λ) = a²/2 − Σ_k λ_k μ_k²/2 = −Var_λ(μ)/2: the max–min
    weights maximise the variance of μ under λ. For μ = (−1, 0, 2) every distribution on [−1, 2] has
    variance <= (2 − (−1))²/4 with equality only for mass 1/2 on each end, so λ* = (1/2, 0, 1/2), F* = −9/8.
    """
    mu, g = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64), torch.Generator().manual_seed(1)

    def batch(t: int) -> torch.Tensor:
        y = torch.randn(8, 32, 1, generator=g, dtype=torch.float64)
        return mu * y - mu**2 / 2  # [B, m, K]

    res = maxmin_weights(batch, steps=1000, lr_c=1.0)
    assert res.weights.tolist() == pytest.approx([0.5, 0.0, 0.5], abs=0.05)
    assert sum(res.objective[-100:]) / 100 == pytest.approx(-9 / 8, abs=0.1)
    # at the uniform start F = −(5/3 − 1/9)/2 = −7/9 (the first steps barely move λ: η = 1/√1000)
    assert sum(res.objective[:10]) / 10 == pytest.approx(-7 / 9, abs=0.15)


def test_normalized_reward_hand_computed() -> None:
    beta = 0.5
    ref = [[1.0, 0.0, 2.0], [-1.0, -1.0, 3.0]]
    rewards = [[1.5, 0.0], [2.0, -3.0]]
    want = []
    for rb, refb in zip(rewards, ref):
        shift = beta * math.log(sum(math.exp(r / beta) for r in refb) / len(refb))
        want.append([r - shift for r in rb])
    got = normalized_reward(torch.tensor(rewards, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64), beta)
    assert got.flatten().tolist() == pytest.approx([x for row in want for x in row], abs=1e-12)
    # after normalisation, the reference samples' mean of exp(P(r)/β) is 1
    p_ref = normalized_reward(torch.tensor(ref, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64), beta)
    assert torch.exp(p_ref / beta).mean(-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    with pytest.raises(ValueError, match="beta"):
        normalized_reward(torch.zeros(2), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="disagree"):
        normalized_reward(torch.zeros(3), torch.zeros(2, 3), 1.0)
