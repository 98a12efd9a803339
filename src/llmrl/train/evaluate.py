"""Held-out evaluation: greedy accuracy, pass@k, mean reward, mean length, format rate."""

from __future__ import annotations

from math import comb
from typing import Any

from llmrl.core.seed import derive_seed
from llmrl.core.types import Sample
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.rollout.episodes import generate_episodes
from llmrl.rollout.multiturn import EnvironmentFactory, rollout_episodes
from llmrl.tasks.base import Task
from llmrl.train.collect import score_episodes, score_summary


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 − C(n−c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def evaluate(generator: Generator, tokenizer: Any, task: Task, samples: list[Sample], *, max_new_tokens: int,
             chat_template: bool | None, pass_k: list[int], n_samples: int, temperature: float, seed: int,
             batch_size: int = 128, stop: list[str] | None = None) -> dict[str, float]:
    """Greedy metrics on every sample; pass@k from ``n_samples`` sampled completions per prompt."""
    greedy = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=list(stop or []))
    eps = []
    for i in range(0, len(samples), batch_size):
        eps += generate_episodes(generator, tokenizer, samples[i : i + batch_size], greedy, chat_template, i)
    score_episodes(eps, task, 0.0, max_new_tokens)
    out = score_summary(eps)
    out.pop("reward_std", None)
    ks = [k for k in pass_k if k <= n_samples]
    if ks:
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=n_samples,
                                seed=derive_seed(seed, "eval"), stop=list(stop or []))
        totals = dict.fromkeys(ks, 0.0)
        per = max(1, batch_size // n_samples)
        for i in range(0, len(samples), per):
            chunk = samples[i : i + per]
            sampled = generate_episodes(generator, tokenizer, chunk, params, chat_template, i)
            score_episodes(sampled, task, 0.0, max_new_tokens)
            for j in range(len(chunk)):
                group = sampled[j * n_samples : (j + 1) * n_samples]
                c = sum(bool(e.metadata["correct"]) for e in group)
                for k in ks:
                    totals[k] += pass_at_k(n_samples, c, k)
        out.update({f"pass@{k}": v / len(samples) for k, v in totals.items()})
    return out


def evaluate_environment(generator: Generator, tokenizer: Any, task: Task, samples: list[Sample],
                         factory: EnvironmentFactory, *, max_turns: int, max_new_tokens: int,
                         chat_template: bool | None, max_episode_tokens: int = 0, batch_size: int = 128,
                         stop: list[str] | None = None) -> dict[str, float]:
    """Greedy multi-turn episodes through the environment, one per sample: ``env/accuracy`` (the task's verdict on
    what it scores), ``env/reward``, ``env/turns``, and ``env/NAME``: the mean over episodes of each number in the
    last step's ``info["metrics"]`` (``None`` = not applicable: left out of that mean)."""
    greedy = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=list(stop or []))
    eps = []
    for i in range(0, len(samples), batch_size):
        eps += rollout_episodes(generator, tokenizer, samples[i : i + batch_size], greedy, factory,
                                chat_template=chat_template, max_turns=max_turns,
                                max_episode_tokens=max_episode_tokens, group_offset=i)
    score_episodes(eps, task, 0.0, max_new_tokens)
    n = max(len(eps), 1)
    out = {"env/accuracy": sum(bool(e.metadata["correct"]) for e in eps) / n,
           "env/reward": sum(e.reward + sum(e.metadata["env_rewards"]) for e in eps) / n,
           "env/turns": sum(len(e.turn_spans) for e in eps) / n}
    sums: dict[str, list[float]] = {}
    for e in eps:
        info = e.metadata["env_info"][-1] if e.metadata["env_info"] else {}
        for k, v in (info.get("metrics") or {}).items():
            if v is not None:
                sums.setdefault(k, []).append(float(v))
    out.update({f"env/{k}": sum(v) / len(v) for k, v in sums.items()})
    return out
