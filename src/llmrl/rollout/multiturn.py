"""Multi-turn environments and their batched, token-in/token-out rollouts.

An environment is one episode's counterpart (a fresh instance per episode, built by ``factory()``)::

    reset(sample) -> observation              # the first prompt: a string or chat messages
    step(action_text) -> StepResult(observations, reward, done, info)

``observations`` are the messages (or text) the environment answers with: user feedback, tool results
(role ``tool``), other agents' messages. ``reward`` is the environment's reward for the policy turn just
taken (0 when it has none: the task's reward of the final turn is added by the collector). An optional
``tools`` attribute (JSON schemas) is passed to the chat template with every rendering; an optional
``scored_text()`` method gives the text the task scores (default: the last policy turn), e.g. the last answer
when the last turn is a verdict on it.

Episodes keep every sampled token exactly (``loss_mask`` 1); after a turn, the template's end-of-turn marker
when the turn stopped without it, then only the new messages and the next generation prompt are rendered
and appended (``loss_mask`` 0, :mod:`llmrl.rollout.chat_tokens`). All live episodes of a batch generate
their next turn together, in one ``Generator.generate`` call per turn.

Budgets: ``max_turns`` policy turns per episode; ``max_episode_tokens`` (0 = none): an episode ends when its
next turn could take it past this many tokens (its current length + the environment's tokens +
``max_new_tokens``), so no episode is ever longer (``metadata["stop"] = "token_budget"``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from llmrl.core.errors import ConfigError
from llmrl.core.registry import Registry
from llmrl.core.types import Episode, Sample
from llmrl.models.loading import encode_prompt, render_prompt
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.rollout.chat_tokens import (
    Message,
    closing_tokens,
    continuation_tokens,
    has_chat_template,
    render_messages,
)

Observation = str | list[Message]
"""What an environment shows the policy: text (a user message) or chat messages."""


@dataclass
class StepResult:
    """The environment's answer to one policy turn."""

    observations: Observation = field(default_factory=list)
    """New messages (or text, one user message) to show before the next turn; ignored when ``done``."""
    reward: float = 0.0
    """The environment's reward for this turn (added to the task's reward of the final turn)."""
    done: bool = False
    """The episode ends after this turn."""
    info: dict[str, Any] = field(default_factory=dict)
    """Anything worth keeping (kept per turn in ``episode.metadata["env_info"]``)."""


class Environment(Protocol):
    """One episode's environment (see the module docstring)."""

    def reset(self, sample: Sample) -> Observation: ...

    def step(self, action: str) -> StepResult: ...


EnvironmentFactory = Callable[[], Environment]
"""``factory() -> Environment``: a fresh environment for one episode."""

ENVIRONMENTS: Registry[Any] = Registry("environment")
"""Name → environment class, built as ``cls(task, **options)`` for each episode (``rollout.env``)."""
ENVIRONMENTS.register_lazy("tool_use", "llmrl.rollout.tools:ToolUseEnvironment",
                           doc="tools (calculator, python) in the chat template's or a plain-tag format")
ENVIRONMENTS.register_lazy("self_correction", "llmrl.rollout.self_correction:SelfCorrectionEnvironment",
                           doc="answer, [VERIFY] verdict, revision after wrong (self-rewarding correction)")


def environment_factory(name: str, task: Any, options: Mapping[str, Any] | None = None) -> EnvironmentFactory:
    """A factory of fresh ``ENVIRONMENTS[name](task, **options)`` (one per episode); one is built now, so an
    unknown name or bad options fail here with a :class:`ConfigError` naming ``rollout.env`` /
    ``rollout.env_options``."""
    try:
        cls = ENVIRONMENTS.get(name)
    except KeyError as e:
        raise ConfigError(f"rollout.env: {e.args[0]}") from None
    opts = dict(options or {})
    try:
        cls(task, **opts)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"rollout.env_options: environment {name!r}: {e}") from e
    return functools.partial(cls, task, **opts)


def as_messages(obs: Observation) -> list[Message]:
    """An observation as chat messages (text = one user message)."""
    if isinstance(obs, str):
        return [{"role": "user", "content": obs}]
    if not isinstance(obs, list) or not all(isinstance(m, Mapping) and "role" in m for m in obs):
        raise TypeError(f"an observation must be a string or a list of {{'role', 'content'}} messages, got {obs!r}")
    return [dict(m) for m in obs]


@ENVIRONMENTS.register("retry")
class RetryEnvironment:
    """Toy self-correction: after each answer it says whether it was right and asks for another turn; the
    task's reward judges the last turn. ``task``: anything with ``is_correct(completion, sample) -> bool``.
    ``max_turns`` (None = the rollout's): turns after which it ends the episode itself."""

    def __init__(self, task: Any, *, max_turns: int | None = None, wrong: str = "\nWrong, again: ",
                 right: str = "\nRight, repeat: ") -> None:
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"retry: max_turns must be >= 1, got {max_turns}")
        self.is_correct = task.is_correct
        self.max_turns = max_turns
        self.wrong, self.right = wrong, right
        self.sample: Sample = {}
        self.turns = 0

    def reset(self, sample: Sample) -> Observation:
        self.sample, self.turns = sample, 0
        return sample["prompt"]

    def step(self, action: str) -> StepResult:
        self.turns += 1
        ok = bool(self.is_correct(action, self.sample))
        done = self.max_turns is not None and self.turns >= self.max_turns
        return StepResult(observations=[{"role": "user", "content": self.right if ok else self.wrong}],
                          done=done, info={"correct": ok})


