"""Online / iterative preference training (trainers online_dpo and onpo) on tiny models.

The acceptance run: the test task ``test_char_a`` (conftest; its known preference: completions made of
the letter "a"), a policy warm-started by SFT on random strings over "abc", and a fixed tiny LLM judge
first SFT-trained to answer " Yes" with probability = the response's fraction of "a" (so its score
p_yes/(p_yes+p_no) is read exactly like the IPO judge, from Yes/No probabilities). Online DPO ranked by
that judge must raise the judge's mean score of held-out samples on each of 3 iterations. The self-judged
run (IPO, arXiv:2502.16182): one tiny model SFT-trained both to write strings and to answer the judge prompt, then online DPO
ranked by its own current Yes/No probabilities must raise that same judge's held-out mean score 3 times.
"""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

from llmrl.config import load_config
from llmrl.core.errors import ConfigError
from llmrl.models.loading import save_model
from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.preference.online import train, train_onpo
from llmrl.rewards.judge import judge_prompt
from llmrl.tasks.io import write_jsonl
from llmrl.train.checkpoint import latest_checkpoint
from llmrl.train.metrics import read_metrics
from llmrl.train.sft import run_sft, sft_episodes

SPEC = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, max_position_embeddings=192)
SEED = int(os.environ.get("LLMRL_ONLINE_SEED", "0"))  # the reported runs: seeds 0, 1, 2


def _strings(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice("abc") for _ in range(rng.randint(lo, hi)))


