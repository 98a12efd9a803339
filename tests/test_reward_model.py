"""Reward models: BT / Reg losses by hand, a tiny RM learning arithmetic preferences, save/load as a reward,
distilled rewards (majority-vote pseudo-labels), label privacy in the trainer, resume, bad input."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from llmrl.cli.main import main
from llmrl.config import load_config
from llmrl.models import build_tiny_model
from llmrl.models.value_head import load_scalar_model, scalar_model_from_policy
from llmrl.preference.distill import distill_pairs, majority_answer, pairs_from_labels, vote_labels
from llmrl.preference.train_rm import privatise_labels, rm_pair_losses, score_pair_batch, train
from llmrl.rewards.reward_model import encode_scored, reward_model_reward, user_conditioned_prompt
from llmrl.rewards.shaping import reg_rm_loss
from llmrl.tasks import get_task
from llmrl.tasks.preference import PreferencePair, task_pairs, write_preference_pairs
from llmrl.train.pairs import encode_pairs
from tests.conftest import TINY

RM = [*TINY, "trainer=reward_model", "log_every=0", "rm.max_length=32", "rm.max_prompt_length=16", "rm.lr=3e-3"]


def _sp(x: float) -> float:
    """softplus(x) = −log σ(−x), plain python."""
    return math.log1p(math.exp(x))


def test_bt_and_reg_losses_by_hand():
    rc, rr = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.0, 0.5, 2.0])
    bt = [_sp(-1.0), _sp(1.0), math.log(2.0)]  # −log σ(r_c − r_r)
    assert rm_pair_losses(rc, rr).tolist() == pytest.approx(bt, abs=1e-6)
    reg = [bt[0] + 0.005 * (1.0 + 0.0), bt[1] + 0.005 * (0.25 + 0.25), bt[2] + 0.005 * (4.0 + 4.0)]
    got = rm_pair_losses(rc, rr, reg_coef=0.005)
    assert got.tolist() == pytest.approx(reg, abs=1e-6)
    assert got.mean().item() == pytest.approx(reg_rm_loss(rc, rr, 0.005).item(), abs=1e-6)
    # randomized-response labels: ((1−ρ)·ℓ(m) − ρ·ℓ(−m)) / (1 − 2ρ) with ℓ(m) = softplus(−m)
    rho = 0.2
    deb = [((1 - rho) * _sp(-m) - rho * _sp(m)) / (1 - 2 * rho) for m in (1.0, -1.0, 0.0)]
    assert rm_pair_losses(rc, rr, flip_prob=rho).tolist() == pytest.approx(deb, abs=1e-6)


def test_tiny_rm_learns_arithmetic_preferences(tmp_path):
    """Seed 0, arithmetic (2 digits, + - *), chosen = right answer, rejected = the sloppy teacher's:
    held-out pairwise accuracy 0.543 → 0.757 (70 held-out pairs, 68 steps)."""
    cfg = load_config(overrides=[*RM, "seed=0", "task.train_size=400", "task.test_size=100", "rm.epochs=4",
                                 f"output_dir={tmp_path / 'rm'}"])
    s = train(cfg)
    assert s["pairs_test"] >= 60 and s["steps"] == 68
    assert s["accuracy_after"] >= 0.68, s
    assert s["accuracy_after"] - s["accuracy_before"] >= 0.15, s
    assert s["loss_after"] < s["loss_before"]
    saved = json.loads((tmp_path / "rm" / "summary.json").read_text())
    assert saved["accuracy_after"] == s["accuracy_after"]
    metrics = [json.loads(x) for x in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert sum(m["kind"] == "train" for m in metrics) == 68


def test_task_pairs_are_right_vs_sloppy():
    task = get_task("arithmetic")
    samples = task.samples(50, "train", 0)
    pairs = task_pairs(task, samples, seed=0)
    assert 0 < len(pairs) <= 50
    by_prompt = {s["prompt"]: s for s in samples}
    for p in pairs:
        s = by_prompt[p.prompt]
        assert task.is_correct(p.chosen, s) and not task.is_correct(p.rejected, s)


def test_save_load_gives_identical_scores_and_reward_fn_matches_training_encoding(tmp_path):
    policy, tok = build_tiny_model(seed=0)
    rm = scalar_model_from_policy(policy, seed=1)
    with torch.no_grad():
        rm.head.bias.fill_(0.3)
    pairs = [PreferencePair(prompt="12+7=", chosen="19", rejected="18"),
             PreferencePair(prompt="3*4=", chosen="12", rejected="13 is a long wrong answer that gets cut")]
    batch = encode_pairs(tok, pairs, max_length=16, max_prompt_length=8)
    rm.eval()
    with torch.no_grad():
        rc, rr = score_pair_batch(rm, batch)
    rm.save(tmp_path / "rm", tok)
    (tmp_path / "rm" / "reward_model.json").write_text(json.dumps({"max_length": 16, "max_prompt_length": 8}))
    back = load_scalar_model(tmp_path / "rm")
    back.eval()
    with torch.no_grad():
        rc2, rr2 = score_pair_batch(back, batch)
    assert torch.equal(rc, rc2) and torch.equal(rr, rr2)
    reward = reward_model_reward(tmp_path / "rm")
    got = [reward(p.chosen, {"prompt": p.prompt}) for p in pairs] + [reward(p.rejected, {"prompt": p.prompt})
                                                                       for p in pairs]
    assert got == pytest.approx(rc.tolist() + rr.tolist(), abs=1e-5)
    assert reward.score_batch(["19", "18"], [{"prompt": "12+7="}] * 2) == pytest.approx([got[0], got[2]], abs=1e-5)
    # the truncation rule is encode_pairs' rule
    ids = encode_scored(tok, "3*4=", pairs[1].rejected, max_length=16, max_prompt_length=8)
    assert ids == batch.input_ids[3][batch.attention_mask[3] > 0].tolist()
    # in-memory model: tokenizer required
    with pytest.raises(ValueError, match="tokenizer"):
        reward_model_reward(rm)


def test_user_conditioned_prompt():
    assert user_conditioned_prompt("hi", "u7") == "[user: u7]\nhi"
    assert user_conditioned_prompt("hi", None) == "hi"
    msgs = [{"role": "user", "content": "hi"}]
    assert user_conditioned_prompt(msgs, "u7") == [{"role": "system", "content": "[user: u7]"}, *msgs]
    sys_msgs = [{"role": "system", "content": "be nice"}, *msgs]
    assert user_conditioned_prompt(sys_msgs, "u7")[0] == {"role": "system", "content": "[user: u7]\nbe nice"}
    assert sys_msgs[0]["content"] == "be nice"  # input not modified


def test_majority_vote_pseudo_labels_by_hand():
    # counts: 12 → 2, 13 → 2, None ignored: tie → the first seen (12)
    assert majority_answer(["12", None, "13", "12", "13"]) == "12"
    assert majority_answer([None, None]) is None
    major, labels = vote_labels(["4", "4", "5", "5", "5", None])
    assert major == "5" and labels == [False, False, True, True, True, False]
    major, labels = vote_labels(["4", "4", "5", "5", "5", None], voters=[True, True, True, False, False, False])
    assert major == "4" and labels == [True, True, False, False, False, False]
    pairs = pairs_from_labels("p", ["a", "a", "b", "c", " "], [True, True, False, False, False], 10, random.Random(0))
    assert sorted((p.chosen, p.rejected) for p in pairs) == [("a", "b"), ("a", "c")]
    assert len(pairs_from_labels("p", ["a", "b", "c"], [True, False, False], 1, random.Random(0))) == 1


def test_distill_pairs_on_a_fixed_set():
    task = get_task("arithmetic")
    samples = [{"prompt": "2+3=", "answer": "5"}, {"prompt": "9+9=", "answer": "18"}]
    teacher = [["5", "5", "6"], ["17", "17", "18"]]
    student = [["6", "7", "x"], ["18", "18", "18", "7"]]
    # all responses vote: prompt 1: 5 ×2, 6 ×2 (tie → 5, seen first), 7, x unparsed → good = {5};
    # prompt 2: 18 ×4 beats 17 ×2 → good = {18}
    pairs, st = distill_pairs(task, samples, teacher, student, vote_over="all", max_pairs_per_prompt=10)
    got = sorted((p.prompt, p.chosen, p.rejected) for p in pairs)
    assert got == [("2+3=", "5", "6"), ("2+3=", "5", "7"), ("2+3=", "5", "x"), ("9+9=", "18", "17"),
                   ("9+9=", "18", "7")]
    assert st.responses == 13 and st.pairs == 5 and st.pseudo_label_accuracy == 1.0
    assert st.good_fraction == pytest.approx(6 / 13)
    # teacher-only vote: prompt 2's majority is the wrong 17; of its 7 labels only '7' = bad is right
    pairs, st = distill_pairs(task, samples, teacher, student, vote_over="teacher")
    assert sorted((p.chosen, p.rejected) for p in pairs if p.prompt == "9+9=") == [("17", "18"), ("17", "7")]
    assert st.pseudo_label_accuracy == pytest.approx(7 / 13)
    # judge labels: score >= threshold is good
    pairs, st = distill_pairs(task, samples[:1], teacher[:1], student[:1], label="judge", threshold=0.5,
                              judge=lambda items: [0.9 if r == "5" else 0.1 for _, r in items])
    assert sorted(p.rejected for p in pairs) == ["6", "7", "x"]
    with pytest.raises(ValueError, match="parse"):
        distill_pairs(get_task("countdown"), [], [], [])


def test_distilled_rm_pipeline_smoke(tmp_path):
    cfg = load_config(overrides=[*RM, "rm.source=distill", "rm.distill.prompts=8", "rm.distill.teacher_samples=3",
                                 "rm.distill.student_samples=5", "sft.steps=60", "sft.lr=3e-3", "sft.warmup_steps=5",
                                 "task.train_size=200", "task.test_size=8", f"output_dir={tmp_path / 'd'}"])
    s = train(cfg)
    for split in ("train", "test"):
        st = s["distill"][split]
        assert st["prompts"] == 8 and st["responses"] == 64 and st["pairs"] > 0
        assert 0.0 <= st["pseudo_label_accuracy"] <= 1.0
    assert s["pairs_train"] == s["distill"]["train"]["pairs"] and s["steps"] >= 1
    assert (tmp_path / "d" / "reward_model" / "scalar_head.safetensors").is_file()


def test_randomized_response_swaps_the_flipped_pairs():
    pairs = [PreferencePair(prompt=f"p{i}", chosen="good", rejected="bad", user_id=f"u{i % 4}") for i in range(400)]
    users = [i % 4 for i in range(400)]
    out, rho, info = privatise_labels(pairs, users, epsilon=200.0, seed=0)
    # 100 pairs per user → ε per label = 2 → ρ = 1/(1+e²)
    assert info["max_pairs_per_user"] == 100 and info["epsilon_label"] == pytest.approx(2.0)
    assert rho == pytest.approx(1 / (1 + math.exp(2.0)))
    flipped = [p.chosen == "bad" for p in out]
    assert info["flipped_fraction"] == pytest.approx(sum(flipped) / 400)
    assert all((p.chosen, p.rejected) == ("bad", "good") for p in out if p.chosen == "bad")
    assert abs(sum(flipped) / 400 - rho) < 3 * math.sqrt(rho * (1 - rho) / 400)


def test_trainer_with_privacy_reports_budget(tmp_path, capsys):
    base = [*RM, "task.train_size=40", "task.test_size=16", "rm.max_steps=3"]
    s = train(load_config(overrides=[*base, "rm.privacy.mechanism=user_dp", "rm.privacy.epsilon=4",
                                     "rm.privacy.users_per_step=4", f"output_dir={tmp_path / 'dp'}"]))
    p = s["privacy"]
    assert p["mechanism"] == "user_dp" and p["steps"] == 3 and p["accountant"] == "rdp"
    assert p["epsilon"] == pytest.approx(4.0, rel=1e-3)  # calibrated for the 3 steps actually run
    assert p["sample_rate"] == pytest.approx(4 / s["pairs_train"])
    assert "privacy: user-level" in capsys.readouterr().err
    s = train(load_config(overrides=[*base, "rm.privacy.mechanism=randomized_response", "rm.privacy.epsilon=1",
                                     f"output_dir={tmp_path / 'rr'}"]))
    assert s["privacy"]["flip_prob"] == pytest.approx(1 / (1 + math.e))


def test_resume_equals_uninterrupted(tmp_path):
    base = [*RM, "task.train_size=48", "task.test_size=16", "rm.batch_size=8", "optim.schedule=constant"]
    full = train(load_config(overrides=[*base, "rm.max_steps=4", f"output_dir={tmp_path / 'a'}"]))
    train(load_config(overrides=[*base, "rm.max_steps=2", f"output_dir={tmp_path / 'b'}"]))
    resumed = train(load_config(overrides=[*base, "rm.max_steps=4", f"output_dir={tmp_path / 'b'}"]), resume=True)
    assert resumed["after"]["loss"] == pytest.approx(full["after"]["loss"], abs=1e-6)
    assert resumed["after"]["margin"] == pytest.approx(full["after"]["margin"], abs=1e-6)


def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer: reward_model\n")
    rc = main(["train", str(recipe), *TINY, "rm.source=file", f"rm.train_file={bad}", f"output_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "rejected" in err and "bad.jsonl" in err
    rc = main(["train", str(recipe), *TINY, "task.name=countdown", f"output_dir={tmp_path / 'o'}"])
    assert rc == 2 and "wrong_demonstration" in capsys.readouterr().err
    rc = main(["train", str(recipe), *TINY, "rm.privacy.mechanism=laplace", f"output_dir={tmp_path / 'o'}"])
    assert rc == 2 and "rm.privacy.mechanism" in capsys.readouterr().err
    rc = main(["train", str(recipe), *TINY, f"rm.train_file={bad}", f"output_dir={tmp_path / 'o'}"])
    assert rc == 2 and "rm.source=file" in capsys.readouterr().err
    write_preference_pairs(tmp_path / "one.jsonl", [PreferencePair(prompt="p", chosen="a", rejected="b")])
    rc = main(["train", str(recipe), *TINY, "rm.source=file", f"rm.train_file={tmp_path / 'one.jsonl'}",
               f"output_dir={tmp_path / 'o'}"])
    assert rc == 2 and "no held-out pairs" in capsys.readouterr().err
