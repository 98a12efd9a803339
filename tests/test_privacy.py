"""Label privacy (AUP-RLHF, arXiv:2502.17515): randomized response + debiased BT loss, user-level Gaussian
mechanism (per-user clipping, noise σ·C on the sum) and its (ε, δ) accounting."""

from __future__ import annotations

import math

import pytest
import torch

from llmrl.algos.privacy import (
    PrivacyAccountant,
    UserGradientSum,
    analytic_gaussian_delta,
    bt_loss,
    calibrate_noise_multiplier,
    clip_gradient,
    epsilon_spent,
    gaussian_sigma,
    randomized_response,
    rdp_subsampled_gaussian,
    rr_debiased_bt_loss,
    rr_flip_probability,
    rr_label_epsilon,
    user_mean_losses,
    zcdp_epsilon,
)


def _clean(m: float, y: int) -> float:
    """−log σ((2y−1)·m) in plain python."""
    s = 1.0 if y == 1 else -1.0
    return math.log1p(math.exp(-s * m))


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_randomized_response_flip_rate_within_three_sigma(eps):
    n = 10_000
    rho = 1.0 / (1.0 + math.exp(eps))
    assert rr_flip_probability(eps) == pytest.approx(rho, rel=1e-12)
    labels = torch.ones(n, dtype=torch.long)
    noisy, flipped = randomized_response(labels, eps, generator=torch.Generator().manual_seed(7))
    rate = float((noisy != labels).float().mean())
    assert torch.equal(flipped, noisy != labels)
    sd = math.sqrt(rho * (1 - rho) / n)
    assert abs(rate - rho) < 3 * sd, (rate, rho, sd)
    # bool labels keep their dtype; flips are symmetric
    b = torch.tensor([True, False] * 5000)
    nb, fb = randomized_response(b, eps, generator=torch.Generator().manual_seed(8))
    assert nb.dtype == torch.bool and torch.equal(nb, b ^ fb)


def test_debiased_loss_hand_value():
    m, rho = 0.5, 1 / (1 + math.e)  # ε = 1
    want_1 = ((1 - rho) * _clean(m, 1) - rho * _clean(m, 0)) / (1 - 2 * rho)
    want_0 = ((1 - rho) * _clean(m, 0) - rho * _clean(m, 1)) / (1 - 2 * rho)
    got = rr_debiased_bt_loss(torch.tensor([m, m], dtype=torch.float64), torch.tensor([1, 0]), rho)
    assert got.tolist() == pytest.approx([want_1, want_0], abs=1e-12)
    # rho = 0 is the plain BT loss
    assert rr_flip_probability(1.0) == pytest.approx(rho)
    assert rr_debiased_bt_loss(torch.tensor([m]), torch.tensor([1]), 0.0).item() == pytest.approx(_clean(m, 1), 1e-6)
    assert bt_loss(torch.tensor([-1.5]), torch.tensor([0])).item() == pytest.approx(_clean(-1.5, 0), 1e-6)


@pytest.mark.parametrize("eps", [0.3, 1.0, 3.0])
def test_debiased_loss_exact_expectation_equals_clean_loss(eps):
    rho = 1 / (1 + math.exp(eps))
    margins = torch.tensor([-3.0, -0.7, 0.0, 0.4, 2.5], dtype=torch.float64)
    for y in (0, 1):
        keep = rr_debiased_bt_loss(margins, torch.full((5,), y), rho)
        flip = rr_debiased_bt_loss(margins, torch.full((5,), 1 - y), rho)
        expectation = (1 - rho) * keep + rho * flip  # exact: the label is kept w.p. 1−ρ, flipped w.p. ρ
        want = [_clean(float(m), y) for m in margins]
        assert expectation.tolist() == pytest.approx(want, abs=1e-12)


def test_debiased_loss_monte_carlo_mean_matches_clean_while_naive_is_biased():
    eps, n = 0.5, 200_000
    rho = rr_flip_probability(eps)
    gen = torch.Generator().manual_seed(3)
    margins = torch.randn(n, generator=gen, dtype=torch.float64) + 0.5
    clean = torch.tensor([_clean(float(m), 1) for m in margins[:2000]], dtype=torch.float64).mean()  # spot check of bt_loss
    assert bt_loss(margins[:2000], torch.ones(2000)).mean().item() == pytest.approx(float(clean), rel=1e-9)
    true_loss = bt_loss(margins, torch.ones(n)).mean().item()
    noisy, _ = randomized_response(torch.ones(n, dtype=torch.long), eps, generator=gen)
    deb = rr_debiased_bt_loss(margins, noisy, rho)
    se = deb.std().item() / math.sqrt(n)
    assert abs(deb.mean().item() - true_loss) < 4 * se
    naive = bt_loss(margins, noisy).mean().item()
    assert abs(naive - true_loss) > 20 * se  # training on flipped labels without debiasing is biased


def test_classical_and_analytic_gaussian_calibration():
    eps, delta = 0.5, 1e-5
    assert gaussian_sigma(eps, delta) == pytest.approx(math.sqrt(2 * math.log(1.25 / delta)) / eps, rel=1e-12)
    s = gaussian_sigma(eps, delta, "analytic")
    assert analytic_gaussian_delta(s, eps) == pytest.approx(delta, rel=1e-4)
    assert s < gaussian_sigma(eps, delta)  # the exact calibration is tighter
    assert gaussian_sigma(4.0, delta, "analytic") < s
    with pytest.raises(ValueError, match="epsilon < 1"):
        gaussian_sigma(2.0, delta)
    with pytest.raises(ValueError, match="delta"):
        gaussian_sigma(0.5, 1.5)
    with pytest.raises(ValueError, match="epsilon"):
        rr_flip_probability(0.0)


