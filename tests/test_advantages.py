"""Advantage estimators: hand-computed values, a pure-Python reference loop, baselines, errors."""

import math
import random

import pytest
import torch

from llmrl.algos import ADVANTAGES, RunningMean, discounted_returns, sequence_returns, token_rewards
from llmrl.core.registry import check_options

F64 = torch.float64

# Seven sequences in three interleaved groups with non-contiguous ids:
#   group 7: items 0, 2, 4, 6 with scores 1, 0, 1, 1
#   group 3: items 1, 5       with scores 2, 4
#   group 0: item 3           with score 5 (a singleton)
GROUP_IDS = torch.tensor([7, 3, 7, 0, 7, 3, 7])
SCORES = torch.tensor([1.0, 2.0, 0.0, 5.0, 1.0, 4.0, 1.0], dtype=F64)
MASK = torch.tensor(
    [[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=F64
)  # ragged, with holes (rows 3 and 5)


def run(name: str, rewards: torch.Tensor, mask: torch.Tensor, group_ids=GROUP_IDS, baseline=None, **opts):
    return ADVANTAGES.get(name)(rewards, mask, group_ids=group_ids, baseline=baseline, **opts)


def per_seq(values: list[float]) -> torch.Tensor:
    """Broadcast hand-computed per-sequence advantages over MASK."""
    return torch.tensor(values, dtype=F64).unsqueeze(-1) * MASK


def test_registry_names() -> None:
    assert ADVANTAGES.names() == ["dr_grpo", "gae", "grpo", "grpo_turn", "reinforce", "reinforce_pp", "remax", "rloo",
                                  "rloo_turn"]


def test_token_rewards_hand_values() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=F64)
    kl = torch.tensor([[0.2, 0.4, 0.2], [0.2, 0.6, 5.0]], dtype=F64)  # 5.0 is padding
    r = token_rewards(torch.tensor([1.0, 0.0], dtype=F64), mask, kl, kl_coef=0.5)
    # row 0: −0.5·[0.2, 0.4, 0.2] + [0, 0, 1] = [−0.1, −0.2, 0.9]
    # row 1: −0.5·[0.2, 0.6] + [0, 0] = [−0.1, −0.3], padding 0
    torch.testing.assert_close(r, torch.tensor([[-0.1, -0.2, 0.9], [-0.1, -0.3, 0.0]], dtype=F64))
    # Holes: the score goes on the LAST valid token; empty rows get nothing.
    r2 = token_rewards(torch.tensor([3.0, 7.0]), torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(r2, torch.tensor([[0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    # The score sums back to R.
    torch.testing.assert_close(sequence_returns(token_rewards(SCORES, MASK), MASK), SCORES)


def test_grpo_hand_values() -> None:
    rewards = token_rewards(SCORES, MASK)
    # group 7: mean 0.75, deviations [.25, −.75, .25, .25], unbiased var = (3·.0625 + .5625)/3 = .25, std .5
    #          → [0.5, −1.5, 0.5, 0.5]
    # group 3: mean 3, deviations [−1, 1], unbiased var = 2/1 → std √2 → [−1/√2, 1/√2]
    # group 0: singleton → 0
    s = 1 / math.sqrt(2)
    expected = per_seq([0.5, -s, -1.5, 0.0, 0.5, s, 0.5])
    torch.testing.assert_close(run("grpo", rewards, MASK, eps=0.0), expected)
    torch.testing.assert_close(run("grpo", rewards, MASK), expected, rtol=1e-5, atol=1e-5)  # eps = 1e-6
    # scale_by_std=False: plain centring, same as dr_grpo
    centred = per_seq([0.25, -1.0, -0.75, 0.0, 0.25, 1.0, 0.25])
    torch.testing.assert_close(run("grpo", rewards, MASK, scale_by_std=False), centred)


def test_grpo_uses_unbiased_std_like_torch_std() -> None:
    r = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=F64)
    m = torch.ones(4, 1, dtype=F64)
    adv = run("grpo", r.unsqueeze(-1), m, group_ids=torch.zeros(4, dtype=torch.long), eps=0.0)
    torch.testing.assert_close(adv.squeeze(-1), (r - 0.75) / 0.5)  # torch.std(r) == 0.5 (biased: 0.433)
    assert r.std().item() == pytest.approx(0.5)


def test_grpo_constant_group_is_zero_not_nan() -> None:
    adv = run("grpo", torch.ones(3, 1), torch.ones(3, 1), group_ids=torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(adv, torch.zeros(3, 1))


def test_dr_grpo_hand_values() -> None:
    # group means 0.75, 3, 5 → R − mean
    expected = per_seq([0.25, -1.0, -0.75, 0.0, 0.25, 1.0, 0.25])
    torch.testing.assert_close(run("dr_grpo", token_rewards(SCORES, MASK), MASK), expected)


def test_rloo_hand_values() -> None:
    # group 7: 1 − (0+1+1)/3 = 1/3, 0 − (1+1+1)/3 = −1; group 3: 2 − 4 = −2, 4 − 2 = 2; singleton → 0
    expected = per_seq([1 / 3, -2.0, -1.0, 0.0, 1 / 3, 2.0, 1 / 3])
    torch.testing.assert_close(run("rloo", token_rewards(SCORES, MASK), MASK), expected)


def test_sequence_return_includes_token_kl() -> None:
    # R = score − β·Σ kl: row 0: 1 − 0.5·(0.2+0.4+0.2) = 0.6; row 1: 0 − 0.5·(0.2+0.6) = −0.4
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=F64)
    kl = torch.tensor([[0.2, 0.4, 0.2], [0.2, 0.6, 5.0]], dtype=F64)
    r = token_rewards(torch.tensor([1.0, 0.0], dtype=F64), mask, kl, kl_coef=0.5)
    adv = run("dr_grpo", r, mask, group_ids=torch.tensor([0, 0]))
    # mean = 0.1 → [0.5, −0.5]
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.5, 0.5], [-0.5, -0.5, 0.0]], dtype=F64))


def test_reinforce_pp_hand_values() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=F64)
    rewards = torch.tensor([[-0.1, -0.2, 0.9], [-0.1, -0.3, 0.0]], dtype=F64)  # from test_token_rewards
    # γ = 1 returns: row 0: [0.6, 0.7, 0.9]; row 1: [−0.4, −0.3]
    torch.testing.assert_close(
        discounted_returns(rewards, mask), torch.tensor([[0.6, 0.7, 0.9], [-0.4, -0.3, 0.0]], dtype=F64)
    )
    # whiten over the 5 valid tokens: mean = 1.5/5 = 0.3; deviations [.3, .4, .6, −.7, −.6];
    # Σ dev² = .09+.16+.36+.49+.36 = 1.46; unbiased var = 1.46/4 = 0.365
    expected = torch.tensor([[0.3, 0.4, 0.6], [-0.7, -0.6, 0.0]], dtype=F64) / math.sqrt(0.365)
    adv = run("reinforce_pp", rewards, mask, group_ids=torch.tensor([0, 0]))
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    assert adv[0].sum().item() != pytest.approx(0.0)  # no group baseline / no per-sequence centring


