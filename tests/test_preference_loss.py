"""The DPO-family losses: hand-computed values (plain python math) for every loss type, and the per-example
``sigmoid`` / ``ipo`` (and ``hinge`` / ``robust``) losses against TRL's DPOTrainer on the same inputs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from llmrl.algos import PREFERENCE_LOSSES, preference_loss

# two pairs: (policy chosen, policy rejected, ref chosen, ref rejected) summed log-probs
PC, PR, RC, RR = [-3.0, -10.0], [-7.0, -4.0], [-5.0, -9.0], [-6.0, -6.5]
BETA = 0.5


def t(x: list[float]) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def deltas() -> list[tuple[float, float, float]]:
    """(chosen log-ratio, rejected log-ratio, Δ) per pair, by hand."""
    out = []
    for pc, pr, rc, rr in zip(PC, PR, RC, RR):
        out.append((pc - rc, pr - rr, (pc - rc) - (pr - rr)))
    return out  # pair 0: (2, -1, 3); pair 1: (-1, 2.5, -3.5)


def run(loss_type: str, pc=PC, pr=PR, rc=RC, rr=RR, beta=BETA, **opts):
    losses, metrics = preference_loss(t(pc), t(pr), None if rc is None else t(rc), None if rr is None else t(rr),
                                      loss_type=loss_type, beta=beta, **opts)
    return losses.tolist(), {k: float(v) for k, v in metrics.items()}


def test_registry_holds_the_dpo_family() -> None:
    assert set(PREFERENCE_LOSSES.names()) == {"sigmoid", "ipo", "hinge", "robust", "simpo", "dpop"}


def test_sigmoid_dpo_and_metrics() -> None:
    assert deltas() == [(2.0, -1.0, 3.0), (-1.0, 2.5, -3.5)]
    losses, m = run("sigmoid")
    assert losses == pytest.approx([-logsig(0.5 * 3.0), -logsig(0.5 * -3.5)], abs=1e-12)
    assert losses[0] == pytest.approx(math.log(1 + math.exp(-1.5)), abs=1e-12)  # 0.2014...
    # rewards β·logratio: chosen (1.0, -0.5), rejected (-0.5, 1.25)
    assert m["rewards/chosen"] == pytest.approx((1.0 - 0.5) / 2)
    assert m["rewards/rejected"] == pytest.approx((-0.5 + 1.25) / 2)
    assert m["rewards/margins"] == pytest.approx((1.5 + -1.75) / 2)
    assert m["rewards/accuracies"] == 0.5


def test_sigmoid_label_smoothing_cdpo() -> None:
    eps = 0.2
    losses, _ = run("sigmoid", label_smoothing=eps)
    want = [-(1 - eps) * logsig(BETA * d) - eps * logsig(-BETA * d) for _, _, d in deltas()]
    assert losses == pytest.approx(want, abs=1e-12)


def test_ipo() -> None:
    losses, m = run("ipo")
    # (Δ − 1/(2β))² with 1/(2·0.5) = 1: (3 − 1)² = 4 and (−3.5 − 1)² = 20.25
    assert losses == pytest.approx([4.0, 20.25], abs=1e-12)
    assert m["rewards/accuracies"] == 0.5


def test_hinge() -> None:
    losses, _ = run("hinge")
    # max(0, 1 − βΔ): 1 − 1.5 < 0 -> 0; 1 + 1.75 = 2.75
    assert losses == pytest.approx([0.0, 2.75], abs=1e-12)


def test_robust() -> None:
    eps = 0.1
    losses, _ = run("robust", label_smoothing=eps)
    want = [(-(1 - eps) * logsig(BETA * d) + eps * logsig(-BETA * d)) / (1 - 2 * eps) for _, _, d in deltas()]
    assert losses == pytest.approx(want, abs=1e-12)
    # unbiasedness (Chowdhury et al.): with labels flipped at rate ε, the expected robust loss equals the clean
    # DPO loss: (1−ε)·L(Δ) + ε·L(−Δ) == −log σ(βΔ)
    for d in (3.0, -3.5, 0.7):
        flipped, _ = preference_loss(t([0.0]), t([d]), t([0.0]), t([0.0]), loss_type="robust", beta=BETA,
                                     label_smoothing=eps)
        clean, _ = preference_loss(t([d]), t([0.0]), t([0.0]), t([0.0]), loss_type="robust", beta=BETA,
                                   label_smoothing=eps)
        expected = (1 - eps) * float(clean) + eps * float(flipped)
        assert expected == pytest.approx(-logsig(BETA * d), abs=1e-12)
    assert run("robust", label_smoothing=0.0)[0] == pytest.approx(run("sigmoid")[0], abs=1e-15)
    with pytest.raises(ValueError, match="label_smoothing"):
        run("robust", label_smoothing=0.5)


def test_simpo_is_reference_free_and_length_normalised() -> None:
    # callers pass length-AVERAGED log-probs: e.g. chosen −3 over 3 tokens = −1, rejected −7 over 2 = −3.5
    pc, pr, beta = [-1.0, -2.0], [-3.5, -0.5], 2.0
    losses, m = run("simpo", pc=pc, pr=pr, rc=None, rr=None, beta=beta)  # γ = 0.5·β = 1
    assert losses == pytest.approx([-logsig(2.0 * 2.5 - 1.0), -logsig(2.0 * -1.5 - 1.0)], abs=1e-12)
    losses_g, _ = run("simpo", pc=pc, pr=pr, rc=None, rr=None, beta=beta, gamma=0.3)
    assert losses_g == pytest.approx([-logsig(5.0 - 0.3), -logsig(-3.0 - 0.3)], abs=1e-12)
    losses_r, _ = run("simpo", pc=pc, pr=pr, rc=None, rr=None, beta=beta, gamma_beta_ratio=0.25)
    assert losses_r == pytest.approx([-logsig(5.0 - 0.5), -logsig(-3.0 - 0.5)], abs=1e-12)
    eps = 0.1
    losses_s, _ = run("simpo", pc=pc, pr=pr, rc=None, rr=None, beta=beta, label_smoothing=eps)
    assert losses_s[0] == pytest.approx(-(1 - eps) * logsig(4.0) - eps * logsig(-4.0), abs=1e-12)
    assert m["rewards/chosen"] == pytest.approx((2.0 * -1.0 + 2.0 * -2.0) / 2)  # β·average log-prob
    assert m["rewards/accuracies"] == 0.5
    assert run("simpo", pc=pc, pr=pr, beta=beta)[0] == pytest.approx(losses)  # reference values are ignored


def test_dpop() -> None:
    lam = 10.0
    losses, m = run("dpop", lam=lam)
    # pair 0: π_w = −3 above ref_w = −5: no penalty -> plain DPO −log σ(0.5·3)
    # pair 1: π_w = −10 below ref_w = −9 by 1: −log σ(0.5·(−3.5 − 10·1)) = −log σ(−6.75)
    assert losses == pytest.approx([-logsig(1.5), -logsig(-6.75)], abs=1e-12)
    assert m["dpop/penalty"] == pytest.approx(0.5)
    assert run("dpop")[0] == pytest.approx(losses)  # λ = 10 is the default
    assert run("dpop", lam=0.0)[0] == pytest.approx(run("sigmoid")[0], abs=1e-15)


def test_gradients_flow_only_to_the_policy() -> None:
    pc, pr = t(PC).requires_grad_(), t(PR).requires_grad_()
    rc, rr = t(RC).requires_grad_(), t(RR).requires_grad_()
    losses, metrics = preference_loss(pc, pr, rc, rr, beta=BETA)
    losses.sum().backward()
    # d/dπ_w of −log σ(βΔ) = −β·σ(−βΔ)
    assert pc.grad.tolist() == pytest.approx([-BETA / (1 + math.exp(1.5)), -BETA / (1 + math.exp(-1.75))])
    assert pr.grad.tolist() == pytest.approx([-g for g in pc.grad.tolist()])
    assert rc.grad is None and rr.grad is None
    assert all(not v.requires_grad for v in metrics.values())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown preference loss 'dpo'"):
        run("dpo")
    with pytest.raises(ValueError, match="unknown option 'lam' for ipo"):
        run("ipo", lam=1.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        run("sigmoid", beta=0.0)
    with pytest.raises(ValueError, match="needs reference log-probs"):
        run("sigmoid", rc=None, rr=None)
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        preference_loss(t([1.0, 2.0]), t([1.0]), t([1.0, 2.0]), t([1.0, 2.0]))


# -- TRL ---------------------------------------------------------------------------------------------------


def trl_losses(loss_type: str, pc, pr, rc, rr, n_chosen, n_rejected, beta, label_smoothing=0.0) -> list[float]:
    """Per-example losses from TRL's own ``DPOTrainer._compute_loss`` (TRL >= 1.0: the loss lives inside it),
    called unbound on a stand-in trainer whose model returns fixed per-token log-probs (precomputed
    reference log-probs, as with ``precompute_ref_log_probs=True``). One pair per call: TRL returns the mean."""
    from trl import DPOTrainer

    out = []
    for i in range(len(pc)):
        L = 1 + max(n_chosen[i], n_rejected[i])  # one prompt token, then the completions
        mask = torch.zeros(2, L, dtype=torch.long)
        mask[0, 1 : 1 + n_chosen[i]] = 1
        mask[1, 1 : 1 + n_rejected[i]] = 1
        shift = mask[:, 1:].double()
        per_tok = shift * torch.tensor([[pc[i]], [pr[i]]], dtype=torch.float64) / shift.sum(1, keepdim=True)

        class Model:
            training = False

            def __init__(self, per_tok: torch.Tensor) -> None:
                self.per_tok = per_tok

            def __call__(self, **kw):
                z = torch.zeros_like(self.per_tok)
                return SimpleNamespace(log_probs=self.per_tok, entropy=z, mean_logits=z, is_top1=z.bool())

        model = Model(per_tok)
        acc = SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x)
        fake = SimpleNamespace(model=model, accelerator=acc, aux_loss_enabled=False, ld_alpha=None,
                               precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss_type],
                               loss_weights=[1.0], beta=beta, label_smoothing=label_smoothing, use_weighting=False,
                               _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
        inputs = {"input_ids": torch.ones(2, L, dtype=torch.long), "attention_mask": torch.ones(2, L, dtype=torch.long),
                  "completion_mask": mask, "ref_chosen_logps": torch.tensor([rc[i]], dtype=torch.float64),
                  "ref_rejected_logps": torch.tensor([rr[i]], dtype=torch.float64)}
        out.append(float(DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False)))
    return out


# a spread of values, including large |Δ| (saturated sigmoids) and small ones
TRL_PC = [-3.0, -10.0, -41.7, -0.25, -120.0]
TRL_PR = [-7.0, -4.0, -40.1, -0.5, -80.0]
TRL_RC = [-5.0, -9.0, -42.0, -0.3, -100.0]
TRL_RR = [-6.0, -6.5, -39.9, -0.45, -95.0]
N_CHOSEN, N_REJECTED = [3, 5, 17, 1, 40], [2, 5, 9, 2, 33]


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_sigmoid_hinge_robust_match_trl(beta: float) -> None:
    pytest.importorskip("trl")
    args = (TRL_PC, TRL_PR, TRL_RC, TRL_RR)
    for loss_type, opts in (("sigmoid", {}), ("hinge", {}), ("robust", {"label_smoothing": 0.2})):
        ours, _ = preference_loss(*map(t, args), loss_type=loss_type, beta=beta, **opts)
        theirs = trl_losses(loss_type, *args, N_CHOSEN, N_REJECTED, beta, opts.get("label_smoothing", 0.0))
        assert ours.tolist() == pytest.approx(theirs, abs=1e-6), loss_type


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_matches_trl_with_length_averaged_logps(beta: float) -> None:
    """TRL's ipo divides each log-ratio by its completion length: that is our ipo on averaged log-probs
    (what the dpo trainer passes by default for ipo); on summed log-probs ours is the paper's eq. 17."""
    pytest.importorskip("trl")
    theirs = trl_losses("ipo", TRL_PC, TRL_PR, TRL_RC, TRL_RR, N_CHOSEN, N_REJECTED, beta)

    def avg(xs, ns):
        return t([x / n for x, n in zip(xs, ns)])

    ours, _ = preference_loss(avg(TRL_PC, N_CHOSEN), avg(TRL_PR, N_REJECTED), avg(TRL_RC, N_CHOSEN),
                              avg(TRL_RR, N_REJECTED), loss_type="ipo", beta=beta)
    assert ours.tolist() == pytest.approx(theirs, abs=1e-6)
    summed, _ = preference_loss(*map(t, (TRL_PC, TRL_PR, TRL_RC, TRL_RR)), loss_type="ipo", beta=beta)
    assert summed.tolist() != pytest.approx(theirs, abs=1e-6)  # the two conventions really differ here
