"""The scalar reward of each episode, before it goes on the last token: source → length penalty → shaping.

1. Source: the task's reward functions (already summed into ``Episode.reward`` by ``collect``), or, with
   ``algo.reward_model: DIR``, a reward model (:mod:`llmrl.rewards.reward_model`) scoring
   prompt + completion + EOS with its own tokenizer (the policy's when the directory has none).
2. ``algo.length_penalty`` ({threshold, coef}): r ← r − coef·max(n − threshold, 0), n = the episode's
   policy tokens (PAR applies it before shaping; :func:`llmrl.rewards.shaping.length_penalty`).
3. ``algo.shaping``: any shaper of :data:`llmrl.rewards.shaping.SHAPERS` by name, with
   ``algo.shaping_options``. Shapers that compare with references (par, centered, lsc) get, for each
   episode, the rewards of ``algo.reference_samples`` responses to the same prompt sampled from the
   INITIAL policy (the SFT model, frozen before RL starts) and scored by the same source (without the
   length penalty). They are sampled the first time a prompt is drawn (rollout sampling settings, seeded
   per step), cached by prompt, and saved in checkpoints. A sample that already carries ``ref_rewards``
   (e.g. written by :func:`~llmrl.rewards.shaping.attach_reference_rewards` into the training file) uses
   those instead. Running statistics (meanstd, clip, minmax) are checkpointed too.

Without any of the three, the episode rewards pass through unchanged.

Under torchrun each rank scores its own episodes (the reward model is replicated on every rank; the length
penalty is per episode); a shaper without references is applied to every rank's scores gathered in global
order, so its running statistics (meanstd, clip, minmax) are those of one process. The reference shapers
sample the step's missing prompts once over all ranks: the ranks' missing prompts are gathered in global order
(a prompt missing on several ranks is sampled by the first), each rank samples its contiguous share with each
prompt seeded by its global index (as the rollouts are), and the new references are gathered into every
rank's cache — so the cache rank 0 checkpoints is the whole run's, and N ranks sample what one rank does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from llmrl.core.errors import ConfigError
from llmrl.core.seed import derive_seed
from llmrl.rewards.base import RewardFn
from llmrl.rewards.pool import PoolOptions, task_pool
from llmrl.rewards.shaping import (
    RunningStats,
    collect_reference_rewards,
    length_penalty,
    shape_rewards,
    stack_reference_rewards,
)
from llmrl.tasks.base import prompt_key
from llmrl.train.distributed import PerGroupSeeded, gather_objects, gather_rows, world

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmrl.config import Config
    from llmrl.core.types import Episode, Sample
    from llmrl.train.run import RunParts

REFERENCE_SHAPERS = ("par", "centered", "lsc")
"""Shapers that compare a reward with the prompt's reference rewards."""


