"""GAE and the clipped value loss: hand-computed values, a pure-Python reference loop, the estimator."""

from __future__ import annotations

import random

import pytest
import torch

from llmrl.algos import ADVANTAGES, KLController, explained_variance, gae, sequence_kl, value_loss

F64 = torch.float64
R = [0.1, -0.2, 1.0]  # rewards of a 3-token response
V = [0.5, 0.4, 0.8]  # values V(s_t); the value after the last token is 0

# (gamma, lam) -> (advantages, returns), worked out by hand from
#   δ2 = 1.0 − 0.8 = 0.2,  δ1 = −0.2 + γ·0.8 − 0.4,  δ0 = 0.1 + γ·0.4 − 0.5,  A_t = δ_t + γλ·A_{t+1}
HAND = {
    (0.0, 0.0): ([-0.4, -0.6, 0.2], [0.1, -0.2, 1.0]),  # γ = 0: returns are the rewards
    (0.0, 0.9): ([-0.4, -0.6, 0.2], [0.1, -0.2, 1.0]),
    (0.0, 1.0): ([-0.4, -0.6, 0.2], [0.1, -0.2, 1.0]),
    (0.9, 0.0): ([-0.04, 0.12, 0.2], [0.46, 0.52, 1.0]),  # δ1 = −0.2 + 0.72 − 0.4, δ0 = 0.1 + 0.36 − 0.5
    (0.9, 0.9): ([0.18842, 0.282, 0.2], [0.68842, 0.682, 1.0]),  # A1 = 0.12 + 0.81·0.2, A0 = −0.04 + 0.81·0.282
    (0.9, 1.0): ([0.23, 0.30, 0.2], [0.73, 0.70, 1.0]),  # returns = discounted returns 0.1 − 0.18 + 0.81, ...
    (1.0, 0.0): ([0.0, 0.2, 0.2], [0.5, 0.6, 1.0]),  # TD(0): δ1 = −0.2 + 0.8 − 0.4, δ0 = 0.1 + 0.4 − 0.5
    (1.0, 0.9): ([0.342, 0.38, 0.2], [0.842, 0.78, 1.0]),  # A1 = 0.2 + 0.9·0.2, A0 = 0 + 0.9·0.38
    (1.0, 1.0): ([0.4, 0.4, 0.2], [0.9, 0.8, 1.0]),  # Monte Carlo: returns 0.9, 0.8, 1.0 minus V
}


@pytest.mark.parametrize("gamma,lam", sorted(HAND))
def test_gae_hand_values(gamma: float, lam: float) -> None:
    adv, ret = gae(torch.tensor([R], dtype=F64), torch.tensor([V], dtype=F64), torch.ones(1, 3, dtype=F64),
                   gamma, lam)
    want_a, want_r = HAND[(gamma, lam)]
    torch.testing.assert_close(adv, torch.tensor([want_a], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([want_r], dtype=F64), atol=1e-12, rtol=0)


def test_masked_positions_are_skipped_not_discounted() -> None:
    # the same 3 valid tokens with an environment token (reward 5, value 99: ignored) inside, then padding
    rewards = torch.tensor([[0.1, 5.0, -0.2, 1.0, 7.0]], dtype=F64)
    values = torch.tensor([[0.5, 99.0, 0.4, 0.8, -3.0]], dtype=F64)
    mask = torch.tensor([[1, 0, 1, 1, 0]], dtype=F64)
    adv, ret = gae(rewards, values, mask, 1.0, 0.9)
    torch.testing.assert_close(adv, torch.tensor([[0.342, 0.0, 0.38, 0.2, 0.0]], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([[0.842, 0.0, 0.78, 1.0, 0.0]], dtype=F64), atol=1e-12, rtol=0)


def slow_gae(rewards: list[list[float]], values: list[list[float]], mask: list[list[int]], gamma: float,
             lam: float) -> tuple[list[list[float]], list[list[float]]]:
    """Pure-Python reference: compact each row to its valid tokens, run the textbook recursion, scatter back."""
    advs, rets = [], []
    for r, v, m in zip(rewards, values, mask):
        idx = [t for t, x in enumerate(m) if x]
        a_row, r_row = [0.0] * len(m), [0.0] * len(m)
        running = 0.0
        for k in range(len(idx) - 1, -1, -1):
            t = idx[k]
            v_next = v[idx[k + 1]] if k + 1 < len(idx) else 0.0
            delta = r[t] + gamma * v_next - v[t]
            running = delta + gamma * lam * running
            a_row[t], r_row[t] = running, running + v[t]
        advs.append(a_row)
        rets.append(r_row)
    return advs, rets


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.9), (0.99, 0.0), (0.5, 1.0)])
def test_vectorised_matches_slow_loop_on_random_ragged_masks(gamma: float, lam: float) -> None:
    rng = random.Random(int(gamma * 100 + lam * 10))
    for _ in range(20):
        B, T = rng.randint(1, 6), rng.randint(1, 12)
        mask = [[int(rng.random() < 0.7) for _ in range(T)] for _ in range(B)]
        for row in mask:  # right padding after a random length, as in a real batch
            for t in range(rng.randint(0, T), T):
                row[t] = 0
        rewards = [[rng.uniform(-2, 2) for _ in range(T)] for _ in range(B)]
        values = [[rng.uniform(-2, 2) for _ in range(T)] for _ in range(B)]
        adv, ret = gae(torch.tensor(rewards, dtype=F64), torch.tensor(values, dtype=F64),
                       torch.tensor(mask, dtype=F64), gamma, lam)
        want_a, want_r = slow_gae(rewards, values, mask, gamma, lam)
        assert (adv - torch.tensor(want_a, dtype=F64)).abs().max() < 1e-6
        assert (ret - torch.tensor(want_r, dtype=F64)).abs().max() < 1e-6


