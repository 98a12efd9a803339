"""Preference sources, pair construction (best-vs-worst, CLaMP-DPO, oracle labelling) and ONPO's regression loss:
expected values computed by hand."""

import math
import random

import pytest
import torch

from llmrl.algos.onpo import onpo_beta, onpo_loss, onpo_target
from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.preference.ranking import (
    JudgeSource,
    PairwiseSource,
    RewardModelSource,
    RewardSource,
    ScoredGroup,
    best_worst_pairs,
    clamp_pairs,
    fraction_count,
    instruction_of,
    oracle_pairs,
    pairwise_judge,
    pairwise_judge_prompt,
    score_groups,
    similarity,
)
from llmrl.rewards.judge import judge_scores


def triples(pairs):
    return [(p.prompt, p.chosen, p.rejected) for p in pairs]


# -- best vs worst ---------------------------------------------------------------------------------------
def test_best_worst_picks_extremes_first_among_equals_and_skips_ties():
    groups = [
        ScoredGroup({"prompt": "p0"}, ["a", "b", "c", "d"], [0.2, 0.9, 0.5, 0.9]),  # best = b (first 0.9), worst = a
        ScoredGroup({"prompt": "p1"}, ["x", "y"], [0.5, 0.5]),  # tie: no pair
        ScoredGroup({"prompt": "p2"}, ["same", "same", "z"], [1.0, 0.0, 1.0]),  # best = same(0), worst = same(1)
        ScoredGroup({"prompt": "p3"}, ["u", "v", "w"], [0.0, 3.0, 0.0]),  # worst = u (first of the equal lows)
        ScoredGroup({"prompt": "p4"}, ["only"], [1.0]),
    ]
    got = best_worst_pairs(groups)
    assert triples(got) == [("p0", "b", "a"), ("p3", "v", "u")]
    assert got[0].meta["chosen_score"] == 0.9 and got[0].meta["rejected_score"] == 0.2
    assert triples(best_worst_pairs(groups, min_margin=1.0)) == [("p3", "v", "u")]


# -- CLaMP-DPO -------------------------------------------------------------------------------------------
def test_fraction_count_rounds_half_up_and_stays_disjoint():
    assert fraction_count(4, 0.1) == 1  # round(0.4) = 0 -> at least 1
    assert fraction_count(15, 0.1) == 2  # 1.5 rounds up
    assert fraction_count(14, 0.1) == 1  # 1.4
    assert fraction_count(25, 0.1) == 3  # 2.5 rounds up
    assert fraction_count(3, 0.5) == 1  # round(1.5) = 2, capped at n // 2 = 1


def test_clamp_pairs_top_bottom_filters_and_all_combinations():
    comps = [f"c{i:02d}" for i in range(20)]
    scores = [float(i) for i in range(20)]  # c19 best ... c00 worst
    comps[18] = "the reference"  # 2nd best: a near-copy of the ground truth
    sample = {"prompt": "q", "answer": "the reference!"}
    g = ScoredGroup(sample, comps, scores)
    # k = round(0.1 * 20) = 2: top = c19, "the reference"; bottom = c01, c00
    assert triples(clamp_pairs([g])) == [("q", "c19", "c01"), ("q", "c19", "c00"),
                                        ("q", "the reference", "c01"), ("q", "the reference", "c00")]
    # similarity("the reference", "the reference!") = 2*13/27 = 0.963 > 0.95: dropped, not replaced by c17
    assert triples(clamp_pairs([g], reference_key="answer")) == [("q", "c19", "c01"), ("q", "c19", "c00")]
    # a malformed top completion is dropped too; rejected may be malformed
    bad = ScoredGroup(sample, comps, scores, well_formed=[i not in (19, 0) for i in range(20)])
    assert triples(clamp_pairs([bad])) == [("q", "the reference", "c01"), ("q", "the reference", "c00")]
    # 20% -> 4 x 4 = 16 pairs; equal scores between a chosen and a rejected give no pair
    assert len(clamp_pairs([g], top_frac=0.2, bottom_frac=0.2)) == 16
    flat = ScoredGroup(sample, ["a", "b", "c", "d"], [1.0, 1.0, 1.0, 0.0])
    assert triples(clamp_pairs([flat], top_frac=0.5, bottom_frac=0.5)) == [("q", "a", "d"), ("q", "b", "d")]


