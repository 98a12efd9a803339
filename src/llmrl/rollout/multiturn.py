"""Multi-turn rollouts: the policy and an environment alternate; environment tokens get loss_mask 0.

An environment is any object with ``respond(sample, turn_texts) -> str | None``: given the sample and the
policy's turns so far, it returns the text to append (an observation, feedback, another agent's message)
or None to end the episode. Single-turn episodes are the case where it returns None at once, so the
trainer has one code path for both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from llmrl.core.registry import Registry
from llmrl.core.types import Episode
from llmrl.rollout.base import Generator, SamplingParams


class Environment(Protocol):
    def respond(self, sample: Mapping[str, Any], turn_texts: Sequence[str]) -> str | None: ...


ENVIRONMENTS: Registry[Any] = Registry("environment")


@ENVIRONMENTS.register("retry")
class RetryEnvironment:
    """Toy self-correction environment: after each answer it says whether the answer was right and asks
    for another turn; the reward then judges the last turn. ``task`` is anything with
    ``is_correct(completion, sample) -> bool`` (a Task)."""

    def __init__(self, task: Any, *, max_turns: int = 2, wrong: str = "\nWrong, again: ",
                 right: str = "\nRight, repeat: ") -> None:
        self.is_correct = task.is_correct
        self.max_turns = max_turns
        self.wrong, self.right = wrong, right

    def respond(self, sample: Mapping[str, Any], turn_texts: Sequence[str]) -> str | None:
        if len(turn_texts) >= self.max_turns:
            return None
        return self.right if self.is_correct(turn_texts[-1], sample) else self.wrong


def rollout_multiturn(generator: Generator, tokenizer: Any, prompt_ids: list[list[int]],
                      samples: list[dict[str, Any]], params: SamplingParams, env: Environment,
                      max_turns: int, group_offset: int = 0) -> list[Episode]:
    """``params.n`` episodes per prompt; each turn samples one continuation of every live episode."""
    one = replace(params, n=1)
    episodes: list[Episode] = []
    for i, (ids, s) in enumerate(zip(prompt_ids, samples)):
        for _ in range(params.n):
            episodes.append(Episode(tokens=list(ids), loss_mask=[0] * len(ids), logprobs=[0.0] * len(ids),
                                    sample=s, prompt_len=len(ids), group_id=group_offset + i,
                                    metadata={"turn_texts": []}))
    live = list(range(len(episodes)))
    for turn in range(max_turns):
        if not live:
            break
        one.seed = None if params.seed is None else params.seed + turn
        gens = generator.generate([episodes[j].tokens for j in live], one)
        still = []
        for j, g in zip(live, gens):
            ep, gen = episodes[j], g[0]
            ep.append(gen.token_ids, policy=True, logprobs=gen.logprobs)
            ep.metadata["turn_texts"].append(gen.text)
            ep.truncated = ep.truncated or gen.finish_reason == "length"
            reply = env.respond(ep.sample, ep.metadata["turn_texts"]) if turn + 1 < max_turns else None
            if reply is not None:
                ep.append(tokenizer.encode(reply, add_special_tokens=False), policy=False)
                still.append(j)
        live = still
    for ep in episodes:
        ep.completion = ep.metadata["turn_texts"][-1]
    return episodes