def test_gae_estimator_whitens_and_needs_values() -> None:
    rewards, values = torch.tensor([R, R], dtype=F64), torch.tensor([V, V], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=F64)
    est = ADVANTAGES.get("gae")
    raw = est(rewards, mask, group_ids=torch.zeros(2), baseline=values, gamma=1.0, lam=1.0, whiten=False)
    # row 1 ends after two tokens: A = [0.1 − 0.2 − 0.5, −0.2 − 0.4] = [−0.6, −0.6]
    torch.testing.assert_close(raw, torch.tensor([[0.4, 0.4, 0.2], [-0.6, -0.6, 0.0]], dtype=F64))
    white = est(rewards, mask, group_ids=torch.zeros(2), baseline=values, gamma=1.0, lam=1.0)
    xs = [0.4, 0.4, 0.2, -0.6, -0.6]
    mean = sum(xs) / 5
    std = (sum((x - mean) ** 2 for x in xs) / 4) ** 0.5  # unbiased
    want = [[(x - mean) / (std + 1e-8) for x in xs[:3]], [(x - mean) / (std + 1e-8) for x in xs[3:]] + [0.0]]
    torch.testing.assert_close(white, torch.tensor(want, dtype=F64))
    with pytest.raises(ValueError, match="critic"):
        est(rewards, mask, group_ids=torch.zeros(2), baseline=None)
    with pytest.raises(ValueError, match="gamma and lam"):
        gae(rewards, values, mask, 1.5, 0.9)


def test_clipped_value_loss_hand_values_and_gradient() -> None:
    # token 0: V moved 0.5 past V_old; V_clip = 0.5 + 0.2 = 0.7, (0.7 − 1.2)² = 0.25 > (1.0 − 1.2)² = 0.04
    # token 1: within the clip range: (0.0 − 1.0)² = 1.0;  token 2: masked (its huge error is ignored)
    v = torch.tensor([[1.0, 0.0, 50.0]], dtype=F64, requires_grad=True)
    old = torch.tensor([[0.5, 0.1, 0.0]], dtype=F64)
    ret = torch.tensor([[1.2, 1.0, -50.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0]], dtype=F64)
    loss, m = value_loss(v, old, ret, mask, clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 1.0) / 2)
    assert m["vf_clipfrac"].item() == pytest.approx(0.5)
    assert m["value_error"].item() == pytest.approx((0.04 + 1.0) / 2)
    loss.backward()
    # clipped branch active on token 0 -> no gradient; token 1: ½·2·(V − R)/N_tok = (0 − 1)/2
    torch.testing.assert_close(v.grad, torch.tensor([[0.0, -0.5, 0.0]], dtype=F64))
    unclipped, _ = value_loss(v, old, ret, mask, clip=None)
    assert unclipped.item() == pytest.approx(0.5 * (0.04 + 1.0) / 2)
    per_seq, _ = value_loss(v, old, ret, mask, clip=0.2, agg="seq-mean-token-sum")
    assert per_seq.item() == pytest.approx(0.5 * (0.25 + 1.0))
    with pytest.raises(ValueError, match="clip"):
        value_loss(v, old, ret, mask, clip=0.0)


def test_explained_variance() -> None:
    ret = torch.tensor([[1.0, 2.0, 3.0, 9.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0]], dtype=F64)
    assert explained_variance(ret, ret, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, 2.0), ret, mask).item() == pytest.approx(0.0)
    assert torch.isnan(explained_variance(ret, torch.ones_like(ret), mask))


def test_adaptive_kl_controller_hand_values() -> None:
    ctl = KLController(0.2, target=0.1, horizon=100)
    # KL 0.3 -> error clip(3 − 1, ±0.2) = 0.2; n = 10: β = 0.2·(1 + 0.2·10/100) = 0.204
    assert ctl.update(0.3, 10) == pytest.approx(0.204)
    # KL 0.09 -> error −0.1: β = 0.204·(1 − 0.1·0.1) = 0.20196
    assert ctl.update(0.09, 10) == pytest.approx(0.20196)
    fixed = KLController(0.05)
    assert fixed.update(10.0, 1000) == 0.05 and not fixed.adaptive
    back = KLController(0.0)
    back.load_state_dict(ctl.state_dict())
    assert back.value == ctl.value and back.target == 0.1 and back.horizon == 100
    kl = torch.tensor([[0.2, 0.4, 9.0], [0.6, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert sequence_kl(kl, mask).item() == pytest.approx((0.3 + 0.6) / 2)
    with pytest.raises(ValueError, match="target"):
        KLController(0.1, target=0.0)
