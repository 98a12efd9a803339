"""Self-rewarding correction (PAPERS.md §10): the environment's turns and rewards (and the +1.5 bonus) by hand,
token-exact episodes, the D1/D2/D3 construction and SFT masks from a scripted sampler, and a tiny end-to-end run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from llmrl.config import load_config
from llmrl.models.tiny import build_char_tokenizer
from llmrl.rewards.pool import PoolOptions, task_pool
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.rollout.multiturn import environment_factory, finish_turn_rewards, rollout_episodes
from llmrl.rollout.self_correction import SelfCorrectionEnvironment, parse_verdict
from llmrl.tasks import get_task
from llmrl.train.collect import score_episodes
from llmrl.train.self_correction import Row, format_rows, rejection_rows, replay
from tests.chat_templates import chat_tokenizer

ROOT = Path(__file__).resolve().parent.parent
OK, NO = "[VERIFY] correct", "[VERIFY] wrong"  # 16 and 14 characters
OPTS = {"verify_prompt": "|v:", "revise_prompt": "|r:", "max_attempts": 2}


def _task():
    return get_task("arithmetic", digits=1, ops=["+"], style="plain")


def _sample(a: int, b: int) -> dict:
    return {"prompt": f"{a}+{b}=", "answer": str(a + b), "operands": [a, b], "ops": ["+"]}


class Scripted:
    """A generator answering from the decoded context: ``script(context_text, k) -> text`` for the k-th of the
    ``params.n`` samples; every turn ends with EOS."""

    def __init__(self, tok, script):
        self.tok, self.script, self.contexts = tok, script, []

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            ctx = self.tok.decode(p, skip_special_tokens=True)
            self.contexts.append(ctx)
            gens = []
            for k in range(params.n):
                text = self.script(ctx, k)
                ids = self.tok.encode(text, add_special_tokens=False) + [self.tok.eos_token_id]
                gens.append(Generation(ids, [-0.5] * len(ids), text, "stop"))
            out.append(gens)
        return out


# ------------------------------------------------------------------------------------------------ environment
def test_parse_verdict():
    assert parse_verdict("so [VERIFY] correct") is True and parse_verdict("[VERIFY] wrong.") is False
    assert parse_verdict("[VERIFY] correct ... no, [VERIFY] wrong") is False  # the last one counts
    assert parse_verdict("[VERIFY] maybe") is None and parse_verdict("") is None


def test_environment_turns_rewards_and_bonus_by_hand():
    env = SelfCorrectionEnvironment(_task(), correction_bonus=1.5, **OPTS)
    assert env.reset(_sample(3, 4)) == "3+4="
    r = env.step("6")  # a1 wrong
    assert (r.observations, r.reward, r.done, r.info["correct"]) == ("|v:", 0.0, False, False)
    r = env.step(NO)  # right verdict on a wrong a1: revise
    assert (r.observations, r.done, r.info["verdict_correct"]) == ("|r:", False, True)
    r = env.step("7")  # a2 right after a wrong a1: the bonus
    assert (r.reward, r.done, r.info["correct"]) == (1.5, False, True)
    r = env.step(OK)
    assert r.done and env.scored_text() == "7"
    assert r.info["metrics"] == {"first_accuracy": 0.0, "final_accuracy": 1.0, "verdict_accuracy": 1.0,
                                 "verdict_accuracy_on_correct": None, "verdict_accuracy_on_wrong": 1.0,
                                 "wrong_to_correct": 1.0, "correct_to_wrong": 0.0, "attempts": 2.0}
    # a right a1 judged wrong, then a wrong a2: no bonus; max_attempts=2 ends after the second verdict
    env.reset(_sample(3, 4))
    assert [env.step(t).reward for t in ("7", NO, "8")] == [0.0, 0.0, 0.0]
    r = env.step(NO)
    assert r.done and env.scored_text() == "8"
    m = r.info["metrics"]
    assert (m["verdict_accuracy"], m["verdict_accuracy_on_correct"], m["correct_to_wrong"]) == (0.0, 0.0, 1.0)
    # a verdict naming neither ends the episode (a miss); no answer yet: no metrics
    env.reset(_sample(3, 4))
    assert env.metrics() == {}
    env.step("7")
    r = env.step("hmm")
    assert r.done and r.info["verdict"] is None and r.info["metrics"]["verdict_accuracy"] == 0.0


def test_bonus_telescopes_over_more_attempts():
    """Answer k >= 2 gets 1.5·(w·c_k − w·c_{k−1}): right then wrong again sums to 0 = 1.5·w·c_last."""
    env = SelfCorrectionEnvironment(_task(), correction_bonus=1.5, verify_prompt="|v:", revise_prompt="|r:",
                                    max_attempts=3)
    env.reset(_sample(3, 4))
    rewards = [env.step(t).reward for t in ("1", NO, "7", NO, "2", NO)]
    assert rewards == [0.0, 0.0, 1.5, 0.0, -1.5, 0.0] and env.scored_text() == "2"


def test_environment_options_are_checked():
    from llmrl.core.errors import ConfigError

    with pytest.raises(ConfigError, match="rollout.env_options.*max_attempts"):
        environment_factory("self_correction", _task(), {"max_attempts": 0})
    with pytest.raises(ConfigError, match="rollout.env_options.*verdicts"):
        environment_factory("self_correction", _task(), {"correct": "ok", "wrong": "not ok"})


@pytest.mark.parametrize("bonus, turn_rewards", [(0.0, [0.0, 0.0, 0.0, 1.0]), (1.5, [0.0, 0.0, 1.5, 1.0])])
def test_rollout_scores_the_last_answer_and_pays_the_bonus(bonus, turn_rewards):
    """The task scores a2 (not the last turn, a verdict); the bonus is the environment's reward of a2's turn."""
    tok, task = build_char_tokenizer(), _task()
    script = {"3+4=": "6", "3+4=6|v:": NO, "3+4=6|v:[VERIFY] wrong|r:": "7", "3+4=6|v:[VERIFY] wrong|r:7|v:": OK}
    gen = Scripted(tok, lambda ctx, k: script[ctx])
    factory = environment_factory("self_correction", task, {**OPTS, "correction_bonus": bonus})
    (ep,) = rollout_episodes(gen, tok, [_sample(3, 4)], SamplingParams(n=1, max_new_tokens=18), factory,
                             chat_template=None, max_turns=6)
    assert ep.completion == "7" and ep.metadata["stop"] == "done" and len(ep.turn_spans) == 4
    score_episodes([ep], task, 0.0, 18, pool=task_pool(task, PoolOptions(workers=0)))
    finish_turn_rewards(ep)
    assert ep.metadata["turn_rewards"] == turn_rewards and ep.reward == pytest.approx(1.0 + bonus)
    # environment tokens (the verify / revise prompts) get no gradient
    eos = tok.eos_token_id
    assert [t for t, m in zip(ep.tokens, ep.loss_mask) if m] == (
        tok.encode("6") + [eos] + tok.encode(NO) + [eos] + tok.encode("7") + [eos] + tok.encode(OK) + [eos])


@pytest.mark.parametrize("template", [None, "smollm2"])
def test_replay_equals_the_rollout(template):
    """An SFT row built from turns is token for token the episode the rollout builds from the same samples."""
    tok = build_char_tokenizer() if template is None else chat_tokenizer(template)
    task = _task()
    sample = _sample(2, 5) if template is None else {**_sample(2, 5), "prompt": [{"role": "user", "content": "2+5="}]}
    texts = iter(["6", NO, "7", OK])
    gen = Scripted(tok, lambda ctx, k: next(texts))
    factory = environment_factory("self_correction", task, OPTS)
    (ep,) = rollout_episodes(gen, tok, [sample], SamplingParams(n=1, max_new_tokens=18), factory,
                             chat_template=None, max_turns=4)
    turns = [(ep.tokens[s:e], t, True) for (s, e), t in zip(ep.turn_spans, ep.metadata["turn_texts"], strict=True)]
    row, env = replay(tok, factory, sample, turns, None)
    assert row.tokens == ep.tokens and row.loss_mask == ep.loss_mask
    assert env.scored_text() == "7" and env.results == [False, True]


# ------------------------------------------------------------------------------------- D1 / D2 / D3 and masks
def _srs_script(ctx: str, k: int) -> str:
    if ctx.endswith("|v:"):  # verdicts: 1+1 gets one of each; 2+2 never a verdict
        return [OK, NO][k % 2] if ctx.startswith("1+1") else [OK, "???"][k % 2]
    if ctx.endswith("|r:"):  # corrections: the second is right
        return ["7", "2"][k % 2]
    return {"1+1=": ["3", "2", "3"], "2+2=": ["5", "6", "5"]}[ctx][k]  # first answers


def test_sequential_rejection_sampling_builds_d1_d2_d3_with_their_masks():
    tok, task = build_char_tokenizer(), _task()
    factory = environment_factory("self_correction", task, OPTS)
    gen = Scripted(tok, _srs_script)
    rows, stats = rejection_rows(gen, tok, factory, [_sample(1, 1), _sample(2, 2)], n1=3, n2=2, m1=2, m2=2,
                                 per_prompt=1, params=SamplingParams(max_new_tokens=18, seed=0), chat_template=None)
    # a1: 1 right of 6; judged: 1+1 "3" and "2", 2+2 "5" only (per_prompt: one wrong a1); verdicts match 2 of 6
    assert stats == {"srs/a1_accuracy": 1 / 6, "srs/verdict_match": 2 / 6, "srs/a1_judged": 3.0, "srs/D1": 1.0,
                     "srs/D2": 1.0, "srs/D3": 1.0}
    got = [(r.kind, r.sample["prompt"], [(t, tr) for _, t, tr in r.turns]) for r in rows]
    assert got == [("D1", "1+1=", [("3", False), (NO, True), ("2", True)]),
                   ("D2", "1+1=", [("2", False), (NO, False), ("2", True)]),
                   ("D3", "1+1=", [("2", True), (OK, True)])]
    # token masks: prompt 4, a1+EOS 2, "|v:" 3, verdict+EOS 15 (wrong) / 17 (correct), "|r:" 3, a2+EOS 2
    masks = [replay(tok, factory, r.sample, r.turns, None)[0].loss_mask for r in rows]
    assert masks[0] == [0] * 4 + [0] * 2 + [0] * 3 + [1] * 15 + [0] * 3 + [1] * 2  # D1: y1 and a2
    assert masks[1] == [0] * 4 + [0] * 2 + [0] * 3 + [0] * 15 + [0] * 3 + [1] * 2  # D2: a2 only
    assert masks[2] == [0] * 4 + [1] * 2 + [0] * 3 + [1] * 17  # D3: a1 and y1
    # the D2 correction was sampled after the written-in verdict
    assert "1+1=2|v:[VERIFY] wrong|r:" in gen.contexts


def test_no_correction_needs_two_attempts():
    from llmrl.core.errors import ConfigError

    tok, task = build_char_tokenizer(), _task()
    factory = environment_factory("self_correction", task, {**OPTS, "max_attempts": 1})
    with pytest.raises(ConfigError, match="max_attempts"):
        rejection_rows(Scripted(tok, _srs_script), tok, factory, [_sample(1, 1)], n1=1, n2=1, m1=1, m2=1,
                       per_prompt=1, params=SamplingParams(), chat_template=None)


def test_format_rows_train_every_turn():
    tok, task = build_char_tokenizer(), _task()
    rows = format_rows(tok, task, [_sample(i % 5, 3) for i in range(40)], noise=0.0, seed=0, correct=OK, wrong=NO)
    assert all(isinstance(r, Row) and all(tr for _, _, tr in r.turns) for r in rows)
    shapes = {tuple(t for _, t, _ in r.turns[1:2]) + (len(r.turns),) for r in rows}
    assert shapes == {(OK, 2), (NO, 4)}  # random verdicts: both kinds among 40
    assert all(r.turns[0][1] == r.sample["answer"] for r in rows)  # noise 0: gold first answers


# ----------------------------------------------------------------------------------------------- end to end
def test_recipe_runs_end_to_end(tiny_overrides):
    from llmrl.trainers import run_trainer

    cfg = load_config(str(ROOT / "recipes" / "self_rewarding_correction.yaml"),
                      [*tiny_overrides, "steps=2", "save_every=0", "sft.steps=40", "sft.num_examples=48",
                       "sft.warmup_steps=5", "sft.self_correction.prompts=16", "sft.self_correction.n1=2",
                       "sft.self_correction.n2=2", "sft.self_correction.m1=2", "sft.self_correction.m2=2",
                       "task.test_size=8", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
                       "rollout.max_new_tokens=18", "model.tiny.max_position_embeddings=96",
                       "rollout.env_options.correction_bonus=1.5", "sft.self_correction.epochs=2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a 40-step model may give no D row: then no SFT on them
        summary = run_trainer(cfg)
    for when in ("before", "after"):
        assert {"env/first_accuracy", "env/final_accuracy", "env/verdict_accuracy", "accuracy"} <= summary[when].keys()
    out = Path(cfg.output_dir)
    stats = json.loads((out / "self_correction.json").read_text())
    assert {"format_sft_loss", "srs/a1_accuracy", "srs/verdict_match", "srs/D1", "srs/D2", "srs/D3"} <= stats.keys()
    kept = stats["srs/D1"] + stats["srs/D2"] + stats["srs/D3"]
    assert kept == len((out / "self_correction_rows.jsonl").read_text().splitlines())
    if kept:  # epochs=2: ceil(2 * rows / batch_size) steps on them
        assert stats["sft_steps"] == -(-2 * kept // cfg.sft.batch_size)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "loss" in r]) == 2