def test_clamp_reference_list_and_errors():
    g = ScoredGroup({"prompt": "q", "refs": ["zzzz", "abcd"]}, ["abcd", "x", "y", "w"], [3.0, 2.0, 1.0, 0.0])
    assert triples(clamp_pairs([g], top_frac=0.25, bottom_frac=0.25, reference_key="refs")) == []
    assert triples(clamp_pairs([g], top_frac=0.25, bottom_frac=0.25)) == [("q", "abcd", "w")]
    with pytest.raises(ValueError, match="no reference column 'gold'"):
        clamp_pairs([g], reference_key="gold")
    with pytest.raises(ValueError, match="top_frac"):
        clamp_pairs([g], top_frac=0.0)
    with pytest.raises(ValueError, match="unknown similarity"):
        clamp_pairs([g], similarity_method="embedding")


def test_similarity_by_hand():
    assert similarity("abcd", "abce") == pytest.approx(2 * 3 / 8)  # 3 matching chars
    assert similarity("", "") == 1.0
    # trigram counts {"aaa": 2} vs {"aaa": 1, "aab": 1}: 2 / (2 * sqrt(2))
    assert similarity("aaaa", "aaab", "ngram") == pytest.approx(1 / math.sqrt(2))
    assert similarity("ab", "ab", "ngram") == 1.0 and similarity("ab", "abc", "ngram") == 0.0


def test_scored_group_shape_errors():
    with pytest.raises(ValueError, match="2 completions but 1 scores"):
        ScoredGroup({"prompt": "p"}, ["a", "b"], [1.0])
    with pytest.raises(ValueError, match="well_formed"):
        ScoredGroup({"prompt": "p"}, ["a", "b"], [1.0, 0.0], [True])


# -- sources ---------------------------------------------------------------------------------------------
def bt_oracle(strength):
    """P(y1 > y2) = s1 / (s1 + s2) (a Bradley-Terry oracle with known strengths)."""
    return lambda prompt, y1, y2: strength[y1] / (strength[y1] + strength[y2])


def test_pairwise_win_rates_by_hand():
    src = PairwiseSource(bt_oracle({"a": 1.0, "b": 2.0, "c": 3.0}))
    # P(a>b)=1/3, P(a>c)=1/4, P(b>c)=2/5
    soft = src.score([{"prompt": "q"}], [["a", "b", "c"]])[0]
    assert soft == pytest.approx([(1 / 3 + 1 / 4) / 2, (2 / 3 + 2 / 5) / 2, (3 / 4 + 3 / 5) / 2])
    hard = PairwiseSource(src.oracle, ranking="hard").score([{"prompt": "q"}], [["a", "b", "c"]])[0]
    assert hard == [0.0, 0.5, 1.0]
    assert src.score([{"prompt": "q"}], [["a"]]) == [[0.5]]


def test_pairwise_both_orders_cancels_position_bias():
    base = bt_oracle({"a": 1.0, "b": 3.0})
    biased = lambda p, y1, y2: min(1.0, base(p, y1, y2) + 0.2)  # noqa: E731 - first position favoured
    assert PairwiseSource(biased).prob("q", "a", "b") == pytest.approx(0.45)
    # both orders: (0.25 + 0.2 + 1 - (0.75 + 0.2)) / 2 = 0.25, the unbiased value
    assert PairwiseSource(biased, both_orders=True).prob("q", "a", "b") == pytest.approx(0.25)
    with pytest.raises(ValueError, match="probability"):
        PairwiseSource(lambda p, a, b: 1.5).prob("q", "a", "b")


def test_oracle_pairs_threshold_and_sampled_labels():
    oracle = bt_oracle({"a": 1.0, "b": 3.0, "c": 2.0, "d": 2.0, "e": 9.0})
    got = oracle_pairs([{"prompt": "q"}], [["a", "b", "c", "d", "e"]], oracle)
    assert triples(got) == [("q", "b", "a")]  # (a, b): P = 1/4 -> b wins; (c, d): P = 1/2 -> no pair; e unused
    assert got[0].meta["prob"] == pytest.approx(0.75)
    # sampled: y1 wins iff u < P, with u drawn in order from the same seeded stream
    r = random.Random(7)
    u1, u2 = r.random(), r.random()
    exp = [("q", "a" if u1 < 0.25 else "b", "b" if u1 < 0.25 else "a"),
           ("q", "c" if u2 < 0.5 else "d", "d" if u2 < 0.5 else "c")]
    assert triples(oracle_pairs([{"prompt": "q"}], [["a", "b", "c", "d"]], oracle, label="sample",
                                rng=random.Random(7))) == exp
    with pytest.raises(ValueError, match="rng"):
        oracle_pairs([{"prompt": "q"}], [["a", "b"]], oracle, label="sample")