def test_discounted_returns_gamma_and_holes() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=F64)
    rewards = torch.tensor([[-0.1, -0.2, 0.9], [-0.1, -0.3, 0.0]], dtype=F64)
    # γ = 0.5: row 0: G2 = .9, G1 = −.2 + .45 = .25, G0 = −.1 + .125 = .025; row 1: G1 = −.3, G0 = −.1 − .15
    expected = torch.tensor([[0.025, 0.25, 0.9], [-0.25, -0.3, 0.0]], dtype=F64)
    torch.testing.assert_close(discounted_returns(rewards, mask, gamma=0.5), expected)
    # A hole (environment token) is skipped, not counted as a step: G0 = 1 + 0.5·2 = 2; masked output 0.
    hole = discounted_returns(torch.tensor([[1.0, 99.0, 2.0]]), torch.tensor([[1.0, 0.0, 1.0]]), gamma=0.5)
    torch.testing.assert_close(hole, torch.tensor([[2.0, 0.0, 2.0]]))


def test_remax_and_reinforce_hand_values() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=F64)
    rewards = token_rewards(torch.tensor([1.0, 0.0], dtype=F64), mask)
    gid = torch.tensor([0, 1])
    greedy = torch.tensor([0.5, 0.5], dtype=F64)  # reward of the greedy sample per prompt
    expected = torch.tensor([[0.5, 0.5, 0.0], [-0.5, -0.5, -0.5]], dtype=F64)
    torch.testing.assert_close(run("remax", rewards, mask, group_ids=gid, baseline=greedy), expected)
    torch.testing.assert_close(run("reinforce", rewards, mask, group_ids=gid, baseline=greedy), expected)
    # a 0-d baseline broadcasts: 1 − 0.25 = 0.75, 0 − 0.25 = −0.25
    b0 = torch.tensor(0.25, dtype=F64)
    out = run("reinforce", rewards, mask, group_ids=gid, baseline=b0)
    torch.testing.assert_close(out, torch.tensor([[0.75, 0.75, 0.0], [-0.25, -0.25, -0.25]], dtype=F64))
    for name in ("remax", "reinforce"):
        with pytest.raises(ValueError, match="baseline"):
            run(name, rewards, mask, group_ids=gid, baseline=None)