def test_user_level_noise_scale_matches_sigma_times_clip():
    clip, sigma, d = 0.5, gaussian_sigma(0.8, 1e-5), 200_000
    acc = UserGradientSum(clip, sigma)
    assert acc.noise_std == pytest.approx(sigma * clip)
    out = acc.release(like=[torch.zeros(d)], generator=torch.Generator().manual_seed(0))[0]
    # sample std of d normal draws has relative standard error ≈ 1/sqrt(2d) ≈ 0.0016
    assert out.std().item() == pytest.approx(sigma * clip, rel=0.01)
    assert abs(out.mean().item()) < 5 * sigma * clip / math.sqrt(d)


def test_per_user_clipping_bound_and_exact_sum_without_noise():
    gen = torch.Generator().manual_seed(1)
    clip = 1.0
    users = [[torch.randn(3, 4, generator=gen) * s, torch.randn(5, generator=gen) * s] for s in (0.01, 0.1, 3.0, 10.0)]
    acc = UserGradientSum(clip, noise_multiplier=0.0)
    want = [torch.zeros(3, 4), torch.zeros(5)]
    for g in users:
        norm = math.sqrt(sum(float((t**2).sum()) for t in g))
        clipped, n = clip_gradient(g, clip)
        assert float(n) == pytest.approx(norm, rel=1e-5)
        cn = math.sqrt(sum(float((t**2).sum()) for t in clipped))
        assert cn <= clip + 1e-6
        if norm <= clip:  # small gradients are untouched
            assert all(torch.equal(a, b) for a, b in zip(clipped, g))
        else:
            assert cn == pytest.approx(clip, rel=1e-5)
        scale = min(1.0, clip / norm)
        want = [w + t * scale for w, t in zip(want, g)]
        acc.add(g)
    assert acc.users == 4 and acc.clipped == 2
    got = acc.release()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want))


def test_user_mean_losses_averages_each_users_examples():
    losses = torch.tensor([1.0, 2.0, 3.0, 10.0, 4.0], requires_grad=True)
    users = torch.tensor([0, 0, 0, 2, 2])
    out = user_mean_losses(losses, users, 3)
    assert out.tolist() == pytest.approx([2.0, 0.0, 7.0])
    out[2].backward()
    assert losses.grad.tolist() == pytest.approx([0, 0, 0, 0.5, 0.5])


def test_rdp_accountant_known_values_and_zcdp_formula():
    # q = 1: RDP of the Gaussian mechanism is exactly α/(2σ²)
    assert rdp_subsampled_gaussian(2.0, 1.0, orders=[2, 10]) == pytest.approx([2 / 8, 10 / 8])
    # TF Privacy's published example (MNIST tutorial): q = 256/60000, σ = 1.1, 60 epochs, δ = 1e-5 →
    # ε = 3.01 with the classical RDP conversion ε = min_α RDP_T(α) + log(1/δ)/(α − 1)
    q, steps, orders = 256 / 60000, 14063, list(range(2, 257))
    per = rdp_subsampled_gaussian(1.1, q, orders)
    classical = min(steps * r + math.log(1e5) / (a - 1) for r, a in zip(per, orders))
    assert classical == pytest.approx(3.01, abs=0.01)
    improved = epsilon_spent(1.1, q, steps, 1e-5)
    assert improved < classical and improved == pytest.approx(2.6, abs=0.05)
    # zCDP: ρ = T/(2σ²), ε = ρ + 2 sqrt(ρ ln(1/δ))
    rho = 100 / (2 * 10.0**2)
    assert zcdp_epsilon(10.0, 100, 1e-5) == pytest.approx(rho + 2 * math.sqrt(rho * math.log(1e5)))
    assert epsilon_spent(10.0, 0.3, 100, 1e-5, "zcdp") == pytest.approx(rho + 2 * math.sqrt(rho * math.log(1e5)))


def test_calibration_hits_the_target_and_accountant_reports_budget():
    sigma = calibrate_noise_multiplier(2.0, 1e-5, steps=50, sample_rate=0.2)
    assert epsilon_spent(sigma, 0.2, 50, 1e-5) == pytest.approx(2.0, rel=1e-4)
    assert epsilon_spent(sigma * 0.99, 0.2, 50, 1e-5) > 2.0
    acc = PrivacyAccountant(sigma, 0.2, 1e-5)
    assert acc.spent().epsilon == 0.0
    acc.step(50)
    budget = acc.spent()
    assert budget.epsilon == pytest.approx(2.0, rel=1e-4) and budget.steps == 50
    assert "DP after 50 steps" in str(budget) and budget.as_dict()["accountant"] == "rdp"
    again = PrivacyAccountant(1.0, 1.0, 1e-3)
    again.load_state_dict(acc.state_dict())
    assert again.spent() == budget
    assert rr_label_epsilon(4.0, 8) == 0.5
    with pytest.raises(ValueError, match="accountant"):
        PrivacyAccountant(1.0, 0.5, 1e-5, accountant="moments")
    with pytest.raises(ValueError, match="sample_rate"):
        PrivacyAccountant(1.0, 0.0, 1e-5)
