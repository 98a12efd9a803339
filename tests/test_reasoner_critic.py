"""Reasoner–Critic (PAPERS.md §19): worked column steps, the divergence point and the critic's targets by hand,
the loop's stopping rule with scripted models, the metrics by hand, config errors and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from llmrl.config import load_config
from llmrl.core.errors import ConfigError
from llmrl.models.tiny import build_char_tokenizer
from llmrl.rl.reasoner_critic import contrastive_examples, loop_metrics
from llmrl.rl.reflect_config import ReflectConfig
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.rollout.reflection import (
    STOP,
    Trace,
    critic_prompt,
    critique,
    first_divergence,
    is_stop,
    reasoning_steps,
    reflect,
    revision_prompt,
)
from llmrl.tasks.arithmetic import ArithmeticTask, column_steps
from llmrl.trainers import run_trainer

GOOD, SLOPPY = "7+8=15,4+3+1=8#85", "7+8=15,4+3=7#75"  # 47+38 with and without the carry


def _sample(a: int, b: int) -> dict:
    return {"task": "arithmetic", "prompt": f"{a}+{b}=", "answer": str(a + b), "operands": [a, b], "ops": ["+"]}


# ------------------------------------------------------------------------------------- the worked rationale
def test_column_steps_by_hand() -> None:
    assert column_steps(47, 38) == (["7+8=15", "4+3+1=8"], 85)
    assert column_steps(47, 38, carry=False) == (["7+8=15", "4+3=7"], 75)
    assert column_steps(97, 38) == (["7+8=15", "9+3+1=13"], 135)
    assert column_steps(999, 1) == (["9+1=10", "9+0+1=10", "9+0+1=10"], 1000)
    assert column_steps(999, 1, carry=False) == (["9+1=10", "9+0=9", "9+0=9"], 990)
    assert column_steps(5, 0) == (["5+0=5"], 5)


def test_steps_style_demonstrations_and_parsing() -> None:
    task, s = ArithmeticTask(digits=2, ops=["+"], style="steps"), _sample(47, 38)
    assert task.demonstration(s) == GOOD and task.wrong_demonstration(s, None) == SLOPPY
    assert task.is_correct(GOOD, s) and not task.is_correct(SLOPPY, s)
    assert task.parse("1+2=3#4#85") == "85" and task.parse("7+8=15,4+3+1=8") is None
    assert task.make_sample(__import__("random").Random(0))["prompt"].endswith("=")
    with pytest.raises(ValueError, match="style 'steps' needs ops"):
        ArithmeticTask(ops=["+", "-"], style="steps")
    # the other styles are unchanged
    assert ArithmeticTask(style="plain").demonstration(s) == "85"
    assert ArithmeticTask(style="plain").wrong_demonstration(s, None) == "75"


# ------------------------------------------------------------------------------ divergence and critic targets
def test_reasoning_steps_and_first_divergence() -> None:
    assert reasoning_steps(GOOD) == ["7+8=15", "4+3+1=8", "#85"]
    assert reasoning_steps("a,b") == ["a", "b"] and reasoning_steps("#3") == ["#3"] and reasoning_steps("") == []
    assert first_divergence(reasoning_steps(GOOD), reasoning_steps(SLOPPY)) == 1
    assert first_divergence(["a", "b"], ["a", "b"]) is None
    assert first_divergence(["a", "b"], ["a"]) == 1 and first_divergence(["a"], ["a", "b"]) == 1


@pytest.mark.parametrize("attempt, target", [
    (GOOD, STOP),                                 # the same path: stop
    (SLOPPY, "step2:4+3+1=8"),                    # the dropped carry: the second column
    ("7+8=14,4+3+1=8#84", "step1:7+8=15"),        # the first column wrong
    ("7+8=15,4+3+1=8#86", "step3:#85"),           # right steps, wrong answer
    ("7+8=15", "step2:4+3+1=8"),                  # stopped early: the first missing step
    ("7+8=15,4+3+1=8,0+0=0#85", "step3:#85"),     # an extra step
])
def test_critique_names_the_first_divergent_step(attempt: str, target: str) -> None:
    assert critique(GOOD, attempt) == target


def test_critique_of_a_path_one_step_too_long_is_empty_after_the_colon() -> None:
    assert critique("a,b", "a,b,c") == "step3:"


def test_contrastive_examples_by_hand() -> None:
    carry, plain = _sample(47, 38), _sample(12, 34)
    critic, revise = contrastive_examples([carry, plain], [GOOD, "2+4=6,1+3=4#46"], [[SLOPPY], ["2+4=6,1+3=4#46"]],
                                          ReflectConfig())
    assert [(s["prompt"], t) for s, t in critic] == [
        ("47+38=7+8=15,4+3+1=8#85|", STOP), ("47+38=7+8=15,4+3=7#75|", "step2:4+3+1=8"),
        ("12+34=2+4=6,1+3=4#46|", STOP), ("12+34=2+4=6,1+3=4#46|", STOP)]
    assert [(s["prompt"], t) for s, t in revise] == [("47+38=7+8=15,4+3=7#75|step2:4+3+1=8|", GOOD)]
    assert all(s["answer"] == "85" for s, _ in revise)  # the sample's fields travel with the example
    critic, _ = contrastive_examples([carry], [GOOD], [[SLOPPY]], ReflectConfig(), with_chosen=False)
    assert [t for _, t in critic] == ["step2:4+3+1=8"]


# ------------------------------------------------------------------------------------------ the loop
class Scripted:
    """A greedy model from a dict: prompt text -> completion; records every call's prompts."""

    def __init__(self, tok, script: dict[str, str]) -> None:
        self.tok, self.script, self.calls = tok, script, []

    def generate(self, prompts, params):
        texts = [self.tok.decode(p) for p in prompts]
        self.calls.append(texts)
        return [[Generation(self.tok.encode(self.script[t], add_special_tokens=False), [0.0], self.script[t],
                            "stop")] for t in texts]


