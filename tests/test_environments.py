"""Environment episodes are token-in/token-out: the trained sequence is the prompt, the sampled tokens exactly,
and only the environment's rendered messages in between (loss_mask 0, no gradient); budgets; training runs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from chat_templates import chat_tokenizer

from llmrl.algos import aggregate
from llmrl.algos.losses import ppo_clip
from llmrl.config import load_config
from llmrl.core.ops import token_logprobs
from llmrl.core.types import Batch, Episode
from llmrl.models.loading import encode_prompt, render_prompt
from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.rl.loop import train
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.rollout.chat_tokens import closing_tokens, continuation_tokens, render_messages
from llmrl.rollout.multiturn import RetryEnvironment, finish_turn_rewards, rollout_episodes
from llmrl.rollout.sampler import KVCacheSampler
from llmrl.rollout.tools import ToolUseEnvironment
from llmrl.train.metrics import read_metrics

SPEC = TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64)
CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "3+4"}}\n</tool_call>'


class SevenTask:
    """is_correct: the completion is "7"."""

    def is_correct(self, completion: str, sample: dict[str, Any]) -> bool:
        return completion.strip() == "7"


class Scripted:
    """A generator whose turn t is ``turns[t] = (text, stopped on EOS)`` for every prompt."""

    def __init__(self, tok: Any, turns: list[tuple[str, bool]]) -> None:
        self.tok, self.turns, self.t, self.prompts = tok, turns, 0, []

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        text, eos = self.turns[self.t]
        self.t += 1
        self.prompts.append([list(p) for p in prompts])
        ids = self.tok.encode(text, add_special_tokens=False) + ([self.tok.eos_token_id] if eos else [])
        return [[Generation(ids, [-0.5] * len(ids), text, "stop" if eos else "length")] for _ in prompts]


class Recording:
    """Wraps a generator and keeps every generation it returned, in order."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.out, self.calls = inner, [], []

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        gens = self.inner.generate(prompts, params)
        self.calls.append((len(prompts), params.n))
        self.out.append([x for g in gens for x in g])  # episode order: sample-major, its n samples in a row
        return gens


