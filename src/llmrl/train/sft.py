"""Supervised fine-tuning on completion tokens only, and rejection-sampling fine-tuning (RFT)."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import torch

from llmrl.algos import aggregate
from llmrl.core.progress import progress_bar
from llmrl.core.seed import derive_seed
from llmrl.core.types import Batch, Episode, Sample
from llmrl.models.device import module_device
from llmrl.models.loading import encode_prompt, render_prompt
from llmrl.rewards.base import safe_check
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.rollout.episodes import generate_episodes
from llmrl.tasks.base import Task
from llmrl.train.distributed import DataParallel, all_finite
from llmrl.train.memory import AutoMicroBatch
from llmrl.train.optim import build_optimizer, build_scheduler
from llmrl.train.update import clipped_step, micro_batches, policy_logprobs


def demonstrations(task: Task, samples: list[Sample], noise: float = 0.0, seed: int = 0) -> list[tuple[Sample, str]]:
    """(sample, completion) pairs from the task's demonstrations; a ``noise`` fraction comes from its
    sloppy teacher (``wrong_demonstration``) instead: imperfect data for a warm start RL can improve on."""
    rng = random.Random(derive_seed(seed, "demos"))
    out = []
    for s in samples:
        if noise > 0 and rng.random() < noise:
            out.append((s, task.wrong_demonstration(s, rng)))  # type: ignore[attr-defined]
        else:
            out.append((s, task.demonstration(s)))
    return out


def sft_episodes(tokenizer: Any, examples: list[tuple[Sample, str]], chat_template: bool | None) -> list[Episode]:
    """Prompt tokens (mask 0) followed by completion + EOS tokens (mask 1)."""
    eos = tokenizer.eos_token_id
    eps = []
    for s, completion in examples:
        p = encode_prompt(tokenizer, render_prompt(tokenizer, s, chat_template))
        c = tokenizer.encode(completion, add_special_tokens=False) + ([eos] if eos is not None else [])
        eps.append(Episode.single_turn(p, c, [0.0] * len(c), s, completion=completion))
    return eps


def sft_loss(model: torch.nn.Module, batch: Batch, num_tokens: float | None = None) -> torch.Tensor:
    """Mean negative log-likelihood over completion tokens (on the model's device); ``num_tokens``: the count
    to divide by (default the batch's; under torchrun every rank's, so the summed gradients are the mean's)."""
    batch = batch.to(module_device(model))
    lp, _ = policy_logprobs(model, batch)
    return aggregate(-lp, batch.mask, "token-mean", num_tokens=num_tokens)


def run_sft(model: torch.nn.Module, tokenizer: Any, episodes: list[Episode], *, steps: int, batch_size: int,
            lr: float, warmup_steps: int, schedule: str, seed: int, grad_clip: float = 1.0,
            log: Any = None, progress: bool = False, micro_batch_size: int = 0,
            memory_budget_gb: float | None = None) -> dict[str, float]:
    """``steps`` AdamW steps on random minibatches of ``episodes``. Returns the final mean loss. Under torchrun
    each rank trains an FSDP2 copy on its share of every minibatch, copied back into ``model`` at the end.

    Each minibatch's gradients are accumulated over micro-batches of ``micro_batch_size`` sequences (0 = the
    largest that fits ``memory_budget_gb``, :class:`~llmrl.train.memory.AutoMicroBatch`; activation
    checkpointing turned on when the plan needs it); the loss of each is divided by the whole minibatch's token
    count, so the step is the same whatever the micro-batch (up to float rounding). A step whose loss or gradient
    norm is not finite is skipped (gradients dropped, optimizer and schedule untouched), as in the RL and DPO
    updates."""
    if not episodes:
        raise ValueError("SFT got no examples")
    dp = DataParallel(model)  # torchrun: an FSDP2 copy (dp.policy); else the model itself
    model = dp.policy
    auto = AutoMicroBatch(model, memory_budget_gb, reference=False, micro_batch_size=micro_batch_size)
    opt = build_optimizer(model.parameters(), lr)
    sched = build_scheduler(opt, warmup_steps, steps, schedule)
    rng = random.Random(derive_seed(seed, "sft"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.train()
    recent: list[float] = []
    bar = progress_bar(steps, "sft", enabled=progress, leave=False)
    for step in range(steps):
        batch = Batch.collate(dp.share(rng.sample(episodes, min(batch_size, len(episodes))), "sft.batch_size"), pad)
        tokens = dp.total(float(batch.mask.sum()))  # under torchrun: every rank's
        opt.zero_grad(set_to_none=True)
        loss, finite = 0.0, True
        for _, micro in micro_batches(batch, dp.agree(auto(batch))):
            part = sft_loss(model, micro, tokens)
            if not all_finite(part):  # under torchrun on every rank: they skip together
                finite = False
                break
            part.backward()
            loss += float(part.detach())
        if not finite:
            opt.zero_grad(set_to_none=True)
            continue
        if not clipped_step(opt, sched, grad_clip)[0]:  # an inf / NaN gradient with a finite loss: skipped
            continue
        recent = (recent + [dp.total(loss)])[-20:]
        if log is not None and (step + 1) % 50 == 0:
            log(step + 1, {"sft_loss": sum(recent) / len(recent)})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{recent[-1]:.3f}")
    if bar is not None:
        bar.close()
    opt.zero_grad(set_to_none=True)
    dp.sync()  # torchrun: the trained weights into the caller's model
    return {"sft_loss": sum(recent) / max(len(recent), 1)}


def rejection_sample(generator: Generator, tokenizer: Any, task: Task, samples: list[Sample], k: int,
                     params: SamplingParams, chat_template: bool | None) -> list[tuple[Sample, str]]:
    """Sample ``k`` completions per prompt; keep those ``task.accept_for_sft`` accepts (by default the
    verified-correct ones), distinct texts per prompt."""
    p = replace(params, n=k)
    eps = generate_episodes(generator, tokenizer, samples, p, chat_template)
    kept, seen = [], set()
    for e in eps:
        key = (e.group_id, e.completion)
        if key not in seen and safe_check(task.accept_for_sft, e.completion, e.sample):
            seen.add(key)
            kept.append((e.sample, e.completion))
    return kept