def test_loop_stops_at_stop_or_after_the_round_budget() -> None:
    tok = build_char_tokenizer()
    reasoner = Scripted(tok, {
        "1+1=": "1+1=2#2",                                     # right at once
        "5+5=": "5+5=9#9",                                     # wrong, fixed after one reflection
        "5+5=5+5=9#9|step1:5+5=10|": "5+5=10#10",
        "9+9=": "9+9=1#1",                                     # never fixed
        "9+9=9+9=1#1|step1:9+9=18|": "9+9=2#2",
        "9+9=9+9=2#2|step1:9+9=18|": "9+9=3#3"})
    critic = Scripted(tok, {
        "1+1=1+1=2#2|": " [STOP]", "5+5=5+5=9#9|": "step1:5+5=10", "5+5=5+5=10#10|": "[STOP]",
        "9+9=9+9=1#1|": "step1:9+9=18", "9+9=9+9=2#2|": "step1:9+9=18"})
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    a, b, c = reflect(reasoner, critic, tok, ["1+1=", "5+5=", "9+9="], rounds=2, params=params)
    assert (a.attempts, a.reflections, a.stopped) == (["1+1=2#2"], [" [STOP]"], True)
    assert (b.attempts, b.reflections, b.stopped) == (["5+5=9#9", "5+5=10#10"], ["step1:5+5=10", "[STOP]"], True)
    assert (c.attempts, c.stopped) == (["9+9=1#1", "9+9=2#2", "9+9=3#3"], False)  # 2 rounds, no [STOP]
    assert [a.answer_after(t) for t in range(3)] == ["1+1=2#2"] * 3
    assert [b.answer_after(t) for t in range(3)] == ["5+5=9#9", "5+5=10#10", "5+5=10#10"]
    # batched: one reasoner call per round for the questions still live, one critic call per round
    assert reasoner.calls == [["1+1=", "5+5=", "9+9="], ["5+5=5+5=9#9|step1:5+5=10|", "9+9=9+9=1#1|step1:9+9=18|"],
                              ["9+9=9+9=2#2|step1:9+9=18|"]]
    assert critic.calls == [["1+1=1+1=2#2|", "5+5=5+5=9#9|", "9+9=9+9=1#1|"], ["5+5=5+5=10#10|", "9+9=9+9=2#2|"]]
    # zero rounds: the reasoner alone; the oracle replaces the critic by critique() of the gold path
    (z,) = reflect(reasoner, critic, tok, ["9+9="], rounds=0, params=params)
    assert z.attempts == ["9+9=1#1"] and z.reflections == []
    n = len(critic.calls)
    (o,) = reflect(reasoner, critic, tok, ["5+5="], rounds=2, params=params, oracle=["5+5=10#10"])
    assert o.reflections == ["step1:5+5=10", STOP] and o.attempts[-1] == "5+5=10#10" and len(critic.calls) == n


def test_stop_rule_and_prompts() -> None:
    assert is_stop("[STOP]") and is_stop("  [STOP]\n") and not is_stop("step1:[STOP]") and not is_stop("")
    assert critic_prompt("47+38=", SLOPPY + " ") == "47+38=7+8=15,4+3=7#75|"
    assert revision_prompt("47+38=", SLOPPY, " step2:4+3+1=8") == "47+38=7+8=15,4+3=7#75|step2:4+3+1=8|"
    with pytest.raises(ValueError, match="one sample per prompt"):
        reflect(None, None, None, ["1+1="], rounds=1, params=SamplingParams(n=2))