def _enc(tok: Any, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def _policy_positions(ep: Episode) -> set[int]:
    return {i for s, e in ep.turn_spans for i in range(s, e)}


def test_tool_use_on_qwen25_is_token_exact():
    tok = chat_tokenizer("qwen25")
    eos = tok.eos_token_id
    q = {"prompt": "What is 3+4?", "answer": "7"}
    gen = Scripted(tok, [(CALL, True), ("7", False)])
    ep, = rollout_episodes(gen, tok, [q], SamplingParams(max_new_tokens=80), lambda: ToolUseEnvironment(SevenTask()),
                           chat_template=None, max_turns=4)
    schemas = ToolUseEnvironment(SevenTask()).tools
    prompt = encode_prompt(tok, render_messages(tok, [{"role": "user", "content": q["prompt"]}],
                                                add_generation_prompt=True, tools=schemas))
    env_text = "\n<|im_start|>user\n<tool_response>\n7\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    want = prompt + _enc(tok, CALL) + [eos] + _enc(tok, env_text) + _enc(tok, "7")
    assert ep.tokens == want
    assert gen.prompts[1] == [want[: -1]]  # the second turn was generated from exactly these tokens
    n1 = len(_enc(tok, CALL)) + 1
    assert ep.turn_spans == [(len(prompt), len(prompt) + n1), (len(want) - 1, len(want))]
    assert [i for i, m in enumerate(ep.loss_mask) if m] == sorted(_policy_positions(ep))
    assert all((lp == -0.5) == bool(m) for lp, m in zip(ep.logprobs, ep.loss_mask))
    # with this template the sequence is also the template's own tokens of the whole conversation
    conv = [{"role": "user", "content": q["prompt"]}, {"role": "assistant", "content": CALL},
            {"role": "tool", "content": "7"}]
    assert ep.tokens == encode_prompt(tok, render_messages(tok, conv, add_generation_prompt=True, tools=schemas)) + _enc(tok, "7")
    assert ep.metadata["stop"] == "done" and ep.completion == "7" and ep.metadata["env_rewards"] == [0.0, 0.0]


@pytest.mark.parametrize("name", ["smollm2", "qwen25", "llama3"])
def test_retry_on_chat_templates_closes_turns_and_is_token_exact(name):
    tok = chat_tokenizer(name)
    env = RetryEnvironment(SevenTask())
    gen = Scripted(tok, [("6", False), ("7", True), ("7", False)])  # turn 1 stopped by length: no end marker
    ep, = rollout_episodes(gen, tok, [{"prompt": "3+4?"}], SamplingParams(max_new_tokens=4),
                           lambda: RetryEnvironment(SevenTask()), chat_template=True, max_turns=3)
    end = tok.eos_token_id
    hist = [{"role": "user", "content": "3+4?"}, {"role": "assistant", "content": "6"}]
    cont1 = continuation_tokens(tok, hist, [{"role": "user", "content": env.wrong}], chat_template=True)
    hist += [{"role": "user", "content": env.wrong}, {"role": "assistant", "content": "7"}]
    cont2 = continuation_tokens(tok, hist, [{"role": "user", "content": env.right}], chat_template=True)
    prompt = encode_prompt(tok, render_prompt(tok, {"prompt": "3+4?"}, True))
    assert ep.tokens == prompt + _enc(tok, "6") + [end] + cont1 + _enc(tok, "7") + [end] + cont2 + _enc(tok, "7")
    # the closing marker of turn 1 is the environment's (mask 0); the sampled one of turn 2 is the policy's
    s1, e1 = ep.turn_spans[0]
    assert ep.tokens[e1] == end and ep.loss_mask[e1] == 0 and ep.loss_mask[ep.turn_spans[1][1] - 1] == 1
    if name == "smollm2":  # hand-written: SmolLM2's default system prompt is not repeated in the continuation
        assert tok.decode(cont1) == "\n<|im_start|>user\n\nWrong, again: <|im_end|>\n<|im_start|>assistant\n"
    assert ep.metadata["turn_texts"] == ["6", "7", "7"] and ep.metadata["stop"] == "max_turns"


def test_tags_tool_use_without_template():
    tok = build_char_tokenizer()
    gen = Scripted(tok, [("<calc>3+4</calc>", False), ("7", False)])
    ep, = rollout_episodes(gen, tok, [{"prompt": "3+4="}], SamplingParams(max_new_tokens=20),
                           lambda: ToolUseEnvironment(SevenTask(), format="tags"), chat_template=None, max_turns=3)
    assert tok.decode(ep.tokens) == "3+4=<calc>3+4</calc><result>7</result>7"
    assert "".join(tok.decode([t]) for t, m in zip(ep.tokens, ep.loss_mask) if m) == "<calc>3+4</calc>7"


def test_real_model_retry_on_a_chat_template_sampled_tokens_kept_and_no_environment_gradient():
    tok = chat_tokenizer("qwen25")
    model, tok = build_tiny_model(SPEC, tok, seed=0)
    gen = Recording(KVCacheSampler(model, tok))
    samples = [{"prompt": f"{a}+{b}?"} for a, b in ((1, 2), (3, 4), (5, 6))]
    eps = rollout_episodes(gen, tok, samples, SamplingParams(max_new_tokens=6, n=2, seed=0),
                           lambda: RetryEnvironment(SevenTask()), chat_template=None, max_turns=3)
    assert len(eps) == 6 and len(gen.out) == 3
    assert gen.calls == [(3, 2), (6, 1), (6, 1)]  # turn 1: each prompt once with n=2; then every episode
    for j, ep in enumerate(eps):
        history = [{"role": "user", "content": ep.sample["prompt"]}]
        want = encode_prompt(tok, render_prompt(tok, ep.sample, None))
        for t, g in enumerate(o[j] for o in gen.out):  # every turn: the sampled ids, then the environment's
            assert ep.tokens[slice(*ep.turn_spans[t])] == g.token_ids
            want += g.token_ids
            history.append({"role": "assistant", "content": g.text})
            if t < 2:
                new = [{"role": "user", "content": "\nRight, repeat: " if g.text.strip() == "7" else "\nWrong, again: "}]
                want += closing_tokens(tok, g.token_ids, chat_template=True)
                want += continuation_tokens(tok, history, new, chat_template=True)
                history += new
        assert ep.tokens == want
        assert [i for i, m in enumerate(ep.loss_mask) if m] == sorted(_policy_positions(ep))
    # gradient w.r.t. the logits: exactly 0 at every prompt / environment / closing target, > 0 on policy ones
    batch = Batch.collate(eps, tok.pad_token_id)
    logits = model(input_ids=batch.input_ids).logits[:, :-1]
    logits.retain_grad()
    lp = token_logprobs(logits, batch.input_ids[:, 1:])
    per_tok, _ = ppo_clip(lp, batch.old_logprobs, torch.randn(batch.mask.shape) * batch.mask, batch.mask)
    aggregate(per_tok, batch.mask, "token-mean").backward()
    g = logits.grad.abs().sum(-1)
    assert (g[batch.mask == 0] == 0).all() and (g[batch.mask == 1] > 0).float().mean() > 0.9


def test_budgets_and_turn_rewards():
    tok = build_char_tokenizer()
    gen = Scripted(tok, [("6", False)] * 4)
    ep, = rollout_episodes(gen, tok, [{"prompt": "3+4="}], SamplingParams(max_new_tokens=3),
                           lambda: RetryEnvironment(SevenTask()), chat_template=None, max_turns=4,
                           max_episode_tokens=30)
    # 4 + 1 = 5 tokens, + 15 ("\nWrong, again: ") + 3 = 23 <= 30: turn 2; then 21 + 15 + 3 > 30: budget
    assert len(ep.turn_spans) == 2 and ep.metadata["stop"] == "token_budget" and len(ep.tokens) <= 30
    ep.reward = 1.0
    ep.metadata["env_rewards"] = [0.25, -0.5]
    finish_turn_rewards(ep)
    assert ep.metadata["turn_rewards"] == [0.25, 0.5] and ep.reward == 0.75 and ep.reward_components["env"] == -0.25
    with pytest.raises(ValueError, match="max_turns must be >= 1"):
        rollout_episodes(gen, tok, [], SamplingParams(), lambda: RetryEnvironment(SevenTask()), chat_template=None,
                         max_turns=0)


def test_environment_ends_the_episode_itself():
    tok = build_char_tokenizer()
    gen = Scripted(tok, [("6", False)] * 3)
    ep, = rollout_episodes(gen, tok, [{"prompt": "q"}], SamplingParams(max_new_tokens=3),
                           lambda: RetryEnvironment(SevenTask(), max_turns=2), chat_template=None, max_turns=3)
    assert len(ep.turn_spans) == 2 and ep.metadata["stop"] == "done" and gen.t == 2


@pytest.mark.parametrize("advantage", ["grpo_turn", "rloo_turn"])
def test_turn_level_training_runs(tiny_overrides, advantage):
    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=3", "optim.lr=1e-2", "rollout.env=retry",
                             "rollout.max_turns=3", "rollout.max_episode_tokens=40", f"algo.advantage={advantage}",
                             "algo.advantage_options={gamma: 0.9}"])
    train(cfg)
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    assert len(rows) == 3 and sum(r["grad_norm"] > 0 for r in rows) >= 2  # (a step whose rewards are all 0: none)
    assert rows[-1]["length"] > 6  # more than one policy turn per episode