def _prompt_ids(tokenizer: Any, sample: Sample, obs: Observation, chat: bool, chat_template: bool | None,
                tools: list[dict[str, Any]] | None) -> list[int]:
    """The first observation encoded as the prompt (as ``render_prompt``; tool schemas go to the template)."""
    if chat and tools:
        text = render_messages(tokenizer, as_messages(obs), add_generation_prompt=True, tools=tools)
        return encode_prompt(tokenizer, text + sample.get("assistant_prefix", ""))
    return encode_prompt(tokenizer, render_prompt(tokenizer, {**sample, "prompt": obs}, chat_template))


def rollout_episodes(generator: Generator, tokenizer: Any, samples: list[Sample], params: SamplingParams,
                     factory: EnvironmentFactory, *, chat_template: bool | None, max_turns: int,
                     max_episode_tokens: int = 0, group_offset: int = 0) -> list[Episode]:
    """``params.n`` episodes per sample, each with its own environment from ``factory``; turn t of every live
    episode is sampled in one generate call with seed ``params.seed + t`` (the first turn as ``params.n``
    samples of each sample's prompt when its environments all gave the same one).

    Each episode's ``metadata``: ``turn_texts`` (every policy turn), ``messages`` (the conversation),
    ``env_rewards`` (the environment's reward of every policy turn, aligned with ``turn_spans``),
    ``env_info`` (the step infos) and ``stop`` (``"done"``, ``"max_turns"`` or ``"token_budget"``).
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if max_episode_tokens < 0:
        raise ValueError(f"max_episode_tokens must be >= 0, got {max_episode_tokens}")
    chat = has_chat_template(tokenizer, chat_template)
    one = replace(params, n=1)
    episodes: list[Episode] = []
    envs: list[Environment] = []
    for i, s in enumerate(samples):
        for _ in range(params.n):
            env = factory()
            obs = env.reset(s)
            tools = getattr(env, "tools", None) or None
            ids = _prompt_ids(tokenizer, s, obs, chat, chat_template, tools)
            episodes.append(Episode(tokens=list(ids), loss_mask=[0] * len(ids), logprobs=[0.0] * len(ids),
                                    sample=s, prompt_len=len(ids), group_id=group_offset + i,
                                    metadata={"turn_texts": [], "messages": as_messages(obs), "env_rewards": [],
                                              "env_info": [], "tools": tools, "stop": "max_turns"}))
            envs.append(env)
    live = list(range(len(episodes)))
    n = params.n
    # turn 1: when every sample's n environments gave the same prompt, one prompt per sample with n samples
    # (the generator prefills it once, as for single-turn episodes)
    shared = all(episodes[j].tokens == episodes[j - j % n].tokens for j in live)
    for turn in range(max_turns):
        if not live:
            break
        one.seed = None if params.seed is None else params.seed + turn
        if turn == 0 and shared and n > 1:
            per_sample = generator.generate([episodes[j].tokens for j in live[::n]], replace(params, seed=one.seed))
            gens = [[g] for group in per_sample for g in group]
        else:
            gens = generator.generate([episodes[j].tokens for j in live], one)
        still = []
        for j, g in zip(live, gens, strict=True):
            ep, gen, meta = episodes[j], g[0], episodes[j].metadata
            ep.append(gen.token_ids, policy=True, logprobs=gen.logprobs)
            ep.truncated = ep.truncated or gen.finish_reason == "length"
            text = gen.text  # the sampled turn's text (stop strings cut, special tokens skipped)
            meta["turn_texts"].append(text)
            prefix = ep.sample.get("assistant_prefix", "") if turn == 0 else ""
            meta["messages"].append({"role": "assistant", "content": prefix + text})
            res = envs[j].step(text)
            meta["env_rewards"].append(float(res.reward))
            meta["env_info"].append(res.info)
            if res.done:
                meta["stop"] = "done"
                continue
            if turn + 1 >= max_turns:
                continue
            new = as_messages(res.observations)
            tail = closing_tokens(tokenizer, gen.token_ids, chat_template=chat, tools=meta["tools"])
            tail = tail + continuation_tokens(tokenizer, meta["messages"], new, chat_template=chat,
                                              tools=meta["tools"])
            if max_episode_tokens and len(ep.tokens) + len(tail) + params.max_new_tokens > max_episode_tokens:
                meta["stop"] = "token_budget"
                continue
            ep.append(tail, policy=False)
            meta["messages"] += new
            still.append(j)
        live = still
    for ep, env in zip(episodes, envs, strict=True):  # what the task scores: the env's choice, else the last turn
        scored = getattr(env, "scored_text", None)
        ep.completion = scored() if scored is not None else ep.metadata["turn_texts"][-1]
    return episodes


def finish_turn_rewards(ep: Episode) -> None:
    """After the task scored the final turn (``ep.reward``): ``metadata["turn_rewards"]`` = the environment's
    reward of every turn with the task's reward added to the last, and ``ep.reward`` = their sum (what
    sequence-level estimators use; ``reward_components["env"]`` = the environment's part). No-op for an
    episode without environment rewards."""
    env = ep.metadata.get("env_rewards")
    if not env:
        return
    if len(env) != len(ep.turn_spans):
        raise ValueError(f"episode has {len(env)} environment rewards for {len(ep.turn_spans)} policy turns")
    turns = [float(r) for r in env]
    turns[-1] += ep.reward
    ep.metadata["turn_rewards"] = turns
    ep.reward_components = {**ep.reward_components, "env": float(sum(env))}
    ep.reward = float(sum(turns))
