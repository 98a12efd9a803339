"""Rollout correction: the sampler/trainer log-prob mismatch metrics, TIS / MIS weights (hand-computed), the
weighted loss, its config, and tiny-model runs whose sampler log-probs are perturbed (or exact in float64)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from llmrl.algos import POLICY_LOSSES, aggregate
from llmrl.algos.rollout_correction import correction_weights, mismatch_metrics
from llmrl.config import load_config
from llmrl.core.config import ConfigError
from llmrl.core.types import Batch, Episode
from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.rollout.sampler import KVCacheSampler
from llmrl.train.metrics import read_metrics
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.update import LossSpec, minibatch_loss, optimizer_step, policy_logprobs
from llmrl.trainers import run_trainer

F64 = torch.float64

# The 2×3 example. The sampler's log-probs are 0, the trainer's log(w), so Δ = log w and the importance weight is
# exactly w. Token (1, 2) is masked out (its w = 9 must not count anywhere).
#   w    = [[0.5, 1.0, 3.0],
#           [1.5, 0.25, 9.0 (mask 0)]]
W = [[0.5, 1.0, 3.0], [1.5, 0.25, 9.0]]
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def _example():
    old = torch.tensor([[math.log(w) for w in row] for row in W], dtype=F64)
    return old, torch.zeros_like(old), torch.tensor(MASK, dtype=F64)


def _close(got, want, tol=1e-12):
    assert torch.allclose(got, torch.tensor(want, dtype=F64), atol=tol, rtol=0), (got, want)


def test_tis_weights_hand_computed():
    # min(w, 2): 0.5, 1, min(3, 2) = 2 | 1.5, 0.25, (mask 0 → 0). One of 5 valid tokens is truncated (w = 3).
    # weight_mean = (0.5 + 1 + 2 + 1.5 + 0.25) / 5 = 5.25 / 5 = 1.05
    w, m = correction_weights(*_example(), "tis", cap=2.0)
    _close(w, [[0.5, 1.0, 2.0], [1.5, 0.25, 0.0]])
    assert float(m["rollout/truncated_frac"]) == pytest.approx(1 / 5)
    assert float(m["rollout/weight_mean"]) == pytest.approx(1.05)
    assert not w.requires_grad


def test_mis_token_weights_hand_computed():
    # Range [1/C, C] = [0.5, 2] (bounds included): 0.5 in, 1 in, 3 out | 1.5 in, 0.25 out → 2 of 5 masked.
    w, m = correction_weights(*_example(), "mis", cap=2.0)
    _close(w, [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # keep="one": kept tokens weigh 1
    assert float(m["rollout/masked_frac"]) == pytest.approx(2 / 5)
    assert float(m["rollout/weight_mean"]) == pytest.approx(3 / 5)
    w, _ = correction_weights(*_example(), "mis", cap=2.0, keep="ratio")  # kept tokens weigh w
    _close(w, [[0.5, 1.0, 0.0], [1.5, 0.0, 0.0]])
    # lower = 0: only w > C is masked → only the 3: 1 of 5
    w, m = correction_weights(*_example(), "mis", cap=2.0, lower=0.0)
    _close(w, [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert float(m["rollout/masked_frac"]) == pytest.approx(1 / 5)
    # cap 4, lower 0.3 → range [0.3, 4]: only 0.25 is out
    w, _ = correction_weights(*_example(), "mis", cap=4.0, lower=0.3)
    _close(w, [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


def test_mis_seq_weights_hand_computed():
    # Geometric-mean ratio over the valid tokens:
    #   row 0: (0.5 · 1 · 3)^(1/3) = 1.5^(1/3) = 1.14471...
    #   row 1: (1.5 · 0.25)^(1/2)  = 0.375^(1/2) = 0.61237...   (the masked 9 is not part of it)
    # cap 1.5 → range [2/3, 1.5]: row 0 kept, row 1 masked (0.612 < 0.667): 2 of 5 tokens, 1 of 2 sequences.
    s0 = 1.5 ** (1 / 3)
    w, m = correction_weights(*_example(), "mis_seq", cap=1.5)
    _close(w, [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    assert float(m["rollout/masked_frac"]) == pytest.approx(2 / 5)
    assert float(m["rollout/masked_seq_frac"]) == pytest.approx(1 / 2)
    w, _ = correction_weights(*_example(), "mis_seq", cap=1.5, keep="ratio")
    _close(w, [[s0, s0, s0], [0.0, 0.0, 0.0]])
    # cap 2 → range [0.5, 2]: both kept; with lower 0.7 row 1 is masked again
    w, _ = correction_weights(*_example(), "mis_seq", cap=2.0)
    _close(w, [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    w, _ = correction_weights(*_example(), "mis_seq", cap=2.0, lower=0.7)
    _close(w, [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])


def test_none_and_bad_arguments():
    assert correction_weights(*_example(), "none") == (None, {})
    for kw, msg in (({"mode": "foo"}, "unknown rollout correction mode"), ({"mode": "tis", "cap": 0.5}, "cap"),
                    ({"mode": "mis", "lower": 3.0}, "lower"), ({"mode": "mis", "keep": "x"}, "keep")):
        with pytest.raises(ValueError, match=msg):
            correction_weights(*_example(), **kw)


def test_mismatch_metrics_hand_computed():
    # Δ = trainer − sampler: [[-0.05, 0.2, 0], [-0.3, 0, (mask 0; the NaN must not leak)]]
    # mean |Δ| = (0.05 + 0.2 + 0 + 0.3 + 0) / 5 = 0.11; max 0.3; |Δ| > 0.1: 0.2 and 0.3 → 2/5
    # mean w = (e^-0.05 + e^0.2 + 1 + e^-0.3 + 1) / 5
    sampler = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, float("nan")]], dtype=F64)
    trainer = torch.tensor([[-1.05, -1.8, -0.5], [-3.3, -1.0, 5.0]], dtype=F64)
    m = mismatch_metrics(trainer, sampler, torch.tensor(MASK, dtype=F64), threshold=0.1)
    assert float(m["rollout/logp_diff_mean"]) == pytest.approx(0.11)
    assert float(m["rollout/logp_diff_max"]) == pytest.approx(0.3)
    assert float(m["rollout/logp_diff_frac"]) == pytest.approx(2 / 5)
    want = (math.exp(-0.05) + math.exp(0.2) + 1 + math.exp(-0.3) + 1) / 5
    assert float(m["rollout/is_weight_mean"]) == pytest.approx(want)
    empty = mismatch_metrics(trainer[:0], sampler[:0], torch.zeros(0, 3, dtype=F64))  # nothing valid: zeros
    assert all(float(v) == 0.0 for k, v in empty.items() if k != "rollout/is_weight_mean")


def _tiny_batch():
    """A float64 tiny model and a 2-row batch with 3 target positions, mask = MASK, A given."""
    model, _ = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                              intermediate_size=64), build_char_tokenizer(), seed=0)
    model = model.to(F64)
    eps = [Episode(tokens=[5, 6, 7, 8], loss_mask=[0, 1, 1, 1], logprobs=[0.0] * 4, sample={}),
           Episode(tokens=[9, 10, 11], loss_mask=[0, 1, 1], logprobs=[0.0] * 3, sample={})]
    batch = Batch.collate(eps, 0, dtype=F64)
    assert batch.mask.tolist() == MASK
    with torch.no_grad():
        batch.old_logprobs = policy_logprobs(model, batch)[0]  # ratio exactly 1: ppo_clip's loss is −A
    batch.advantages = torch.tensor([[1.0, 2.0, -1.0], [0.5, -2.0, 3.0]], dtype=F64) * batch.mask
    return model, batch


def test_weighted_loss_equals_hand_computation_2x3():
    # ratio 1 everywhere (unclipped): per-token loss = −A = [[-1, -2, 1], [-0.5, 2, (mask 0)]]
    # TIS weights (cap 2, from W) = [[0.5, 1, 2], [1.5, 0.25, 0]]
    # weighted = [[-0.5, -2, 2], [-0.75, 0.5, 0]]; token-mean over 5 tokens: (-0.5 - 2 + 2 - 0.75 + 0.5) / 5 = -0.15
    # seq-mean-token-mean: ((-0.5 - 2 + 2) / 3 + (-0.75 + 0.5) / 2) / 2 = (-1/6 - 1/8) / 2 = -7/48
    model, batch = _tiny_batch()
    batch.loss_weights, _ = correction_weights(*_example(), "tis", cap=2.0)
    spec = LossSpec("ppo_clip", {}, "token-mean", None, 1.0)
    loss, _ = minibatch_loss(model, batch, spec, num_seqs=2.0, num_tokens=5.0)
    assert loss.item() == pytest.approx(-0.15, abs=1e-12)
    loss, _ = minibatch_loss(model, batch, LossSpec("ppo_clip", {}, "seq-mean-token-mean", None, 1.0), 2.0, 5.0)
    assert loss.item() == pytest.approx(-7 / 48, abs=1e-12)
    # the gradient is the weighted policy gradient: that of −Σ w·ρ·A / 5 (the weights are constants)
    model.zero_grad()
    minibatch_loss(model, batch, spec, 2.0, 5.0)[0].backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    lp, _ = policy_logprobs(model, batch)
    ratio = torch.exp(lp - batch.old_logprobs)
    (-(batch.loss_weights * ratio * batch.advantages * batch.mask).sum() / 5).backward()
    assert all(torch.allclose(g, p.grad, atol=1e-12, rtol=0) for g, p in zip(got, model.parameters(), strict=True))


def test_mode_none_is_todays_loss_exactly():
    model, batch = _tiny_batch()
    batch.old_logprobs = batch.old_logprobs + torch.tensor([[0.3, -0.4, 0.1], [0.0, 0.5, 0.0]], dtype=F64)
    for loss_name, agg in (("ppo_clip", "token-mean"), ("gspo", "seq-mean-token-mean")):
        spec = LossSpec(loss_name, {}, agg, None, 1.0)
        got, _ = minibatch_loss(model, batch, spec, 2.0, 5.0)  # batch.loss_weights is None (mode none)
        lp, _ = policy_logprobs(model, batch)
        per_tok, _ = POLICY_LOSSES.get(loss_name)(lp, batch.old_logprobs, batch.advantages, batch.mask)
        assert got.item() == aggregate(per_tok, batch.mask, agg, num_seqs=2.0, num_tokens=5.0).item()


def test_probe_changes_nothing():
    """The mismatch probe of the no-recompute path only reads the log-probs: same loss and gradients, exactly."""
    runs = []
    for probe in (None, lambda mb, lp: None):
        model, batch = _tiny_batch()
        opt = build_optimizer(model.parameters(), 0.0)
        spec = LossSpec("ppo_clip", {}, "token-mean", None, 1.0, entropy_coef=0.01, probe=probe)
        ok, metrics = optimizer_step(model, opt, build_scheduler(opt, 0, 1, "constant"), batch, spec, 1, 0.0)
        runs.append((metrics, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


@pytest.mark.parametrize("opts,key,msg", [
    (["algo.rollout_correction.mode=tis"], "algo.rollout_correction.mode", "recompute_logprobs"),
    (["algo.rollout_correction.mode=is"], "algo.rollout_correction.mode", "must be one of"),
    (["algo.rollout_correction.cap=0.5"], "algo.rollout_correction.cap", ">= 1"),
    (["algo.rollout_correction.lower=3"], "algo.rollout_correction.lower", "<= cap"),
    (["algo.rollout_correction.lower=-1"], "algo.rollout_correction.lower", ">= 0"),
    (["algo.rollout_correction.threshold=0"], "algo.rollout_correction.threshold", "> 0"),
    (["algo.rollout_correction.keep=all"], "algo.rollout_correction.keep", "must be one of"),
    (["algo.rollout_correction.capp=2"], "algo.rollout_correction.capp", "did you mean 'cap'"),
])
def test_config_errors_are_one_line_and_name_the_key(opts, key, msg):
    with pytest.raises(ConfigError) as e:
        load_config(None, opts)
    text = str(e.value)
    assert "\n" not in text and key in text and msg in text, text


def test_config_defaults_and_valid_modes():
    rc = load_config(None, []).algo.rollout_correction
    assert (rc.mode, rc.cap, rc.lower, rc.keep, rc.threshold) == ("none", 2.0, None, "one", 0.1)
    for mode in ("tis", "mis", "mis_seq"):
        cfg = load_config(None, [f"algo.rollout_correction.mode={mode}", "algo.recompute_logprobs=true"])
        assert cfg.algo.rollout_correction.mode == mode


# --- tiny-model runs ---

def _perturb(monkeypatch, fn):
    """Wrap the kvcache sampler: fn(i, logprob) replaces the log-prob of the i-th token of every generation."""
    real = KVCacheSampler.generate

    def generate(self, prompts, params):
        out = real(self, prompts, params)
        for gens in out:
            for g in gens:
                g.logprobs = [fn(i, lp) for i, lp in enumerate(g.logprobs)]
        return out

    monkeypatch.setattr(KVCacheSampler, "generate", generate)


def _run(tiny_overrides, *opts):
    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=2", "optim.lr=1e-3", *opts])
    run_trainer(cfg)
    return read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")


def test_perturbed_sampler_logprobs_show_up_and_mis_masks_them(tiny_overrides, monkeypatch):
    # The sampler reports the first token of each completion 1.0 nat more likely than it was: Δ = −1 there
    # (w = e^-1 = 0.37 < 1/2: masked by MIS with cap 2), Δ ≈ 0 elsewhere. Every completion has ≥ 1 token, so
    # the perturbed share of the tokens is (number of completions) / (their tokens) = 1 / mean length.
    _perturb(monkeypatch, lambda i, lp: lp + 1.0 if i == 0 else lp)
    rows = _run(tiny_overrides, "algo.recompute_logprobs=true", "algo.rollout_correction.mode=mis")
    for r in rows:
        share = 1 / r["length"]
        assert r["rollout/logp_diff_max"] == pytest.approx(1.0, abs=1e-5)
        assert r["rollout/logp_diff_mean"] == pytest.approx(share, abs=1e-5)
        assert r["rollout/logp_diff_frac"] == pytest.approx(share, abs=1e-6)
        assert r["rollout/masked_frac"] == pytest.approx(share, abs=1e-6)
        assert r["rollout/weight_mean"] == pytest.approx(1 - share, abs=1e-6)
        assert r["rollout/is_weight_mean"] == pytest.approx(1 - share + share * math.exp(-1), abs=1e-5)


def test_perturbed_first_token_is_truncated_by_tis(tiny_overrides, monkeypatch):
    # Reported 1.0 nat less likely: w = e ≈ 2.72 > 2 on the first tokens → min(w, 2) = 2 there, 1 elsewhere.
    _perturb(monkeypatch, lambda i, lp: lp - 1.0 if i == 0 else lp)
    rows = _run(tiny_overrides, "algo.recompute_logprobs=true", "algo.rollout_correction.mode=tis")
    for r in rows:
        share = 1 / r["length"]
        assert r["rollout/truncated_frac"] == pytest.approx(share, abs=1e-6)
        assert r["rollout/weight_mean"] == pytest.approx(1 + share, abs=1e-5)


def test_noisy_sampler_without_recompute_is_measured_by_the_update_forward(tiny_overrides, monkeypatch):
    rng = random.Random(0)
    _perturb(monkeypatch, lambda i, lp: lp + rng.gauss(0.0, 0.3))
    rows = _run(tiny_overrides, "algo.minibatches=2", "algo.micro_batch_size=3")
    for r in rows:  # |N(0, 0.3)|: mean 0.24, and > 0.1 for ~74% of the tokens
        assert 0.1 < r["rollout/logp_diff_mean"] < 0.5 and r["rollout/logp_diff_max"] > 0.3
        assert 0.4 < r["rollout/logp_diff_frac"] < 1.0 and r["rollout/is_weight_mean"] > 0
        assert "rollout/masked_frac" not in r and "rollout/truncated_frac" not in r


def test_real_sampler_mismatch_float32_probe_equals_recompute(tiny_overrides, tmp_path):
    # Same seed: step 1 samples the same batch from the same model, so the first update's forward (no recompute,
    # one minibatch) and the recompute pass score the same tokens under the same weights.
    probe = _run([*tiny_overrides[:-1], f"output_dir={tmp_path / 'a'}"])
    recompute = _run([*tiny_overrides[:-1], f"output_dir={tmp_path / 'b'}"], "algo.recompute_logprobs=true")
    keys = ("rollout/logp_diff_mean", "rollout/logp_diff_max", "rollout/logp_diff_frac", "rollout/is_weight_mean")
    assert [probe[0][k] for k in keys] == pytest.approx([recompute[0][k] for k in keys], abs=1e-7)
    for r in probe + recompute:  # float32: kernels round differently, by a few ulps
        assert r["rollout/logp_diff_max"] < 1e-5 and r["rollout/logp_diff_frac"] == 0.0


def test_real_sampler_in_float64_matches_the_trainer(tiny_overrides, monkeypatch):
    import llmrl.train.run as run_mod

    build = run_mod.build_policy

    def float64_policy(*args, **kwargs):
        model, tok = build(*args, **kwargs)
        return model.to(F64), tok

    monkeypatch.setattr(run_mod, "build_policy", float64_policy)
    rows = _run(tiny_overrides, "algo.recompute_logprobs=true", "rollout.temperature=0.7")
    for r in rows:
        assert r["rollout/logp_diff_max"] <= 1e-6 and r["rollout/logp_diff_mean"] <= 1e-6, r
        assert r["rollout/logp_diff_frac"] == 0.0 and r["rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-6)


def test_mis_masking_every_token_zeroes_the_policy_loss(tiny_overrides, tmp_path, monkeypatch):
    # Every token reported 1 nat more likely: w = e^-1 < 1/2 everywhere, so MIS gives every token weight 0 and
    # the policy loss (no KL, no entropy term) is exactly 0; the same run without correction has a loss.
    _perturb(monkeypatch, lambda i, lp: lp + 1.0)
    base = [*tiny_overrides[:-1], "algo.recompute_logprobs=true", "algo.entropy_coef=0", "rollout.samples_per_prompt=8"]
    masked = _run([*base, f"output_dir={tmp_path / 'mis'}"], "algo.rollout_correction.mode=mis")
    plain = _run([*base, f"output_dir={tmp_path / 'none'}"])
    assert all(r["rollout/masked_frac"] == 1.0 and r["loss"] == 0.0 and r["grad_norm"] == 0.0 for r in masked)
    assert any(r["loss"] != 0.0 for r in plain), plain


def test_mis_seq_with_ratio_weights_in_a_run(tiny_overrides, monkeypatch):
    # Every token reported 1 nat more likely: each sequence's geometric-mean ratio is e^-1; with lower = 0 only
    # s > C is masked, so nothing is, and keep=ratio weighs every token by s = e^-1.
    _perturb(monkeypatch, lambda i, lp: lp + 1.0)
    rows = _run(tiny_overrides, "algo.recompute_logprobs=true", "algo.rollout_correction.mode=mis_seq",
                "algo.rollout_correction.lower=0", "algo.rollout_correction.keep=ratio")
    for r in rows:
        assert r["rollout/masked_seq_frac"] == 0.0 and r["rollout/masked_frac"] == 0.0
        assert r["rollout/weight_mean"] == pytest.approx(math.exp(-1), abs=1e-5)
        assert r["rollout/logp_diff_frac"] == 1.0
