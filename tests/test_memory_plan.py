"""The memory-budget planner (llmrl.train.memory): hand-computed estimates and choices, and an RL run whose budget
forces one-sequence micro-batches with activation checkpointing giving the run of an unbounded budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY

from llmrl.cli.main import main
from llmrl.core.types import Batch, Episode
from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.train.memory import (
    CPU_ACTIVATION_BYTES,
    AutoMicroBatch,
    GiB,
    ModelShape,
    estimate_bytes,
    floor_bytes,
    plan,
    scoring_bytes,
    sequence_bytes,
)

# 2 layers, H 10, I 20, KV 10, V 100, 1000 float32 weights, all trained.
SHAPE = ModelShape(layers=2, hidden=10, intermediate=20, kv_width=10, vocab=100, params=1000, trainable=1000)
FLOOR = 1000 * 4 + 3 * 1000 * 4 + GiB  # weights + grads + 2 Adam moments + runtime = 16,000 B + 1 GiB
PER_SEQ = 10 * 2 * (12 * 10 + 4 * 20 + 2 * 10) * 4  # 10 tokens x 2 layers x 220 values x 4 B = 17,600
PER_SEQ_CKPT = 10 * (2 * 10 * 4 + 220 * 4)  # 10 tokens x (2 layer inputs of 10 values + one layer) = 9,600
CHUNK_LOGITS = 4 * 8 * 100 * 4  # 4 float32 [8, 100] tensors = 12,800


def test_hand_computed_terms():
    assert floor_bytes(SHAPE, reference=False) == FLOOR
    assert floor_bytes(SHAPE, reference=True) == FLOOR + 4000
    assert sequence_bytes(SHAPE, 10, checkpointing=False) == PER_SEQ
    assert sequence_bytes(SHAPE, 10, checkpointing=True) == PER_SEQ_CKPT
    assert estimate_bytes(SHAPE, 3, 10, checkpointing=False, chunk=8, reference=False) == FLOOR + 3 * PER_SEQ + \
        CHUNK_LOGITS
    # the full-logits path: 3 float32 [tokens, V] tensors, 3 x 30 x 100 x 4 = 36,000 for 3 sequences
    assert estimate_bytes(SHAPE, 3, 10, checkpointing=False, chunk=0, reference=False) == FLOOR + 3 * PER_SEQ + 36000


@pytest.mark.parametrize("budget,minibatch,can,expected", [
    (FLOOR + CHUNK_LOGITS + 100 * PER_SEQ, 8, True, (8, False)),  # all fits: the whole minibatch
    (FLOOR + CHUNK_LOGITS + 5 * PER_SEQ, 8, True, (5, False)),  # 5 >= 4: no checkpointing
    (FLOOR + CHUNK_LOGITS + 3 * PER_SEQ, 8, True, (5, True)),  # 3 < 4; checkpointed 9,600 B each: 52,800 // 9,600
    (FLOOR + CHUNK_LOGITS + 3 * PER_SEQ, 8, False, (3, False)),  # the model cannot checkpoint
    (FLOOR + CHUNK_LOGITS + 2 * PER_SEQ, 2, True, (2, False)),  # the whole (small) minibatch fits
])
def test_micro_batch_and_checkpointing_choice(budget, minibatch, can, expected):
    p = plan(SHAPE, budget, minibatch, 10, chunk=8, reference=False, can_checkpoint=can)
    assert (p.micro_batch_size, p.gradient_checkpointing) == expected and p.fits
    assert p.estimate_bytes <= budget


@pytest.mark.parametrize("budget,minibatch,expected", [
    (FLOOR + CHUNK_LOGITS + 100 * PER_SEQ, 8, (8, False)),  # all fits: the whole minibatch
    (FLOOR + CHUNK_LOGITS + 3 * PER_SEQ, 8, (3, False)),  # a GPU checkpoints here (above); a CPU takes 3 plain
    (FLOOR + CHUNK_LOGITS + PER_SEQ, 8, (1, False)),  # one plain sequence still fits: no checkpointing
    (FLOOR + CHUNK_LOGITS + PER_SEQ - 1, 8, (1, True)),  # not even one: checkpointed, 17,599 // 9,600 = 1
])
def test_cpu_checkpoints_only_when_not_one_sequence_fits(budget, minibatch, expected):
    p = plan(SHAPE, budget, minibatch, 10, chunk=8, reference=False, can_checkpoint=True, cpu=True)
    assert (p.micro_batch_size, p.gradient_checkpointing) == expected and p.fits
    assert p.estimate_bytes <= budget


def test_cpu_caps_the_micro_batch_activations():
    assert CPU_ACTIVATION_BYTES == 512 * 2**20
    # 100,000 tokens x 2 layers x 220 values x 4 B = 176,000,000 B a sequence: 536,870,912 // that = 3
    assert plan(SHAPE, 1000 * GiB, 8, 100_000, chunk=8, reference=False, can_checkpoint=True,
                cpu=True).micro_batch_size == 3
    assert plan(SHAPE, 1000 * GiB, 8, 100_000, chunk=8, reference=False, can_checkpoint=True).micro_batch_size == 8
    # SmolLM2-135M's shape: (12 x 576 + 4 x 1536 + 2 x 384) x 4 B x 30 layers = 1,658,880 B a token; 84 tokens:
    # 139,345,920 B a sequence -> 3 per micro-batch (the GPU rule, plenty of memory: all 64)
    smol = ModelShape(layers=30, hidden=576, intermediate=1536, kv_width=384, vocab=49152, params=134_515_008,
                      trainable=134_515_008)
    assert sequence_bytes(smol, 84, checkpointing=False) == 139_345_920
    kw = {"chunk": 1365, "reference": True, "can_checkpoint": True}
    assert (plan(smol, 100 * GiB, 64, 84, cpu=True, **kw).micro_batch_size, plan(smol, 100 * GiB, 64, 84,
                                                                                 **kw).micro_batch_size) == (3, 64)
    # a sequence bigger than the cap: still one at a time, unchecked (it fits the budget)
    p = plan(smol, 100 * GiB, 64, 400, cpu=True, **kw)
    assert (p.micro_batch_size, p.gradient_checkpointing) == (1, False)


def test_full_logits_path_and_a_budget_below_the_floor():
    p = plan(SHAPE, FLOOR + 2 * (PER_SEQ + 12000), 8, 10, chunk=0, reference=False, can_checkpoint=False)
    assert p.micro_batch_size == 2  # 29,600 B a sequence with its logits
    low = plan(SHAPE, FLOOR - 1, 8, 10, chunk=8, reference=False, can_checkpoint=True)
    assert (low.micro_batch_size, low.gradient_checkpointing, low.fits) == (1, True, False)


def _batch(n: int) -> Batch:
    eps = [Episode.single_turn([5, 6, 7], [8, 9, 10, 11], [-1.0] * 4, {"prompt": "", "answer": ""}, reward=1.0,
                               group_id=0) for _ in range(n)]
    return Batch.collate(eps, 0)


def test_auto_micro_batch_turns_checkpointing_on_under_a_small_budget():
    model, _ = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                              intermediate_size=64), build_char_tokenizer(), seed=0)
    shape, batch = ModelShape.of(model), _batch(8)
    assert shape.params == sum(p.numel() for p in model.parameters()) and shape.kv_width == 2 * 32
    assert AutoMicroBatch(model, 100.0, reference=True)(batch) == 8  # plenty: the whole batch, no checkpointing
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    assert AutoMicroBatch(model, 100.0, reference=True, micro_batch_size=3)(batch) == 3  # set: kept
    one = estimate_bytes(shape, 1, 7, checkpointing=True, chunk=512, reference=True)  # rows of 7 tokens
    assert one < estimate_bytes(shape, 1, 7, checkpointing=False, chunk=512, reference=True)
    auto = AutoMicroBatch(model, one / GiB, reference=True)  # one checkpointed sequence, exactly
    assert auto(batch) == 1 and auto.last is not None and auto.last.gradient_checkpointing
    assert any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def test_rl_run_under_a_tight_budget_equals_the_unbounded_run(tmp_path: Path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("trainer: rl\ntask: {name: test_char_a}\n"
                      "algo: {advantage: grpo, kl_coef: 0.05, loss_agg: token-mean, entropy_coef: 0.01}\n"
                      "optim: {lr: 1.0e-3}\n")
    run = [*TINY, "steps=2", "save_every=0", "save_minutes=0", "logging.tensorboard=false"]
    rows = []
    for name, budget in (("big", "1000"), ("tight", "1.0")):  # 1 GiB < the 1 GiB runtime allowance + weights
        out = tmp_path / name
        with pytest.warns(UserWarning, match="over optim.memory_budget_gb") if name == "tight" else _nothing():
            assert main(["train", str(recipe), *run, f"output_dir={out}", f"optim.memory_budget_gb={budget}"]) == 0
        lines = (out / "metrics.jsonl").read_text().splitlines()
        rows.append([{k: v for k, v in json.loads(x).items() if not k.startswith("time/")} for x in lines])
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]]
    tight, big = ([r for r in rs if "loss" in r] for rs in (rows[1], rows[0]))  # the training rows
    assert len(tight) == 2 and all(r["memory/micro_batch_size"] == 1 for r in tight)
    assert all(r["memory/gradient_checkpointing"] == 1 for r in tight)
    assert all(r["memory/micro_batch_size"] == 16 and r["memory/gradient_checkpointing"] == 0 for r in big)
    for a, b in zip(*rows):
        for k, v in a.items():
            if isinstance(v, float) and not k.startswith("memory/"):
                assert b[k] == pytest.approx(v, abs=1e-5), k


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_critic_is_counted_in_the_plan_and_follows_it():
    from llmrl.models.value_head import scalar_model_from_policy
    from llmrl.rl.critic import Critic

    policy, _ = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                               intermediate_size=64), build_char_tokenizer(), seed=0)
    own = scalar_model_from_policy(policy, seed=1)
    n = sum(p.numel() for p in own.parameters())  # the backbone copy + Linear(32, 1)
    critic = Critic(own, micro_batch_size=0)
    assert critic.memory_bytes() == 4 * n * 4  # weights + grads + 2 AdamW moments, float32
    assert Critic(scalar_model_from_policy(policy, seed=1), frozen=True).memory_bytes() == n * 4
    shared = Critic(scalar_model_from_policy(policy, share=True, seed=1), shared=True)
    assert shared.memory_bytes() == 4 * (32 + 1) * 4  # the head only
    critic.follow(3)
    assert critic.micro_batch_size == 3  # configured 0: the policy's plan
    fixed = Critic(scalar_model_from_policy(policy, seed=1), micro_batch_size=2)
    fixed.follow(3)
    assert fixed.micro_batch_size == 2  # configured: kept
    auto = AutoMicroBatch(policy, 10.0, reference=True, extra_bytes=critic.memory_bytes())
    assert auto.budget == 10 * GiB - critic.memory_bytes()


def _tiny_double() -> tuple[torch.nn.Module, object]:
    tok = build_char_tokenizer()
    model, _ = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                              intermediate_size=64), tok, seed=0)
    return model.double(), tok


def test_sft_under_a_tight_budget_equals_the_whole_batch_step():
    from llmrl.train.sft import run_sft

    eps = [Episode.single_turn([5, 6, 7 + i % 3], [8, 9, 10 + i % 5, 11][: 2 + i % 3], [0.0] * (2 + i % 3),
                               {"prompt": "", "answer": ""}) for i in range(6)]
    params, plans = [], []
    for budget in (1000.0, 1.0):  # 1 GiB: below the runtime allowance: one checkpointed sequence at a time
        model, tok = _tiny_double()
        with pytest.warns(UserWarning, match="over optim.memory_budget_gb") if budget == 1.0 else _nothing():
            out = run_sft(model, tok, eps, steps=3, batch_size=6, lr=1e-2, warmup_steps=0, schedule="constant",
                          seed=0, memory_budget_gb=budget)
        assert out["sft_loss"] > 0
        plans.append(any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()))
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert plans == [False, True]
    start = torch.cat([p.detach().flatten() for p in _tiny_double()[0].parameters()])
    assert (params[0] - start).abs().max() > 1e-3  # the steps trained
    assert torch.allclose(params[0], params[1], atol=1e-10, rtol=0)


def test_sft_skips_a_step_with_a_non_finite_gradient():
    """A finite loss with an inf gradient (an overflow, say): the step is skipped, not applied as NaNs; the
    steps before and after it train as usual."""
    from llmrl.train.sft import run_sft

    eps = [Episode.single_turn([5, 6, 7], [8, 9, 10], [0.0] * 3, {"prompt": "", "answer": ""}) for _ in range(4)]
    model, tok = _tiny_double()
    calls = {"n": 0}

    def poison(grad: torch.Tensor) -> torch.Tensor:  # the second backward's gradient of one weight is inf
        calls["n"] += 1
        return torch.full_like(grad, float("inf")) if calls["n"] == 2 else grad

    first = next(p for p in model.parameters() if p.requires_grad)
    first.register_hook(poison)
    start = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    run_sft(model, tok, eps, steps=3, batch_size=4, lr=1e-2, warmup_steps=0, schedule="constant", seed=0)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert bool(torch.isfinite(after).all())  # applied, the inf step made every weight NaN (and step 3 was skipped)
    assert calls["n"] == 3
    assert (after - start).abs().max() > 1e-3  # steps 1 and 3 trained


def test_pairs_per_micro_batch_from_the_budget():
    model, _ = _tiny_double()
    shape = ModelShape.of(model)
    pairs = type("Pairs", (), {"num_pairs": 5, "input_ids": torch.zeros(10, 7, dtype=torch.long)})()
    assert AutoMicroBatch(model, 100.0, reference=True).pairs(pairs) == 5  # all 10 rows fit
    assert AutoMicroBatch(model, 100.0, reference=True, micro_batch_size=2).pairs(pairs) == 2  # set: kept
    four = estimate_bytes(shape, 4, 7, checkpointing=False, chunk=512, reference=True)  # rows of 7 tokens
    assert AutoMicroBatch(model, four / GiB, reference=True).pairs(pairs) == 2  # 4 rows = 2 pairs
    five = estimate_bytes(shape, 5, 7, checkpointing=False, chunk=512, reference=True)
    assert AutoMicroBatch(model, five / GiB, reference=True).pairs(pairs) == 2  # 5 rows: still 2 whole pairs


def test_dpo_under_a_tight_budget_equals_the_unbounded_run(tmp_path: Path):
    from llmrl.config import load_config
    from llmrl.preference import dpo

    small = [*TINY, "trainer=dpo", "task.name=arithmetic", "seed=3", "sft.steps=2", "sft.batch_size=8", "steps=2",
             "pref.batch_size=8", "pref.pairs_from_task=24", "pref.eval_pairs=8", "pref.max_length=16",
             "pref.max_prompt_length=8", "optim.lr=1e-3", "save_every=0", "save_minutes=0"]
    rows = []
    for name, budget in (("big", "1000"), ("tight", "1.0")):
        out = tmp_path / name
        with pytest.warns(UserWarning, match="over optim.memory_budget_gb") if name == "tight" else _nothing():
            dpo.train(load_config(None, [*small, f"output_dir={out}", f"optim.memory_budget_gb={budget}"]))
        lines = (out / "metrics.jsonl").read_text().splitlines()
        rows.append([r for r in map(json.loads, lines) if "grad_norm" in r])
    big, tight = rows
    assert len(big) == len(tight) == 2
    assert all(r["memory/micro_batch_size"] == 1 and r["memory/gradient_checkpointing"] == 1 for r in tight)
    assert all(r["memory/micro_batch_size"] == 8 and r["memory/gradient_checkpointing"] == 0 for r in big)
    for a, b in zip(big, tight):
        for k in ("loss", "grad_norm"):
            assert b[k] == pytest.approx(a[k], abs=1e-5), k


def test_scoring_micro_batch_is_sized_by_the_no_grad_activations():
    # per token: 4 H + 3 I + KV + heads x seq_len = 40 + 60 + 10 + 2 x 10 = 130 values x 4 B; x 10 tokens
    shape = ModelShape(layers=2, hidden=10, intermediate=20, kv_width=10, vocab=100, params=1000, trainable=1000,
                       heads=2)
    assert scoring_bytes(shape, 10) == 10 * 130 * 4
    model, _ = _tiny_double()
    batch = _batch(8)  # rows of 7 tokens
    auto = AutoMicroBatch(model, 100.0, reference=True)
    assert auto.scoring(batch) == 8  # plenty of room: the whole batch
    assert AutoMicroBatch(model, 100.0, reference=True, micro_batch_size=3).scoring(batch) == 3  # set: kept
    s = ModelShape.of(model)
    assert s.heads == 2
    room = 3 * scoring_bytes(s, 7) + 5  # beside the floor and one chunk of logits: 3 sequences
    budget = floor_bytes(s, True) + 4 * 56 * s.vocab * 4 + room  # 4 float32 [56, V] logits (56 tokens < a chunk)
    assert AutoMicroBatch(model, budget / GiB, reference=True).scoring(batch) == 3
    assert AutoMicroBatch(model, 1.0, reference=True).scoring(batch) == 1  # nothing left: still one