def test_running_mean_and_checkpoint() -> None:
    rm = RunningMean(momentum=0.9)
    # first batch: baseline = its own mean 2; state 2
    assert rm.update(torch.tensor([1.0, 3.0])).item() == pytest.approx(2.0)
    # second batch (mean 5): baseline = previous state 2; state = .9·2 + .1·5 = 2.3
    assert rm.update(torch.tensor([4.0, 6.0])).item() == pytest.approx(2.0)
    restored = RunningMean()
    restored.load_state_dict(rm.state_dict())
    assert restored.momentum == 0.9
    # third batch (mean 0): baseline 2.3; state .9·2.3 = 2.07
    assert restored.update(torch.zeros(2)).item() == pytest.approx(2.3)
    assert restored.mean.item() == pytest.approx(2.07)
    empty = RunningMean()
    empty.load_state_dict(RunningMean().state_dict())
    assert empty.mean is None
    with pytest.raises(ValueError):
        RunningMean(momentum=1.0)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp", "remax", "reinforce"])
def test_zero_under_mask_and_no_grad(name: str) -> None:
    rewards = torch.randn(7, 3, dtype=F64, requires_grad=True)
    adv = run(name, rewards, MASK, baseline=torch.zeros(7, dtype=F64))
    assert adv.shape == MASK.shape
    assert not adv.requires_grad
    assert torch.all(adv[MASK == 0] == 0)


def test_unknown_option_is_reported() -> None:
    with pytest.raises(ValueError, match="scale_by_std"):
        check_options(ADVANTAGES.get("grpo"), {"scale_by_sd": False}, "advantage")


# ------------------------------------------------------------------ slow pure-Python reference loop
def _random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sizes = [1, 2, 3, 4, 5, 8, 1, 6]
    ids = [g * 13 + 5 for g, n in enumerate(sizes) for _ in range(n)]  # non-contiguous ids
    random.Random(seed).shuffle(ids)
    B, T = len(ids), 9
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    mask = (torch.arange(T) < lengths.unsqueeze(-1)).to(F64)
    mask = mask * (torch.rand(B, T, generator=gen) > 0.2).to(F64)  # holes (some rows may go empty)
    rewards = torch.randn(B, T, generator=gen, dtype=F64) * mask
    return rewards, mask, torch.tensor(ids)


def _ref_group_advantages(rewards, mask, ids, kind: str, eps: float = 1e-6) -> torch.Tensor:
    """Loops over groups and items; no torch vectorisation."""
    r, m, ids = rewards.tolist(), mask.tolist(), ids.tolist()
    B, T = len(r), len(r[0])
    R = [sum(r[b][t] * m[b][t] for t in range(T)) for b in range(B)]
    groups: dict[int, list[int]] = {}
    for b, g in enumerate(ids):
        groups.setdefault(g, []).append(b)
    adv = [0.0] * B
    for members in groups.values():
        n = len(members)
        for i in members:
            if n == 1:
                adv[i] = 0.0
            elif kind == "grpo":
                mean = sum(R[j] for j in members) / n
                std = math.sqrt(sum((R[j] - mean) ** 2 for j in members) / (n - 1))
                adv[i] = (R[i] - mean) / (std + eps)
            elif kind == "rloo":
                adv[i] = R[i] - sum(R[j] for j in members if j != i) / (n - 1)
    return torch.tensor([[adv[b] * m[b][t] for t in range(T)] for b in range(B)], dtype=F64)


def _ref_reinforce_pp(rewards, mask, gamma: float, eps: float = 1e-8) -> torch.Tensor:
    r, m = rewards.tolist(), mask.tolist()
    B, T = len(r), len(r[0])
    G = [[0.0] * T for _ in range(B)]
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            if m[b][t]:
                running = r[b][t] + gamma * running
                G[b][t] = running
    vals = [G[b][t] for b in range(B) for t in range(T) if m[b][t]]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return torch.tensor([[(G[b][t] - mean) / (std + eps) * m[b][t] for t in range(T)] for b in range(B)])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_group_estimators_match_reference_loop(kind: str, seed: int) -> None:
    rewards, mask, ids = _random_batch(seed)
    expected = _ref_group_advantages(rewards, mask, ids, kind)
    torch.testing.assert_close(run(kind, rewards, mask, group_ids=ids), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp_matches_reference_loop(gamma: float) -> None:
    rewards, mask, ids = _random_batch(3)
    expected = _ref_reinforce_pp(rewards, mask, gamma).to(F64)
    out = run("reinforce_pp", rewards, mask, group_ids=ids, gamma=gamma)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
