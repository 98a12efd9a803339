"""Multi-agent discussions (MAPoRL): token-exact per-agent episodes, the reward of §13 by hand, per-round
token rewards, and a short run of the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmrl.algos import aggregate
from llmrl.algos.losses import ppo_clip
from llmrl.algos.turn_rewards import turn_token_rewards
from llmrl.config import load_config
from llmrl.core.errors import ConfigError
from llmrl.core.ops import token_logprobs
from llmrl.core.types import Batch
from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.rewards.pool import task_pool
from llmrl.rollout.agents import discuss, discussion_message, maporl_rewards, turn_rewards_from_returns
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.rollout.sampler import KVCacheSampler
from llmrl.tasks import get_task
from llmrl.train.agent_collect import score_discussions
from llmrl.train.config import AgentsConfig
from tests.chat_templates import chat_tokenizer

ROOT = Path(__file__).resolve().parent.parent
G = 0.3


class Scripted:
    """A generator answering from a script: ``answer(agent_call_index, prompt_ids) -> (text, stop_with_eos)``;
    counts its calls and records every sampled id list."""

    def __init__(self, tok, answer):
        self.tok, self.answer, self.calls, self.batch_sizes, self.seeds = tok, answer, 0, [], []

    def generate(self, prompts, params):
        self.calls += 1
        self.seeds.append(params.seed)
        self.batch_sizes.append(len(prompts))
        out = []
        for k, p in enumerate(prompts):
            text, eos = self.answer(k, p)
            ids = self.tok.encode(text, add_special_tokens=False) + ([self.tok.eos_token_id] if eos else [])
            lps = [-0.1 * (i + 1) for i in range(len(ids))]
            out.append([Generation(ids, lps, text, "stop" if eos else "length")])
        return out


# ------------------------------------------------------------------------------------------- reward of §13
@pytest.mark.parametrize("scores, expected", [
    # all right in every round: 1 everywhere
    ([[1, 1], [1, 1], [1, 1]], [[1, 1], [1, 1], [1, 1]]),
    # agent 1 wrong in round 0 only: R_0,1 = (0 + 0.3·1 + 0.09·1) / 1.39
    ([[1, 0], [1, 1], [1, 1]], [[1, 0.39 / 1.39], [1, 1], [1, 1]]),
    # means 0.5 in rounds 1 and 2: R_0 = (0 + 0.15 + 0.045) / 1.39; R_1,0 = (1 + 0.15) / 1.3; R_1,1 = 0.15 / 1.3
    ([[0, 0], [1, 0], [0, 1]], [[0.195 / 1.39, 0.195 / 1.39], [1.15 / 1.3, 0.15 / 1.3], [0, 1]]),
    # missing answers (None) get -10 and count 0 in the later means: R_0,1 = (1 + 0.3·1 + 0.09·0.5) / 1.39
    ([[None, 1], [1, 1], [1, None]], [[-10, 1.345 / 1.39], [1.15 / 1.3, 1.15 / 1.3], [1, -10]]),
])
def test_maporl_reward_by_hand(scores, expected):
    got = maporl_rewards(scores, G)
    assert len(got) == 3 and all(len(r) == 2 for r in got)
    for row, want in zip(got, expected):
        assert row == pytest.approx(want, abs=1e-9)


def test_maporl_reward_gamma_and_bad_input():
    # gamma 0: only the agent's own score; gamma 1: the plain mean over the remaining rounds
    assert maporl_rewards([[0, 1], [1, 1]], 0.0) == [[0, 1], [1, 1]]
    assert sum(maporl_rewards([[0, 1], [1, 0]], 1.0), []) == pytest.approx([0.25, 0.75, 1, 0])
    assert maporl_rewards([[None]], G, missing=-3.0) == [[-3.0]]
    with pytest.raises(ValueError, match="gamma"):
        maporl_rewards([[1, 1]], 1.5)
    with pytest.raises(ValueError, match="every round needs 2"):
        maporl_rewards([[1, 1], [1]], G)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        maporl_rewards([[2, 1]], G)


def test_turn_rewards_telescope_and_placement():
    assert turn_rewards_from_returns([0.5, 0.8, 1.0]) == pytest.approx([-0.3, -0.2, 1.0])
    # row 0: tokens 0-1 prompt, turns [2,4) [6,7) → last tokens 3, 6 → shifted positions 2, 5
    mask = torch.tensor([[0, 1, 1, 0, 0, 1, 0.0], [0, 1, 1, 1, 1, 1, 1.0]])
    spans = [[(2, 4), (6, 7)], [(2, 8)]]
    r = turn_token_rewards([[2.0, -1.0], [5.0]], spans, mask)
    assert r.tolist() == [[0, 0, 2.0, 0, 0, -1.0, 0], [0, 0, 0, 0, 0, 0, 5.0]]
    kl = torch.ones_like(mask)
    assert turn_token_rewards([[2.0, -1.0], [5.0]], spans, mask, kl, 0.5)[0].tolist() == [0, -0.5, 1.5, 0, 0, -1.5, 0]
    # the return-to-go (γ = 1) of every token of turn t is R_t
    R = [0.5, 0.8]
    r = turn_token_rewards([turn_rewards_from_returns(R)], spans[:1], mask[:1])
    togo = r.flip(-1).cumsum(-1).flip(-1)[0]
    assert togo[1].item() == pytest.approx(0.5) and togo[5].item() == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"turn \[2, 9\) has no target position"):
        turn_token_rewards([[1.0], [1.0]], [[(2, 4)], [(2, 9)]], mask)
    with pytest.raises(ValueError, match="2 turn rewards for 1 turns"):
        turn_token_rewards([[1.0, 2.0], [1.0]], [[(2, 4)], [(2, 8)]], mask)


# ---------------------------------------------------------------------------------- the discussion driver
def _check_exact(ep, sampled: list[list[int]], lps: list[list[float]]):
    """Mask 1 exactly on the turn spans, which hold the sampled ids and log-probs as sampled."""
    assert [ep.tokens[s:e] for s, e in ep.turn_spans] == sampled
    assert [ep.logprobs[s:e] for s, e in ep.turn_spans] == lps
    on = {i for s, e in ep.turn_spans for i in range(s, e)}
    assert [i for i, m in enumerate(ep.loss_mask) if m] == sorted(on)
    assert all(ep.logprobs[i] == 0.0 for i in range(len(ep.tokens)) if i not in on)


def test_plain_discussion_is_token_exact_and_batched():
    tok = build_char_tokenizer()
    task = get_task("arithmetic", digits=2, ops=["+"])
    samples = task.samples(3, "train", 0)
    gen = Scripted(tok, lambda k, p: (f"{k % 10}{len(p)}", k % 2 == 0))  # even rows stop on EOS
    params = SamplingParams(max_new_tokens=4, n=2, seed=5)
    eps = discuss([gen, gen], tok, samples, params, rounds=3, chat_template=None, template="|{answers}|{question}",
                  answer_template="{answer}", separator=",")
    assert gen.calls == 3 and gen.batch_sizes == [12, 12, 12]  # one call per round: 3 samples × 2 × 2 agents
    assert gen.seeds == [5, 6, 7]
    assert len(eps) == 12
    for j, ep in enumerate(eps):
        i, k, a = j // 4, (j // 2) % 2, j % 2
        assert (ep.agent_id, ep.metadata["agent"], ep.metadata["discussion"]) == (a, a, k)
        assert ep.group_id == i * 2 + a and ep.sample is samples[i]
        assert ep.metadata["turn_rounds"] == [0, 1, 2] and len(ep.turn_spans) == 3
        sampled = [tok.encode(t) + ([tok.eos_token_id] if int(t[0]) % 2 == 0 else []) for t in ep.metadata["turn_texts"]]
        _check_exact(ep, sampled, [[-0.1 * (n + 1) for n in range(len(s))] for s in sampled])
        # what sits between the turns is exactly the other agent's previous answer and the question
        partner = eps[j + 1 - 2 * a]
        for r in (1, 2):
            between = ep.tokens[ep.turn_spans[r - 1][1] : ep.turn_spans[r][0]]
            assert between == tok.encode(f"|{partner.metadata['turn_texts'][r - 1]}|{samples[i]['prompt']}")
        assert ep.tokens[: ep.prompt_len] == tok.encode(samples[i]["prompt"])
        assert ep.completion == ep.metadata["turn_texts"][-1]


def test_separate_generators_one_call_per_round_each():
    tok = build_char_tokenizer()
    samples = get_task("arithmetic", digits=1, ops=["+"]).samples(2, "train", 0)
    g0, g1 = Scripted(tok, lambda k, p: ("1", True)), Scripted(tok, lambda k, p: ("2", True))
    eps = discuss([g0, g1], tok, samples, SamplingParams(n=1, seed=7), rounds=2, chat_template=None)
    assert (g0.calls, g1.calls, g0.batch_sizes, g1.batch_sizes) == (2, 2, [2, 2], [2, 2])
    assert (g0.seeds, g1.seeds) == ([7, 9], [8, 10])  # two policies never share a round's seed
    assert [e.metadata["turn_texts"] for e in eps] == [["1", "1"], ["2", "2"]] * 2
    # agent 0 is shown agent 1's answer (the default template), and the other way round
    assert tok.decode(eps[0].tokens[eps[0].turn_spans[0][1] : eps[0].turn_spans[1][0]]) == discussion_message(
        samples[0], 0, ["1", "2"])
    assert "Agent 2: 2" in discussion_message(samples[0], 0, ["1", "2"])
    with pytest.raises(ValueError, match="at least 2 agents"):
        discuss([g0], tok, samples, SamplingParams(), rounds=2, chat_template=None)


def test_chat_template_discussion_is_token_exact():
    """SmolLM2's ChatML template: the episode decodes to the template's rendering of the whole discussion,
    with the sampled turns as sampled; a turn cut by length gets the end-of-turn marker with mask 0."""
    tok = chat_tokenizer("smollm2")
    samples = [{"prompt": "What is 2+3?", "answer": "5"}]
    gen = Scripted(tok, lambda k, p: ("The answer is 5." if k == 0 else "It is 6", k == 0))
    eps = discuss([gen, gen], tok, samples, SamplingParams(n=1), rounds=2, chat_template=None, roles=["A", "B"])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for a, ep in enumerate(eps):
        mine = ("The answer is 5." if a == 0 else "It is 6")
        other = ("It is 6" if a == 0 else "The answer is 5.")
        sampled = [tok.encode(mine) + ([end] if a == 0 else [])] * 2
        _check_exact(ep, sampled, [[-0.1 * (n + 1) for n in range(len(sampled[0]))]] * 2)
        msgs = [{"role": "system", "content": "AB"[a]}, {"role": "user", "content": "What is 2+3?"},
                {"role": "assistant", "content": mine},
                {"role": "user", "content": discussion_message(samples[0], a, ["The answer is 5.", "It is 6"])},
                {"role": "assistant", "content": mine}]
        text = tok.apply_chat_template(msgs, tokenize=False)
        want = text.removesuffix("\n") if a == 0 else text.removesuffix("<|im_end|>\n")
        assert tok.decode(ep.tokens) == want
        assert f"Agent {2 - a}: {other}" in tok.decode(ep.tokens[ep.turn_spans[0][1] : ep.turn_spans[1][0]])
        if a == 1:  # cut by length: the marker follows the sampled turn, not trained on
            s, e = ep.turn_spans[0]
            assert ep.tokens[e] == end and ep.loss_mask[e] == 0


def test_other_agents_tokens_get_no_gradient():
    tok = build_char_tokenizer()
    model, tok = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                                intermediate_size=64, max_position_embeddings=128), tok, seed=0)
    samples = get_task("arithmetic", digits=2, ops=["+"]).samples(3, "train", 0)
    gen = KVCacheSampler(model, tok)
    eps = discuss([gen, gen], tok, samples, SamplingParams(max_new_tokens=4, temperature=1.0, n=2, seed=0),
                  rounds=3, chat_template=None, template="|{answers}|{question}", answer_template="{answer}")
    assert len(eps) == 12 and all(len(e.turn_spans) == 3 for e in eps)
    batch = Batch.collate(eps, tok.pad_token_id)
    # the sampler's log-probs are the model's: recompute them on the trained sequence
    logits = model(input_ids=batch.input_ids).logits[:, :-1]
    lp = token_logprobs(logits, batch.input_ids[:, 1:])
    assert torch.allclose((lp * batch.mask), batch.old_logprobs * batch.mask, atol=1e-4)
    logits.retain_grad()
    per_tok, _ = ppo_clip(lp, batch.old_logprobs, torch.randn(batch.mask.shape) * batch.mask, batch.mask)
    aggregate(per_tok, batch.mask, "token-mean").backward()
    g = logits.grad.abs().sum(-1)
    assert (g[batch.mask == 0] == 0).all()
    assert (g[batch.mask == 1] > 0).float().mean() > 0.9


# -------------------------------------------------------------------------------- scoring a discussion
def test_score_discussions_with_the_task_verdicts():
    tok = build_char_tokenizer()
    task = get_task("arithmetic", digits=2, ops=["+"])
    s = {**task.samples(1, "train", 0)[0]}
    right, wrong = s["answer"], str(int(s["answer"]) + 1)
    script = {0: [wrong, right, right], 1: ["x", wrong, right]}  # agent 1 starts malformed ("x": no integer)
    calls = {"n": 0}

    def answer(k, p):
        return script[k % 2][calls["n"]], True

    class Gen(Scripted):
        def generate(self, prompts, params):
            res = super().generate(prompts, params)
            calls["n"] += 1
            return res

    eps = discuss([Gen(tok, answer)] * 2, tok, [s], SamplingParams(n=1), rounds=3, chat_template=None)
    agents = AgentsConfig(count=2, rounds=3, gamma=G)
    score_discussions(eps, agents, task_pool(task))
    e0, e1 = eps
    assert e0.metadata["round_correct"] == [False, True, True] and e1.metadata["round_well_formed"] == [False, True, True]
    # round means: 0, 0.5, 1 (the malformed answer counts 0)
    R0 = [(0 + 0.3 * 0.5 + 0.09) / 1.39, (1 + 0.3) / 1.3, 1.0]
    R1 = [-10.0, (0 + 0.3) / 1.3, 1.0]
    assert e0.metadata["maporl_rewards"] == pytest.approx(R0) and e1.metadata["maporl_rewards"] == pytest.approx(R1)
    assert e1.metadata["turn_rewards"] == pytest.approx([R1[0] - R1[1], R1[1] - R1[2], R1[2]])
    assert (e0.reward, e1.reward) == (pytest.approx(R0[0]), -10.0)
    assert e0.metadata["correct"] and e1.metadata["correct"]


# --------------------------------------------------------------------------------------- config and run
def test_agents_config_errors(tiny_overrides):
    def load(*extra):
        return load_config(str(ROOT / "recipes" / "maporl.yaml"), [*tiny_overrides, *extra])

    with pytest.raises(ConfigError, match="rollout.agents.count: a discussion needs at least 2 agents"):
        load("rollout.agents.count=1")
    with pytest.raises(ConfigError, match="rollout.agents.roles: needs one role per agent"):
        load("rollout.agents.roles=[a]")
    with pytest.raises(ConfigError, match="rollout.agents.template: may only use the fields"):
        load("rollout.agents.template=x{others}")
    with pytest.raises(ConfigError, match="do not combine with rollout.env"):
        load("rollout.env=retry")


def test_maporl_recipe_two_steps(tiny_overrides, tmp_path):
    from llmrl.rl.loop import train

    cfg = load_config(str(ROOT / "recipes" / "maporl.yaml"),
                      [*tiny_overrides, "steps=2", "sft.steps=5", "save_every=0", "task.train_size=64",
                       "task.test_size=8", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
                       "model.tiny.max_position_embeddings=96"])
    summary = train(cfg)
    for when in ("before", "after"):
        ev = summary[when]
        assert {"discussion/accuracy_round0", "discussion/accuracy_round2", "discussion/single",
                "discussion/final"} <= ev.keys()
    rows = [json.loads(x) for x in Path(cfg.output_dir, "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "agents/accuracy_round0" in r]
    assert len(train_rows) == 2
    assert all("critic/explained_variance" in r and r["length"] > 3 for r in train_rows)  # three turns each


def test_separate_policies_refuse_what_they_do_not_support(tiny_overrides):
    from llmrl.rl.loop import train

    cfg = load_config(str(ROOT / "recipes" / "maporl.yaml"), [*tiny_overrides, "rollout.agents.shared=false",
                                                              "model.lora.enabled=true"])
    with pytest.raises(ConfigError, match="separate policies\\): model.lora is not supported"):
        train(cfg)


def test_separate_policies_two_steps(tiny_overrides):
    from safetensors.torch import load_file

    from llmrl.rl.loop import train

    cfg = load_config(str(ROOT / "recipes" / "maporl.yaml"),
                      [*tiny_overrides, "steps=2", "sft.steps=5", "save_every=0", "task.train_size=64",
                       "task.test_size=8", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
                       "model.tiny.max_position_embeddings=96", "rollout.agents.shared=false"])
    summary = train(cfg)
    assert {"agent0/accuracy", "agent1/accuracy", "discussion/single", "discussion/final"} <= summary["after"].keys()
    rows = [json.loads(x) for x in Path(cfg.output_dir, "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("kind") == "train"]
    assert len(steps) == 2 and all(r["agent0/grad_norm"] > 0 and r["agent1/grad_norm"] > 0 for r in steps)
    # each agent trained its own copy of the warm-started policy on its own episodes: the weights differ
    w0, w1 = (load_file(str(Path(cfg.output_dir, f"final_model_agent{i}", "model.safetensors"))) for i in (0, 1))
    assert w0.keys() == w1.keys() and any(not torch.equal(w0[k], w1[k]) for k in w0)