def test_reward_and_reward_model_sources():
    src = RewardSource({"len": lambda c, s: float(len(c)), "bad": lambda c, s: 1 / 0}, failure_value=-1.0)
    assert src.score([{"prompt": "p"}, {"prompt": "q"}], [["ab", "abc"], ["x"]]) == [[1.0, 2.0], [0.0]]

    class FakeRM:
        def score_batch(self, completions, samples):
            return [len(c) + len(s["prompt"]) for c, s in zip(completions, samples)]

    rm = RewardModelSource(FakeRM())
    assert rm.score([{"prompt": "p"}, {"prompt": "qq"}], [["ab", "abc"], ["x"]]) == [[3.0, 4.0], [3.0]]
    with pytest.raises(TypeError, match="score_batch"):
        RewardModelSource(object())
    groups = score_groups(src, [{"prompt": "p"}], [["a", "bb"]], well_formed=[[True, False]])
    assert groups[0].scores == [0.0, 1.0] and not groups[0].ok(1)


@pytest.fixture(scope="module")
def tiny():
    spec = TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64,
                         max_position_embeddings=256)
    return build_tiny_model(spec, build_char_tokenizer(), seed=0)


def test_judge_source_is_judge_scores_per_group(tiny):
    model, tok = tiny
    samples = [{"prompt": "1+1="}, {"prompt": [{"role": "user", "content": "2+2="}]}]
    got = JudgeSource(model, tok, category="math").score(samples, [["2", "3"], ["4"]])
    flat = judge_scores(model, tok, [("1+1=", "2"), ("1+1=", "3"), ("2+2=", "4")], "math")
    assert got == [pytest.approx(flat[:2]), pytest.approx(flat[2:])]
    with pytest.raises(ValueError, match="no text instruction"):
        instruction_of({"answer": "x"})


def test_pairwise_judge_matches_hand_computation(tiny):
    model, tok = tiny
    prompt = tok.encode(pairwise_judge_prompt("1+1=", "2", "3"), add_special_tokens=False)

    def prob(variant):
        v = tok.encode(variant, add_special_tokens=False)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + v])).logits[0].double(), -1)
        return math.exp(sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(v)))

    p_a, p_b = prob("A") + prob(" A"), prob("B") + prob(" B")
    assert pairwise_judge(model, tok)("1+1=", "2", "3") == pytest.approx(p_a / (p_a + p_b), abs=1e-6)


# -- ONPO regression -------------------------------------------------------------------------------------
def test_onpo_loss_by_hand():
    pc, pr = torch.tensor([-1.0, -2.0, -4.0]), torch.tensor([-3.0, -1.5, -1.0])
    ac, ar = torch.tensor([-1.5, -2.0, -2.0]), torch.tensor([-2.5, -1.0, -1.0])
    # g = (pc - pr) - (ac - ar) = [2 - 1, -0.5 + 1, -3 + 1] = [1, 0.5, -2]
    losses, metrics = onpo_loss(pc, pr, ac, ar, target=0.5)
    assert losses.tolist() == pytest.approx([0.25, 0.0, 6.25])
    assert float(metrics["onpo/g"]) == pytest.approx(-0.5 / 3)
    assert float(metrics["rewards/accuracies"]) == pytest.approx(2 / 3)  # beta * (pc - ac) > beta * (pr - ar)
    assert onpo_target(100.0) == 50.0 and onpo_target(100.0, "inv_2eta") == 0.005
    assert onpo_beta(50.0) == 0.01
    with pytest.raises(ValueError, match="convention"):
        onpo_target(1.0, "eta")
    with pytest.raises(ValueError, match="eta must be > 0"):
        onpo_target(0.0)