def _train_judge(path, seed: int) -> None:
    """A tiny judge: " Yes" with probability = fraction of "a" in the response (1600 examples, 60 SFT steps)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(1600):
        r = _strings(rng, 1, 8)
        if rng.random() < 0.15:
            r = "a" * len(r)
        yes = rng.random() < r.count("a") / len(r)
        rows.append(({"prompt": judge_prompt(f"{rng.randrange(10**6)}:", r, "chat")}, " Yes" if yes else " No"))
    spec = TinyModelSpec(num_kv_heads=4, **SPEC)
    judge, tok = build_tiny_model(spec, build_char_tokenizer(), seed=seed + 1)
    run_sft(judge, tok, sft_episodes(tok, rows, False), steps=60, batch_size=32, lr=3e-3, warmup_steps=5,
            schedule="constant", seed=seed)
    save_model(judge, tok, path)


def test_online_dpo_raises_the_judges_mean_score_on_each_iteration(tmp_path):
    torch.set_num_threads(1)
    _train_judge(tmp_path / "judge", SEED)
    rng = random.Random(1000 + SEED)
    write_jsonl(tmp_path / "sft.jsonl", [{"prompt": f"{rng.randrange(10**6)}:", "completion": _strings(rng, 2, 6)}
                                         for _ in range(400)])
    cfg = load_config(None, [
        "progress=false", "threads=1", f"seed={SEED}", f"output_dir={tmp_path / 'run'}", "trainer=online_dpo",
        *[f"model.tiny.{k}={v}" for k, v in SPEC.items()], "task.name=test_char_a", "task.train_size=200",
        "task.test_size=16", f"sft.data_file={tmp_path / 'sft.jsonl'}", "sft.steps=40", "sft.lr=3e-3",
        "sft.warmup_steps=5", "sft.schedule=constant", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=8",
        "eval.samples=4", "eval.pass_k=[1]", "online.iterations=3", "online.prompts=32", "online.source=judge",
        f"online.judge_model={tmp_path / 'judge'}", "online.epochs=2", "pref.batch_size=16", "pref.beta=0.1",
        "optim.lr=1e-3"])
    summary = train(cfg)
    scores = summary["eval_score_mean"]  # the judge's mean score of held-out samples: before, after 1, 2, 3
    print("seed", SEED, "judge mean", scores, "sample accuracy", summary["sample_accuracy"])
    assert len(scores) == 4 and all(b > a for a, b in zip(scores, scores[1:])), scores
    # the judge tracks the known preference: the policy's own samples contain more "a" as it improves
    assert summary["sample_accuracy"][-1] > summary["sample_accuracy"][0] + 0.2, summary["sample_accuracy"]
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["pairs"] > 0 for r in rows)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_000003"


def _judge_rows(rng: random.Random, n: int) -> list[tuple[dict, str]]:
    """Judge prompts built exactly as judge_scores builds them, answered " Yes" iff at least half the
    response is "a" (the task's own verifier, CharCountTask.is_correct)."""
    rows = []
    for _ in range(n):
        r = _strings(rng, 1, 8)
        if rng.random() < 0.15:
            r = "a" * len(r)
        rows.append(({"prompt": judge_prompt(f"{rng.randrange(10**6)}:", r, "chat")},
                     " Yes" if 2 * r.count("a") >= len(r) else " No"))
    return rows


def _self_judging_policy(path, seed: int) -> None:
    """One tiny model that both writes strings over "abc" and judges them: 60 SFT steps on 1600 judge prompts,
    then 40 steps on 400 random strings mixed with 400 of the judge prompts (one mixed stage from the start
    never learns to judge: its scores stay flat, see docs/preference.md)."""
    rng = random.Random(1000 + seed)
    judge = _judge_rows(rng, 1600)
    strings = [({"prompt": f"{rng.randrange(10**6)}:"}, _strings(rng, 2, 6)) for _ in range(400)]
    model, tok = build_tiny_model(TinyModelSpec(num_kv_heads=4, **SPEC), build_char_tokenizer(), seed=seed + 1)
    run_sft(model, tok, sft_episodes(tok, judge, False), steps=60, batch_size=32, lr=3e-3, warmup_steps=5,
            schedule="constant", seed=seed)
    run_sft(model, tok, sft_episodes(tok, strings + judge[:400], False), steps=40, batch_size=32, lr=1e-3,
            warmup_steps=0, schedule="constant", seed=seed + 1)
    save_model(model, tok, path)


def _judge_auc(path, seed: int) -> float:
    """AUC of the model's own judge score (p_yes/(p_yes+p_no)) separating held-out mostly-"a" strings from the
    rest (pairs of tied scores count 1/2)."""
    from llmrl.models.loading import load_model, load_tokenizer
    from llmrl.rewards.judge import judge_scores

    rng = random.Random(99 + seed)
    resp = [_strings(rng, 2, 6) for _ in range(200)]
    scores = judge_scores(load_model(str(path)), load_tokenizer(str(path)),
                          [(f"{rng.randrange(10**6)}:", r) for r in resp])
    pos = [x for x, r in zip(scores, resp) if 2 * r.count("a") >= len(r)]
    neg = [x for x, r in zip(scores, resp) if 2 * r.count("a") < len(r)]
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


def test_self_judged_online_dpo_raises_its_own_judge_score_on_each_iteration(tmp_path):
    """IPO's setting: the policy is its own Yes/No judge (online.judge_model null) and, with self_judge=current,
    the judge is the current iterate, updated by every DPO step."""
    torch.set_num_threads(1)
    _self_judging_policy(tmp_path / "policy", SEED)
    auc_before = _judge_auc(tmp_path / "policy", SEED)
    assert auc_before > 0.95, auc_before  # the judging skill is real before RL (measured 0.997-1.0)
    cfg = load_config(None, [
        "progress=false", "threads=1", f"seed={SEED}", f"output_dir={tmp_path / 'run'}", "trainer=online_dpo",
        f"model.path={tmp_path / 'policy'}", "task.name=test_char_a", "task.train_size=200", "task.test_size=16",
        "rollout.samples_per_prompt=4", "rollout.max_new_tokens=8", "eval.samples=4", "eval.pass_k=[1]",
        "online.iterations=3", "online.prompts=32", "online.source=judge", "online.self_judge=current",
        "online.epochs=2", "pref.batch_size=16", "pref.beta=0.1", "optim.lr=5e-4"])
    summary = train(cfg)
    scores = summary["eval_score_mean"]  # the policy's own judge score of held-out samples: before, after 1, 2, 3
    evals = sorted(read_metrics(tmp_path / "run" / "metrics.jsonl", "eval"), key=lambda r: r["step"])
    auc_after = _judge_auc(tmp_path / "run" / "final_model", SEED)
    print("seed", SEED, "self-judge AUC", auc_before, "->", auc_after, "judge mean", scores,
          "held-out pass@1", [r["pass@1"] for r in evals])
    assert summary["source"] == "judge (self)"
    assert len(scores) == 4 and all(b > a for a, b in zip(scores, scores[1:])), scores
    # the self-judge tracks the true preference: held-out samples are mostly "a" far more often ...
    assert evals[-1]["pass@1"] > evals[0]["pass@1"] + 0.3, [r["pass@1"] for r in evals]
    # ... and DPO on its own judgements did not destroy the judging skill
    assert auc_after > 0.9, auc_after


SMALL = ["progress=false", "threads=1", "model.tiny.hidden_size=32", "model.tiny.num_layers=2",
         "model.tiny.num_heads=2", "model.tiny.intermediate_size=64", "model.tiny.max_position_embeddings=192",
         "task.name=test_char_a", "task.train_size=32", "task.test_size=4", "eval.samples=2", "eval.pass_k=[1]",
         "rollout.samples_per_prompt=4", "rollout.max_new_tokens=6", "online.prompts=4", "pref.batch_size=4"]


def test_clamp_pairs_with_dpop_and_previous_reference_then_resume(tmp_path):
    over = [*SMALL, f"output_dir={tmp_path / 'run'}", "trainer=online_dpo", "online.source=reward",
            "online.pairing=clamp", "online.top_frac=0.25", "online.bottom_frac=0.25", "online.reference=previous",
            "pref.loss_type=dpop", "optim.lr=1e-3", "rollout.samples_per_prompt=8", "online.prompts=8",
            "sft.steps=15", "sft.lr=3e-3", "sft.batch_size=8"]  # a short warm start on "aaaa": scores vary
    train(load_config(None, [*over, "online.iterations=1"]))
    summary = train(load_config(None, [*over, "online.iterations=2"]), resume=True)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")
    assert [r["step"] for r in rows] == [1, 2]
    # 8 completions, k = round(0.25 * 8) = 2 chosen x 2 rejected per prompt: at most 32 pairs from 8 prompts
    assert all(0 < r["pairs"] <= 32 and "dpop/penalty" in r for r in rows), rows
    assert len(summary["eval_score_mean"]) == 3 and summary["pairing"] == "clamp"


def test_onpo_two_regressions_on_the_same_pairs(tmp_path):
    cfg = load_config(None, [*SMALL, f"output_dir={tmp_path / 'run'}", "trainer=onpo", "online.iterations=1",
                             "online.source=pairwise_judge", "online.pairing=oracle_pairs", "online.eta=2.0",
                             "online.epochs=4", "optim.lr=3e-3"])
    summary = train_onpo(cfg)
    rec = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")[0]
    # each regression starts at its anchor, where g = 0 and the loss is target^2 = (eta/2)^2 = 1; both go down
    assert rec["pairs"] > 0 and rec["prime/loss"] < 1.0 and rec["loss"] < 1.0, rec
    assert rec["prime/steps"] == rec["steps"]  # the same pairs, the same number of steps
    assert rec["prime/onpo/g"] > 0 and rec["onpo/g"] > 0  # g moves from 0 toward the target 1
    state = torch.load(latest_checkpoint(tmp_path / "run" / "checkpoints") / "state.pt", weights_only=False)
    final = {n: q for n, q in _final_params(tmp_path / "run" / "final_model").items()}
    changed = [n for n, q in state["prime"].items() if n in final and not torch.equal(q, final[n])]
    assert changed, "pi_{t+1} must differ from pi'_{t+1} (the second regression moved it)"
    assert summary["trainer"] == "onpo" and summary["eval_win_rate"][0] is None
    assert 0.0 <= summary["eval_win_rate"][-1] <= 1.0


def test_onpo_objective_is_the_regression_by_hand():
    from llmrl.preference.online import OnpoObjective, onpo_objective

    obj = onpo_objective(load_config(None, ["trainer=onpo", "online.eta=1.0"]))  # target eta/2 = 0.5 -> beta = 1
    assert isinstance(obj, OnpoObjective) and obj.beta == 1.0 and not obj.average
    logps = torch.tensor([-1.0, -2.0, -3.0, -1.5])  # chosen rows, then rejected rows
    anchor = torch.tensor([[-1.5, -2.5], [-2.0, -1.0]])  # [pair, (chosen, rejected)]
    losses, metrics = obj(logps, anchor, torch.tensor([3, 1, 2, 2]))
    # g = (-1 + 3) - (-1.5 + 2.5) = 1 and (-2 + 1.5) - (-2 + 1) = 0.5; (g - 0.5)^2 = 0.25, 0
    assert losses.tolist() == pytest.approx([0.25, 0.0]) and float(metrics["onpo/g"]) == pytest.approx(0.75)
    assert onpo_objective(load_config(None, ["trainer=onpo", "online.eta=1.0", "online.target=inv_2eta"])).beta == 1.0
    assert onpo_objective(load_config(None, ["trainer=onpo", "online.eta=4.0", "online.target=inv_2eta"])).beta == 4.0


def _final_params(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("over, key", [
    (["online.pairing=oracle_pairs", "online.source=judge"], "online.pairing"),
    (["online.source=reward_model"], "online.reward_model"),
    (["online.target=eta"], "online.target"),
    (["online.top_frac=0.7"], "online.top_frac"),
])
def test_bad_online_config_names_the_key(over, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, ["trainer=online_dpo", *over])


def test_summary_records_the_source(tmp_path):
    cfg = load_config(None, [*SMALL, f"output_dir={tmp_path / 'run'}", "trainer=online_dpo", "online.iterations=1",
                             "online.source=judge", "online.self_judge=initial", "pref.loss_type=ipo"])
    summary = train(cfg)
    assert summary["source"] == "judge (self)"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["iterations"] == 1
