"""Personalised preference evaluation (arXiv:2502.19158): agreement, minority users, per-user accuracy, and the
user-conditioned reward model beating the vanilla one on minority users."""

from __future__ import annotations

import json

import pytest

from llmrl.cli.main import main
from llmrl.config import load_config
from llmrl.preference.personal import (
    condition_on_user,
    majority_labels,
    minority_users,
    pair_accuracy,
    personal_metrics,
    user_agreement,
)
from llmrl.preference.train_rm import train
from llmrl.tasks.preference import PreferencePair, write_preference_pairs
from tests.conftest import TINY


def P(prompt: str, chosen: str, rejected: str, user: str | None) -> PreferencePair:
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, user_id=user)


def test_agreement_and_minority_by_hand():
    pairs = [
        # item q1 (x vs y): u1, u2 pick x, u3 picks y → majority x
        P("q1", "x", "y", "u1"), P("q1", "x", "y", "u2"), P("q1", "y", "x", "u3"),
        # item q2: u1 picks a, u3 picks b → tie, no majority
        P("q2", "a", "b", "u1"), P("q2", "b", "a", "u3"),
        # item q3: u2, u3 pick m, u1 picks n → majority m
        P("q3", "m", "n", "u2"), P("q3", "m", "n", "u3"), P("q3", "n", "m", "u1"),
        # u4 labels only a tied item
        P("q4", "s", "t", "u4"), P("q4", "t", "s", "u5"),
    ]
    assert majority_labels(pairs) == {("q1", ("x", "y")): "x", ("q3", ("m", "n")): "m"}
    agree = user_agreement(pairs)
    # u1: q1 agree, q3 disagree → 1/2; u2: 2/2; u3: q1 no, q3 yes → 1/2; u4, u5: undefined
    assert agree == {"u1": 0.5, "u2": 1.0, "u3": 0.5, "u4": None, "u5": None}
    assert minority_users(agree) == set()
    assert minority_users({"a": 0.49, "b": 0.5, "c": None}) == {"a"}
    assert pair_accuracy([1.0, 0.0, 2.0], [0.5, 0.0, 3.0]) == [1.0, 0.5, 0.0]


def test_personal_metrics_by_hand():
    pairs = [P("q", "x", "y", "a"), P("q", "x", "y", "b"), P("q", "y", "x", "c"), P("r", "x", "y", "c")]
    correct = [1.0, 0.0, 1.0, 0.5]
    m = personal_metrics(pairs, correct)
    # majority on q is x (2 of 3); r has one label (its own majority): a 1/1, b 1/1, c: q no, r yes → 1/2
    assert m["agreement"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert m["minority_users"] == [] and m["minority_accuracy"] is None
    assert m["per_user_accuracy"] == {"a": 1.0, "b": 0.0, "c": 0.75}
    assert m["mean_user_accuracy"] == pytest.approx((1.0 + 0.0 + 0.75) / 3)
    assert m["worst_user_accuracy"] == 0.0 and m["majority_accuracy"] == pytest.approx(2.5 / 4)
    m = personal_metrics(pairs, correct, agreement={"a": 1.0, "b": 1.0, "c": 0.0})
    assert m["minority_users"] == ["c"] and m["minority_accuracy"] == pytest.approx(0.75)
    assert m["majority_accuracy"] == pytest.approx(0.5) and m["minority_user_mean_accuracy"] == 0.75
    assert condition_on_user(pairs[:1])[0].prompt == "[user: a]\nq"
    with pytest.raises(ValueError, match="accuracy values"):
        personal_metrics(pairs, correct[:2])


def _two_groups(items: range) -> list[PreferencePair]:
    """Six users (a0..a5) prefer the '+' response, three (b0..b2) the '-' one, on every item."""
    out = []
    for k in items:
        for group, n in (("a", 6), ("b", 3)):
            for i in range(n):
                plus, minus = f"+{k}", f"-{k}"
                chosen, rejected = (plus, minus) if group == "a" else (minus, plus)
                out.append(P(f"q{k}?", chosen, rejected, f"{group}{i}"))
    return out


def test_user_conditioned_rm_serves_the_minority_the_vanilla_one_fails(tmp_path):
    """Seed 0, 40 training items × 9 users, 20 held-out items: vanilla RM minority accuracy 0.0 (majority
    1.0); user-conditioned RM minority accuracy 1.0 (majority 1.0)."""
    write_preference_pairs(tmp_path / "train.jsonl", _two_groups(range(40)))
    write_preference_pairs(tmp_path / "test.jsonl", _two_groups(range(100, 120)))
    base = [*TINY, "trainer=reward_model", "log_every=0", "seed=0", "rm.source=file",
            f"rm.train_file={tmp_path / 'train.jsonl'}", f"rm.test_file={tmp_path / 'test.jsonl'}",
            "rm.max_length=32", "rm.max_prompt_length=24", "rm.lr=3e-3", "rm.epochs=4"]
    out = {}
    for cond in (False, True):
        s = train(load_config(overrides=[*base, f"rm.user_conditioned={cond}", f"output_dir={tmp_path / str(cond)}"]))
        out[cond] = s["personal"]
        assert s["personal"]["minority_users"] == ["b0", "b1", "b2"]
        assert s["after"]["minority_accuracy"] == s["personal"]["minority_accuracy"]
    vanilla, conditioned = out[False], out[True]
    assert vanilla["minority_accuracy"] <= 0.1 and vanilla["majority_accuracy"] >= 0.9
    assert conditioned["minority_accuracy"] >= 0.9 and conditioned["majority_accuracy"] >= 0.9
    assert conditioned["worst_user_accuracy"] > vanilla["worst_user_accuracy"] + 0.5
    # the same numbers from the saved model through `llmrl rm-eval` (the user id comes from reward_model.json)
    rc = main(["rm-eval", "--model", str(tmp_path / "True" / "reward_model"), "--pairs", str(tmp_path / "test.jsonl"),
               "--agreement-pairs", str(tmp_path / "train.jsonl"), "--output", str(tmp_path / "eval.json")])
    assert rc == 0
    cli = json.loads((tmp_path / "eval.json").read_text())
    assert cli["personal"]["minority_accuracy"] == pytest.approx(conditioned["minority_accuracy"])
    assert cli["personal"]["per_user_accuracy"] == pytest.approx(conditioned["per_user_accuracy"])
