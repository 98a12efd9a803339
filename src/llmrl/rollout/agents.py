"""Multi-agent discussion (MAPoRL, arXiv 2502.18439): A agents answer a question over T rounds.

Round 0: every agent answers on its own. Round t > 0: each agent is shown the other agents' answers of
round t − 1 (a user message appended to its own episode, ``loss_mask`` 0, by
:func:`~llmrl.rollout.chat_tokens.continuation_tokens` after
:func:`~llmrl.rollout.chat_tokens.closing_tokens`) and answers again. Each agent's :class:`~llmrl.core.types.Episode`
is token-in/token-out: its own sampled tokens are kept exactly (mask 1, one turn span per round) and only
the new messages are tokenised and appended; the conversation is never re-rendered.

Agents are served by generators: the same object for every agent (one shared policy, optionally with a
role per agent) or one per agent (separate policies). Each round, all live episodes of the agents that
share a generator are sampled in one ``generate`` call.

Group ids: ``group_offset + i·A + a`` for sample i and agent a, so a group holds the ``params.n``
discussions' episodes of ONE agent on ONE question: the same prompt (and role), as GRPO/RLOO groups
assume; the other agents differ between them only through sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from llmrl.core.types import Episode, Sample
from llmrl.models.loading import encode_prompt, render_prompt
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.rollout.chat_tokens import closing_tokens, continuation_tokens, has_chat_template

DEFAULT_TEMPLATE = ("These are the answers of the other agents:\n{answers}\nUsing them as additional information, "
                    "give your updated answer to the question: {question}")
DEFAULT_ANSWER_TEMPLATE = "Agent {agent}: {answer}"


def _messages(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


def question_text(sample: Sample) -> str:
    """The question of a sample: its prompt string, or the content of its last user message."""
    prompt = sample["prompt"]
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        raise ValueError("sample prompt: a list of messages needs a user message (the question)")
    return users[-1]


def discussion_message(sample: Sample, agent: int, answers: Sequence[str], *, template: str = DEFAULT_TEMPLATE,
                       answer_template: str = DEFAULT_ANSWER_TEMPLATE, separator: str = "\n") -> str:
    """What ``agent`` is shown after a round: the other agents' ``answers`` (one per agent, its own left
    out), each ``answer_template.format(agent=j + 1, answer=...)``, joined by ``separator`` into
    ``template.format(answers=..., question=...)``."""
    others = [answer_template.format(agent=j + 1, answer=a.strip()) for j, a in enumerate(answers) if j != agent]
    return template.format(answers=separator.join(others), question=question_text(sample))


def _with_role(sample: Sample, role: str | None, chat: bool) -> Sample:
    """The sample as agent ``role`` sees it: a system message (chat template) or a text prefix (plain)."""
    if not role:
        return sample
    prompt = sample["prompt"]
    if chat:
        msgs = _messages(prompt)
        msgs = [{"role": "system", "content": role}, *(msgs[1:] if msgs[0]["role"] == "system" else msgs)]
        return {**sample, "prompt": msgs}
    if not isinstance(prompt, str):
        raise ValueError("agent roles without a chat template need string prompts")
    return {**sample, "prompt": role + prompt}


def discuss(generators: Sequence[Generator], tokenizer: Any, samples: list[Sample], params: SamplingParams, *,
            rounds: int, chat_template: bool | None, roles: Sequence[str] | None = None,
            template: str = DEFAULT_TEMPLATE, answer_template: str = DEFAULT_ANSWER_TEMPLATE,
            separator: str = "\n", group_offset: int = 0) -> list[Episode]:
    """``params.n`` discussions of ``len(generators)`` agents per sample, ``rounds`` rounds each.

    Returns the episodes ordered by sample, discussion, agent (``episodes[(i·n + k)·A + a]``), each with
    ``agent_id`` = a, one turn span per round, ``metadata`` ``agent``, ``discussion`` (k), ``turn_texts``
    (its answer of every round) and ``turn_rounds`` (the round of every turn). With G distinct generators,
    generator g samples round r with seed ``params.seed + r·G + g`` (None: unseeded): separate policies that
    start from the same weights do not draw the same samples.
    """
    A = len(generators)
    if A < 2:
        raise ValueError(f"discuss: needs at least 2 agents, got {A}")
    if rounds < 1:
        raise ValueError(f"discuss: rounds must be >= 1, got {rounds}")
    if roles is not None and len(roles) != A:
        raise ValueError(f"discuss: {len(roles)} roles for {A} agents")
    chat = has_chat_template(tokenizer, chat_template)
    episodes: list[Episode] = []
    histories: list[list[dict[str, str]]] = []
    for i, s in enumerate(samples):
        seen = [_with_role(s, roles[a] if roles else None, chat) for a in range(A)]
        ids = [encode_prompt(tokenizer, render_prompt(tokenizer, x, chat_template)) for x in seen]
        for k in range(params.n):
            for a in range(A):
                episodes.append(Episode(tokens=list(ids[a]), loss_mask=[0] * len(ids[a]),
                                        logprobs=[0.0] * len(ids[a]), sample=s, prompt_len=len(ids[a]),
                                        group_id=group_offset + i * A + a, agent_id=a,
                                        metadata={"agent": a, "discussion": k, "turn_texts": [],
                                                  "turn_rounds": []}))
                histories.append(_messages(seen[a]["prompt"]))
    # agents grouped by generator object: one generate call per distinct generator per round
    by_gen: dict[int, list[int]] = {}
    for a, g in enumerate(generators):
        by_gen.setdefault(id(g), []).append(a)
    one = replace(params, n=1)
    for r in range(rounds):
        if r > 0:  # show every agent the others' answers of round r - 1
            for d in range(0, len(episodes), A):
                answers = [episodes[d + a].metadata["turn_texts"][-1] for a in range(A)]
                for a in range(A):
                    j = d + a
                    ep = episodes[j]
                    new = [{"role": "user", "content": discussion_message(
                        ep.sample, a, answers, template=template, answer_template=answer_template,
                        separator=separator)}]
                    ep.append(continuation_tokens(tokenizer, histories[j], new, chat_template=chat), policy=False)
                    histories[j] += new
        for gi, agents in enumerate(by_gen.values()):  # generator gi samples round r with seed + r·G + gi
            one.seed = None if params.seed is None else params.seed + r * len(by_gen) + gi
            idx = [j for j in range(len(episodes)) if j % A in agents]
            gens = generators[agents[0]].generate([episodes[j].tokens for j in idx], one)
            for j, g in zip(idx, gens, strict=True):
                ep, gen = episodes[j], g[0]
                ep.append(gen.token_ids, policy=True, logprobs=gen.logprobs)
                ep.metadata["turn_texts"].append(gen.text)
                ep.metadata["turn_rounds"].append(r)
                ep.truncated = ep.truncated or gen.finish_reason == "length"
                histories[j].append({"role": "assistant", "content": gen.text})
                if r + 1 < rounds:  # close the turn (end-of-turn marker, mask 0) when it stopped without it
                    ep.append(closing_tokens(tokenizer, gen.token_ids, chat_template=chat), policy=False)
    for ep in episodes:
        ep.completion = ep.metadata["turn_texts"][-1]
    return episodes


def maporl_rewards(scores: Sequence[Sequence[float | None]], gamma: float = 0.3,
                   missing: float = -10.0) -> list[list[float]]:
    """MAPoRL's reward of agent a at round t (PAPERS.md §13):

    R_{t,a} = [q_{t,a} + Σ_{t'>t} γ^{t'−t} · mean_j q_{t',j}] / Σ_{t'≥t} γ^{t'−t},

    ``scores[t][a]`` = q_{t,a}, the verifier's score in [0, 1] of agent a's round-t answer, or None when the
    answer is missing / malformed: then R_{t,a} = ``missing`` (−10), and that answer counts as 0 in the
    mean over agents j (all agents, a included) of the later rounds. Returns R as ``[rounds][agents]``.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"maporl_rewards: gamma must be in [0, 1], got {gamma}")
    T = len(scores)
    if T == 0 or not scores[0]:
        raise ValueError("maporl_rewards: needs at least one round of at least one agent")
    A = len(scores[0])
    if any(len(row) != A for row in scores):
        raise ValueError(f"maporl_rewards: every round needs {A} scores, got {[len(r) for r in scores]}")
    for row in scores:
        for q in row:
            if q is not None and not 0.0 <= q <= 1.0:
                raise ValueError(f"maporl_rewards: scores must be in [0, 1] or None, got {q}")
    means = [sum(0.0 if q is None else q for q in row) / A for row in scores]
    out = []
    for t in range(T):
        future = sum(gamma ** (u - t) * means[u] for u in range(t + 1, T))
        norm = sum(gamma ** (u - t) for u in range(t, T))
        out.append([missing if q is None else (q + future) / norm for q in scores[t]])
    return out


def turn_rewards_from_returns(returns: Sequence[float]) -> list[float]:
    """Per-turn rewards whose undiscounted sum from turn t on is ``returns[t]``: r_t = R_t − R_{t+1}
    (R_T = 0). Placed on the last token of each turn, they give every token of turn t the return R_t
    (γ = 1, before any KL term): each round is credited with its own MAPoRL reward, as in the paper, where
    each turn is a PPO sample of its own."""
    return [r - (returns[t + 1] if t + 1 < len(returns) else 0.0) for t, r in enumerate(returns)]