class SequenceRewards:
    """Scores for one RL batch; ``state_dict`` holds the reference-reward cache and the running stats."""

    def __init__(self, cfg: Config, run: RunParts) -> None:
        a = cfg.algo
        self.cfg, self.run = cfg, run
        self.shaping, self.options = a.shaping, dict(a.shaping_options)
        self.penalty = dict(a.length_penalty or {})
        self.stats = RunningStats()
        self.refs: dict[str, list[float]] = {}
        self.rm: Any = _reward_model(a.reward_model, run.tokenizer, cfg, run.model) if a.reward_model else None
        self.active = self.rm is not None or bool(self.penalty) or self.shaping is not None
        self.ref_policy: tuple[Any, Callable[[], AbstractContextManager[Any]]] | None = None
        if self.shaping in REFERENCE_SHAPERS:  # freeze the initial policy now, before any update or resume
            self.ref_policy = _initial_policy_generator(run, cfg)

    def __call__(self, episodes: list[Episode], step: int) -> tuple[Tensor, dict[str, float]]:
        """([B] scores to put on the last tokens, metrics)."""
        scores = torch.tensor([e.reward for e in episodes], dtype=torch.float32)
        if not self.active:
            return scores, {}
        metrics: dict[str, float] = {}
        if self.rm is not None:
            scores = torch.tensor(self.rm.score_batch([e.completion for e in episodes], [e.sample for e in episodes]),
                                  dtype=torch.float32)
            metrics["reward/model"] = float(scores.mean())
        if self.penalty:
            scores = length_penalty(scores, [e.num_policy_tokens for e in episodes], **self.penalty)
        if self.shaping is not None and self.ref_policy is not None:
            refs = self.reference_rewards([e.sample for e in episodes], step)
            scores = shape_rewards(self.shaping, scores, ref_rewards=refs, stats=self.stats, **self.options)
            metrics["reward/shaped"] = float(scores.mean())
        elif self.shaping is not None:  # torchrun: the running statistics see every rank's scores, in order
            whole, start = gather_rows(scores)
            shaped = shape_rewards(self.shaping, whole, stats=self.stats, **self.options)
            scores = shaped[start : start + len(episodes)]
            metrics["reward/shaped"] = float(scores.mean())
        return scores.to(torch.float32), metrics

    def reference_rewards(self, samples: list[Sample], step: int) -> Tensor:
        """[B, M] reference rewards of each sample's prompt (NaN-padded), sampling the missing prompts."""
        new: dict[str, list[float]] = {}
        missing: dict[str, Sample] = {}
        for s in samples:
            key = prompt_key(s["prompt"])
            if key not in self.refs and key not in new and "ref_rewards" in s:
                new[key] = [float(x) for x in s["ref_rewards"]]
            elif key not in self.refs and key not in new:
                missing.setdefault(key, s)
        offset = 0
        if world() is not None:  # torchrun: sample each prompt missing anywhere once, on the first rank missing it
            every = gather_objects(list(missing))
            claimed: set[str] = set()
            for r, keys in enumerate(every):
                mine = [k for k in keys if k not in claimed]
                if r == world().rank:  # type: ignore[union-attr]
                    missing = {k: missing[k] for k in mine}
                    break
                offset += len(mine)
                claimed.update(mine)
        if missing:
            from llmrl.train.run import sampling_params

            generator, context = self.ref_policy  # type: ignore[misc]
            if world() is not None:
                generator = PerGroupSeeded(generator, offset)
            params = sampling_params(self.cfg, seed=derive_seed(self.cfg.seed, "reference", step))
            with context():
                got = collect_reference_rewards(generator, self.run.tokenizer, list(missing.values()),
                                                self.reward_fn(), m=self.cfg.algo.reference_samples, params=params,
                                                chat_template=self.cfg.model.chat_template,
                                                failure_value=self.cfg.algo.reward_failure_value)
            new.update(zip(missing, got))
        for part in gather_objects(new):  # torchrun: every rank's new references into every rank's cache
            self.refs.update(part)
        return stack_reference_rewards([self.refs[prompt_key(s["prompt"])] for s in samples])

    def reward_fn(self) -> RewardFn:
        """The source of step 1 as a ``(completion, sample) -> float`` function (for the references): the
        reward model, or the task's reward functions summed in the task's reward pool (the collector's: same
        time / memory bounds, failures score ``algo.reward_failure_value``)."""
        if self.rm is not None:
            return self.rm
        pool = task_pool(self.run.task, PoolOptions.for_run(self.cfg))
        fail = self.cfg.algo.reward_failure_value
        return lambda completion, sample: pool.score([completion], [sample], failure_value=fail)[0].total

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.state_dict(), "refs": {k: list(v) for k, v in self.refs.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state["stats"])
        self.refs = {k: [float(x) for x in v] for k, v in state["refs"].items()}


def _reward_model(path: str, policy_tokenizer: Any, cfg: Config, policy: torch.nn.Module) -> Any:
    """The reward model of ``algo.reward_model``, on the policy's device."""
    from llmrl.models.device import module_device
    from llmrl.rewards.reward_model import reward_model_reward

    if cfg.rollout.env is not None:
        raise ConfigError("algo.reward_model: scores single-turn completions; it cannot be used with rollout.env")
    own_tokenizer = any((Path(path) / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json"))
    return reward_model_reward(path, None if own_tokenizer else policy_tokenizer, dtype=cfg.model.dtype,
                               device=module_device(policy))


def _initial_policy_generator(run: RunParts, cfg: Config) -> tuple[Any, Callable[[], AbstractContextManager[Any]]]:
    """(generator, context) sampling from the policy as it is now (before RL): the KL reference when there
    is one, else a frozen copy (under LoRA: the policy with its adapters disabled)."""
    from llmrl.train.build import build_generator, reference_policy

    m = cfg.model
    model, context = ((run.ref, run.ref_context) if run.ref is not None
                      else reference_policy(run.model, m.lora.enabled, device=m.reference_device))
    return build_generator(model, run.tokenizer, cfg.rollout.backend), context


__all__ = ["REFERENCE_SHAPERS", "SequenceRewards"]
