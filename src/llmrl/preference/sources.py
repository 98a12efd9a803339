"""Online preference sources by name (``online.source``): what ranks the sampled completions.

Each entry is a factory ``(cfg, run) -> PreferenceSource`` (the classes live in :mod:`llmrl.preference.ranking`):

``reward``          the task's reward functions, in the task's reward pool (:mod:`llmrl.rewards.pool`; failing,
                    hanging or crashing ones count ``algo.reward_failure_value``);
``reward_model``    a trained reward model directory (``online.reward_model``), on the policy's device;
``judge``           a Yes/No judge (:func:`judge_model`: ``online.judge_model``, else the policy itself);
``pairwise_judge``  an A/B judge ranking by win rate (``online.ranking``, ``online.both_orders``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmrl.core.registry import Registry
from llmrl.preference.ranking import (
    JudgeSource,
    PairwiseSource,
    PreferenceSource,
    RewardModelSource,
    RewardSource,
    pairwise_judge,
)
from llmrl.rewards.pool import PoolOptions, task_pool

if TYPE_CHECKING:
    import torch

    from llmrl.preference.config import OnlineRoot
    from llmrl.train.run import RunParts

SourceFactory = Callable[["OnlineRoot", "RunParts"], PreferenceSource]

SOURCES: Registry[SourceFactory] = Registry("preference source")


def build_source(cfg: OnlineRoot, run: RunParts) -> PreferenceSource:
    """The configured preference source (``online.source``)."""
    return SOURCES.get(cfg.online.source)(cfg, run)


def judge_model(cfg: OnlineRoot, run: RunParts) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) of the judge: ``online.judge_model`` (frozen), else the policy itself — the current
    iterate (``online.self_judge: current``) or a frozen copy of the starting policy (``initial``)."""
    path = cfg.online.judge_model
    if path is None and cfg.online.self_judge == "current":
        return run.model, run.tokenizer
    if path is None:
        from llmrl.models.loading import reference_model

        return reference_model(run.model), run.tokenizer
    from llmrl.models.loading import load_model, load_tokenizer

    model = load_model(path, dtype=cfg.model.dtype, device=next(run.model.parameters()).device)
    model.requires_grad_(False)
    return model, load_tokenizer(path)


@SOURCES.register("reward")
def reward_source(cfg: OnlineRoot, run: RunParts) -> PreferenceSource:
    """The task's reward functions, in the task's reward pool (section ``reward``: workers, timeout, ...)."""
    pool = task_pool(run.task, PoolOptions.for_run(cfg))
    return RewardSource(run.task.reward_functions(), failure_value=cfg.algo.reward_failure_value, pool=pool)


@SOURCES.register("reward_model")
def reward_model_source(cfg: OnlineRoot, run: RunParts) -> PreferenceSource:
    from llmrl.rewards.reward_model import reward_model_reward

    dev = next(run.model.parameters()).device
    return RewardModelSource(reward_model_reward(cfg.online.reward_model, dtype=cfg.model.dtype, device=dev))  # type: ignore[arg-type]


@SOURCES.register("judge")
def judge_source(cfg: OnlineRoot, run: RunParts) -> PreferenceSource:
    o = cfg.online
    model, tok = judge_model(cfg, run)
    return JudgeSource(model, tok, o.judge_category, o.judge_max_tokens, o.judge_batch_size)


@SOURCES.register("pairwise_judge")
def pairwise_judge_source(cfg: OnlineRoot, run: RunParts) -> PreferenceSource:
    o = cfg.online
    model, tok = judge_model(cfg, run)
    return PairwiseSource(pairwise_judge(model, tok, o.judge_max_tokens), o.ranking, o.both_orders)


__all__ = ["SOURCES", "SourceFactory", "build_source", "judge_model"]