def test_turn_rewards_of_a_row_the_overlong_filter_dropped_are_skipped():
    from llmrl.algos.turn_rewards import turn_token_rewards

    mask = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.float32)  # row 1: filtered out
    r = turn_token_rewards([[0.5, 1.0], [2.0]], [[(2, 4), (5, 6)], [(2, 4)]], mask)
    assert r.tolist() == [[0, 0, 0.5, 0, 1.0], [0, 0, 0, 0, 0]]


def test_length_penalty_reaches_environment_episodes(tiny_overrides, monkeypatch):
    import llmrl.rl.loop as loop

    seen, place = [], loop.turn_token_rewards
    monkeypatch.setattr(loop, "turn_token_rewards", lambda rows, *rest: (seen.append(rows), place(rows, *rest))[1])
    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=1", "rollout.env=retry",
                             "rollout.max_turns=2", "algo.length_penalty={threshold: 1, coef: 100.0}"])
    train(cfg)
    # task rewards are in [0, 1]; every episode has >= 2 policy tokens, so its penalised score is <= 1 − 100,
    # and that score (score − Σ turn rewards added to the last turn) is what the turns sum to
    assert len(seen) == 1 and all(len(row) == 2 and sum(row) <= -99 for row in seen[0])


def test_tool_use_training_runs(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=2", "rollout.env=tool_use",
                             "rollout.env_options={format: tags, tools: [calculator, python]}", "rollout.max_turns=2"])
    train(cfg)
    assert len(read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")) == 2


def test_multiturn_benchmark_smoke(capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "multiturn.py"
    spec = importlib.util.spec_from_file_location("multiturn_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        out = bench.main(["--prompts", "2", "--n", "2", "--turn-tokens", "3", "--warmup", "0", "--runs", "1", "--json"])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(capsys.readouterr().out) == out and out["sampled_tokens"] == 9 and out["episodes"] == 4
    assert all(row["episodes_per_s"] > 0 for row in out["rows"].values())
