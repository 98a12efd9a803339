"""Multi-turn episodes: environment tokens never receive gradient, and multi-turn runs train."""

from __future__ import annotations

import torch

from llmrl.algos import aggregate
from llmrl.algos.losses import ppo_clip
from llmrl.config import load_config
from llmrl.core.ops import token_logprobs
from llmrl.core.types import Batch
from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.rl.loop import train
from llmrl.rollout.base import SamplingParams
from llmrl.rollout.episodes import generate_episodes
from llmrl.rollout.multiturn import RetryEnvironment
from llmrl.rollout.sampler import KVCacheSampler
from llmrl.tasks import get_task
from llmrl.train.metrics import read_metrics


def test_environment_tokens_get_no_gradient():
    tok = build_char_tokenizer()
    model, tok = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64),
                                  tok, seed=0)
    task = get_task("arithmetic", digits=2, ops=["+"])
    env = RetryEnvironment(task)
    samples = task.samples(4, "train", 0)
    params = SamplingParams(max_new_tokens=5, temperature=1.0, n=2, seed=0)
    eps = generate_episodes(KVCacheSampler(model, tok), tok, samples, params, None, env=lambda: RetryEnvironment(task),
                            max_turns=2)
    assert len(eps) == 8 and all(len(e.turn_spans) == 2 for e in eps)
    for e in eps:  # env text sits between the two policy turns with mask 0
        (s1, e1), (s2, _) = e.turn_spans
        assert e1 < s2 and set(e.loss_mask[e1:s2]) == {0} and set(e.loss_mask[s1:e1]) == {1}
        assert tok.decode(e.tokens[e1:s2]) in (env.wrong, env.right)
    batch = Batch.collate(eps, tok.pad_token_id)
    logits = model(input_ids=batch.input_ids).logits[:, :-1]  # [B, L-1, V]
    logits.retain_grad()
    lp = token_logprobs(logits, batch.input_ids[:, 1:])
    adv = torch.randn(batch.mask.shape) * batch.mask
    per_tok, _ = ppo_clip(lp, batch.old_logprobs, adv, batch.mask)
    aggregate(per_tok, batch.mask, "token-mean").backward()
    g = logits.grad.abs().sum(-1)  # [B, L-1]: gradient reaching the prediction of each target token
    assert (g[batch.mask == 0] == 0).all()
    assert (g[batch.mask == 1] > 0).float().mean() > 0.9


def test_multiturn_run_trains(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=12", "optim.lr=1e-2",
                             "rollout.env=retry", "rollout.max_turns=2", "rollout.samples_per_prompt=8"])
    train(cfg)
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    assert sum(r["grad_norm"] > 0 for r in rows) >= 6
    assert rows[-1]["length"] > 6  # two policy turns per episode
    first, last = sum(r["reward"] for r in rows[:3]) / 3, sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first, (first, last)
