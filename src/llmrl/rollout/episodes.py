"""Samples → Episodes: render and encode each prompt, generate ``params.n`` completions, keep the
sampled tokens and log-probs exactly (multi-turn through an environment when one is given)."""

from __future__ import annotations

from typing import Any

from llmrl.core.types import Episode, Sample
from llmrl.models.loading import encode_prompt, render_prompt
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.rollout.multiturn import EnvironmentFactory, rollout_episodes


def generate_episodes(generator: Generator, tokenizer: Any, samples: list[Sample], params: SamplingParams,
                      chat_template: bool | None, group_offset: int = 0, env: EnvironmentFactory | None = None,
                      max_turns: int = 1, max_episode_tokens: int = 0) -> list[Episode]:
    """``params.n`` episodes per sample; through a fresh environment from ``env()`` per episode when given
    (:func:`~llmrl.rollout.multiturn.rollout_episodes`), else single-turn."""
    if env is not None:
        return rollout_episodes(generator, tokenizer, samples, params, env, chat_template=chat_template,
                                max_turns=max_turns, max_episode_tokens=max_episode_tokens,
                                group_offset=group_offset)
    prompt_ids = [encode_prompt(tokenizer, render_prompt(tokenizer, s, chat_template)) for s in samples]
    episodes = []
    for i, (s, ids, gens) in enumerate(zip(samples, prompt_ids, generator.generate(prompt_ids, params))):
        for g in gens:
            episodes.append(Episode.single_turn(ids, g.token_ids, g.logprobs, s, completion=g.text,
                                                group_id=group_offset + i, truncated=g.finish_reason == "length"))
    return episodes
