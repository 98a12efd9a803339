"""The scalar-head model shared by reward models and critics: shapes, last-token scoring, save/load."""

import torch

from llmrl.models import build_tiny_model, save_tiny_model
from llmrl.models.value_head import ScalarHeadModel, load_scalar_model, scalar_model_from_policy


def _policy():
    return build_tiny_model(seed=0)


def test_values_per_position_and_score_reads_last_real_token():
    policy, tok = _policy()
    vm = scalar_model_from_policy(policy, seed=1)
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    v = vm(ids, mask)
    assert v.shape == (2, 4) and v.dtype == torch.float32
    s = vm.score(ids, mask)
    assert torch.allclose(s, torch.stack([v[0, 3], v[1, 1]]))


def test_copy_is_independent_and_share_is_not():
    policy, _ = _policy()
    copied = scalar_model_from_policy(policy)
    shared = scalar_model_from_policy(policy, share=True)
    p0 = next(iter(policy.parameters()))
    assert next(iter(shared.backbone.parameters())) is p0
    assert next(iter(copied.backbone.parameters())) is not p0


def test_save_load_round_trip_and_fresh_head_on_causal_lm_checkpoint(tmp_path):
    policy, tok = _policy()
    vm = scalar_model_from_policy(policy, seed=3)
    with torch.no_grad():
        vm.head.bias.fill_(0.25)
    vm.save(tmp_path / "rm", tok)
    back = load_scalar_model(tmp_path / "rm")
    ids = torch.tensor([[5, 6, 7]])
    assert torch.allclose(back(ids), vm(ids), atol=1e-6)
    ckpt = save_tiny_model(tmp_path / "lm")
    fresh = load_scalar_model(ckpt)
    assert isinstance(fresh, ScalarHeadModel) and fresh(ids).shape == (1, 3)