def test_loop_metrics_by_hand() -> None:
    task = ArithmeticTask(digits=2, ops=["+"], style="steps")
    samples = [_sample(47, 38), _sample(12, 34)]
    gold = [GOOD, "2+4=6,1+3=4#46"]
    traces = [Trace("47+38=", [SLOPPY, GOOD], ["step2:4+3+1=8", STOP], True),  # fixed in round 1
              Trace("12+34=", ["2+4=6,1+3=4#46", "2+4=6,1+3=5#56", "2+4=6,1+3=5#56"], ["step1:x", "step2:y"])]
    oracle = [Trace("47+38=", [SLOPPY, GOOD], ["step2:4+3+1=8", STOP], True),
              Trace("12+34=", ["2+4=6,1+3=4#46"], [STOP], True)]
    m = loop_metrics(task, samples, traces, oracle, gold, 2, ReflectConfig())
    # round 0: only 12+34 right; rounds 1 and 2: 47+38 fixed, 12+34 broken by a wrong reflection
    assert (m["accuracy_round0"], m["accuracy_round1"], m["accuracy_round2"]) == (0.5, 0.5, 0.5)
    assert (m["oracle_accuracy_round0"], m["oracle_accuracy_round2"]) == (0.5, 1.0)
    assert (m["stopped_by_round1"], m["stopped_by_round2"]) == (0.0, 0.5)
    # first reflections: on a wrong answer not [STOP] (right), on a right answer not [STOP] (wrong)
    assert m["critic/verdict_accuracy"] == 0.5 and m["critic/exact"] == 0.5 and m["critic/stop_rate"] == 0.0
    assert (m["wrong_to_right"], m["right_to_wrong"], m["mean_reflections"]) == (0.5, 0.5, 2.0)
    assert m["accuracy"] == 0.5 and m["reasoner_accuracy"] == 0.5


# ----------------------------------------------------------------------------------------- config and run
BASE = ["trainer=reasoner_critic", "progress=false", "threads=1", "model.tiny.hidden_size=32",
        "model.tiny.num_layers=2", "model.tiny.num_heads=2", "model.tiny.intermediate_size=64",
        "model.tiny.max_position_embeddings=96", "task.name=arithmetic", "task.options.digits=2",
        "task.options.ops=[+]", "task.options.style=steps", "task.train_size=64", "task.test_size=8",
        "sft.steps=40", "sft.batch_size=16", "sft.lr=3e-3", "sft.noise=0.5", "sft.num_examples=64",
        "sft.warmup_steps=0", "rollout.max_new_tokens=20", "reflect.pairs=64", "reflect.self_pairs=1",
        "reflect.critic_steps=40", "reflect.critic_max_new_tokens=12", "reflect.self_revision_steps=5",
        "eval.batch_size=8"]


@pytest.mark.parametrize("override, key", [
    ("reflect.answer_mark=,", "reflect.sep"), ("reflect.self_pairs=0 reflect.self_revision_steps=5", "reflect.self_revision_steps"), ("reflect.rounds=-1", "reflect.rounds"),
    ("sft.data_file=x.jsonl", "sft.source"), ("critic.lr=0.1", "critic.lr")])
def test_config_errors_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [*BASE, *override.split()])


def test_chat_prompts_no_sft_and_resume_are_refused(tmp_path) -> None:
    cfg = load_config(None, [*BASE, "task.options.style=chat", "task.options.system_prompt=Be brief.",
                             f"output_dir={tmp_path / 'a'}"])
    with pytest.raises(ConfigError, match="plain text"):
        run_trainer(cfg)
    with pytest.raises(ConfigError, match=r"sft\.steps: .* must be > 0"):
        run_trainer(load_config(None, [*BASE, "sft.steps=0", f"output_dir={tmp_path / 'c'}"]))
    with pytest.raises(ConfigError, match="--resume"):
        run_trainer(load_config(None, [*BASE, f"output_dir={tmp_path / 'b'}"]), resume=True)


def test_tiny_end_to_end_run(tmp_path) -> None:
    out = tmp_path / "run"
    summary = run_trainer(load_config(None, [*BASE, f"output_dir={out}"]))
    ev = summary["eval"]
    assert set(ev) >= {f"accuracy_round{t}" for t in range(3)} | {"critic/verdict_accuracy", "oracle_accuracy_round2"}
    assert all(0.0 <= ev[k] <= 1.0 for k in ev if not k.endswith("seconds") and k != "mean_reflections")
    assert 0.0 <= ev["mean_reflections"] <= 2.0
    # both models moved off their random init (a uniform guess over the 101-token vocabulary costs ln(101) = 4.6 nats)
    assert summary["train"]["reasoner/sft_loss"] < 3.5 and summary["train"]["critic/sft_loss"] < 3.5
    # critic data: 64 chosen -> [STOP], 64 teacher paths, 64 reasoner samples
    assert summary["train"]["critic/examples"] == 192.0
    # the second reasoner phase: its data so far plus revisions of its own diverging samples
    t = summary["train"]
    assert t["reasoner_self/examples"] > t["reasoner/examples"] and t["reasoner_self/sft_loss"] > 0
    for d in ("reasoner_model", "critic_model"):
        assert (out / d / "config.json").is_file()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["accuracy"] == ev["accuracy_round2"] and len(saved["examples"]) == 8
    assert all(len(x["attempts"]) <= 3 and len(x["reflections"]) <= 2 for x in saved["examples"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records][-1] == "eval"
