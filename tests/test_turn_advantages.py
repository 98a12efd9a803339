"""Turn-level advantage estimators (grpo_turn, rloo_turn): hand-computed values, and their single-turn limits."""

from __future__ import annotations

import math

import pytest
import torch

from llmrl.algos.advantages import ADVANTAGES, grpo, needs_turns, rloo, turn_index, turn_returns

# Three rows of one group, T = 6 target positions. Row 0: prompt token 0, turn 0 = tokens 1-2 (positions 0-1),
# one environment token (position 2), turn 1 = tokens 4-5 (positions 3-4), padding. Row 1: the same layout.
# Row 2: a single turn, tokens 1-3 (positions 0-2).
SPANS = [[(1, 3), (4, 6)], [(1, 3), (4, 6)], [(1, 4)]]
MASK = torch.tensor([[1, 1, 0, 1, 1, 0], [1, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.float32)
REWARDS = torch.zeros(3, 6)
REWARDS[0, 1], REWARDS[0, 4] = 0.5, 1.0  # row 0: turn rewards 0.5 then 1.0
REWARDS[2, 2] = 1.0  # row 2: one turn, reward 1; row 1: nothing
GIDS = torch.zeros(3, dtype=torch.long)


def test_turn_index():
    ids = turn_index(SPANS, MASK)
    assert ids.tolist() == [[0, 0, -1, 1, 1, -1], [0, 0, -1, 1, 1, -1], [0, 0, 0, -1, -1, -1]]


def test_turn_returns_are_discounted_across_turns():
    G, present = turn_returns(REWARDS, MASK, turn_index(SPANS, MASK), gamma=0.5)
    # row 0: G1 = 1.0, G0 = 0.5 + 0.5·1.0 = 1.0; row 1: 0, 0; row 2: G0 = 1.0 (no turn 1)
    assert G.tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    assert present.tolist() == [[True, True], [True, True], [True, False]]
    G1, _ = turn_returns(REWARDS, MASK, turn_index(SPANS, MASK), gamma=1.0)
    assert G1[0].tolist() == [1.5, 1.0]


def test_grpo_turn_hand_computed():
    adv = ADVANTAGES.get("grpo_turn")(REWARDS, MASK, group_ids=GIDS, baseline=None,
                                      turn_ids=turn_index(SPANS, MASK), gamma=0.5)
    # turn 0: G = [1, 0, 1], mean 2/3, unbiased std sqrt(1/3) -> [1/3, -2/3, 1/3] / 0.57735
    s0 = math.sqrt(1 / 3)
    a00, a10, a20 = (1 / 3) / s0, (-2 / 3) / s0, (1 / 3) / s0
    # turn 1 (rows 0, 1): G = [1, 0], mean 0.5, unbiased std sqrt(0.5)
    a01, a11 = 0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5)
    want = torch.tensor([[a00, a00, 0, a01, a01, 0], [a10, a10, 0, a11, a11, 0], [a20, a20, a20, 0, 0, 0]])
    assert torch.allclose(adv, want, atol=1e-5)


def test_rloo_turn_hand_computed():
    adv = ADVANTAGES.get("rloo_turn")(REWARDS, MASK, group_ids=GIDS, baseline=None,
                                      turn_ids=turn_index(SPANS, MASK), gamma=0.5)
    # turn 0: 1 − (0+1)/2 = 0.5, 0 − (1+1)/2 = −1, 1 − (1+0)/2 = 0.5; turn 1: 1 − 0 = 1, 0 − 1 = −1
    want = torch.tensor([[0.5, 0.5, 0, 1, 1, 0], [-1, -1, 0, -1, -1, 0], [0.5, 0.5, 0.5, 0, 0, 0]])
    assert torch.allclose(adv, want)


def test_groups_and_singletons():
    gids = torch.tensor([7, 7, 3])  # row 2 alone in its group: 0 everywhere
    adv = ADVANTAGES.get("rloo_turn")(REWARDS, MASK, group_ids=gids, baseline=None, turn_ids=turn_index(SPANS, MASK))
    assert (adv[2] == 0).all()
    # γ = 1: turn 0 returns [1.5, 0] -> ±1.5; turn 1 [1, 0] -> ±1
    assert adv[0].tolist() == [1.5, 1.5, 0, 1, 1, 0] and adv[1].tolist() == [-1.5, -1.5, 0, -1, -1, 0]


def test_single_turn_rows_reduce_to_grpo_and_rloo():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(8, 7, generator=g) > 0.2).float()
    rewards = torch.randn(8, 7, generator=g) * mask
    gids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2])
    ids = torch.where(mask > 0, 0, -1)  # one turn per row (holes in the mask inside it)
    assert torch.allclose(ADVANTAGES.get("grpo_turn")(rewards, mask, group_ids=gids, baseline=None, turn_ids=ids),
                          grpo(rewards, mask, group_ids=gids, baseline=None), atol=1e-6)
    assert torch.allclose(ADVANTAGES.get("rloo_turn")(rewards, mask, group_ids=gids, baseline=None, turn_ids=ids),
                          rloo(rewards, mask, group_ids=gids, baseline=None), atol=1e-6)


def test_declarations_and_errors():
    assert needs_turns(ADVANTAGES.get("grpo_turn")) and needs_turns(ADVANTAGES.get("rloo_turn"))
    assert not needs_turns(ADVANTAGES.get("grpo"))
    with pytest.raises(ValueError, match="gamma"):
        turn_returns(REWARDS, MASK, turn_index(SPANS, MASK), gamma=1.5)
    with pytest.raises(ValueError, match="span rows"):
        turn_index(SPANS[:2], MASK)
