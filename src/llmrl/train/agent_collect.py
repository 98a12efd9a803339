"""Multi-agent discussion batches for the RL loop (``rollout.agents``; MAPoRL, docs/agents.md).

:class:`AgentCollector` replaces the loop's :class:`~llmrl.train.collect.Collector`: it runs
:func:`llmrl.rollout.agents.discuss` on the step's prompts, scores every round's answer with the task's
verdicts (in the task's reward pool), and gives each agent's episode its MAPoRL rewards
(:func:`~llmrl.rollout.agents.maporl_rewards`). The loop places ``metadata["turn_rewards"]`` on the last
token of each round's turn (:func:`llmrl.algos.turn_rewards.turn_token_rewards`); they are the differences
R_t − R_{t+1}, so every token of round t has the return R_t (γ = 1), and ``reward`` is R_0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmrl.core.types import Episode, Sample
from llmrl.rewards.pool import PoolOptions, RewardPool, task_pool
from llmrl.rollout.agents import discuss, maporl_rewards, turn_rewards_from_returns
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.tasks.base import Task
from llmrl.train.collect import DataStream, Rollouts, score_summary
from llmrl.train.config import AgentsConfig

if TYPE_CHECKING:
    from llmrl.config import Root


def round_verdicts(episodes: list[Episode], pool: RewardPool, failure_value: float = 0.0) -> None:
    """The task's verdicts on every round's answer of every episode (in ``pool``): ``metadata``
    ``round_correct`` / ``round_well_formed`` (one per round) and the reward failures of all rounds."""
    texts = [(ep, t) for ep in episodes for t in ep.metadata["turn_texts"]]
    outs = pool.score([t for _, t in texts], [ep.sample for ep, _ in texts], failure_value=failure_value, checks=True)
    k = 0
    for ep in episodes:
        mine = outs[k : k + len(ep.metadata["turn_texts"])]
        k += len(mine)
        ep.metadata["round_correct"] = [bool(o.checks.get("correct", False)) for o in mine]
        ep.metadata["round_well_formed"] = [bool(o.checks.get("well_formed", False)) for o in mine]
        ep.metadata["reward_failures"] = [f for o in mine for f in o.failures]
        ep.metadata["reward_failed"] = [f for o in mine for f in o.failed]
        ep.metadata["reward_timeouts"] = [f for o in mine for f in o.timed_out]


def score_discussions(episodes: list[Episode], agents: AgentsConfig, pool: RewardPool,
                      failure_value: float = 0.0) -> None:
    """Fill every episode's rewards from the task's verdicts on all its rounds' answers (:func:`round_verdicts`).

    q_{t,a} = 1.0 if the task finds agent a's round-t answer correct, 0.0 if wrong, None if not well formed
    (missing / malformed answer: reward ``agents.missing_reward``). Per episode: ``metadata`` ``maporl_rewards``
    (R_t), ``turn_rewards`` (R_t − R_{t+1}); ``reward`` = R_0; ``correct`` / ``well_formed`` = those of the
    last round; ``reward_components`` ``{"maporl": R_0}``. ``episodes`` must be ordered as
    :func:`~llmrl.rollout.agents.discuss` returns them (discussion by discussion, agent by agent).
    """
    A = agents.count
    if not A or len(episodes) % A:
        raise ValueError(f"score_discussions: {len(episodes)} episodes are not discussions of {A} agents")
    round_verdicts(episodes, pool, failure_value)
    for d in range(0, len(episodes), A):
        team = episodes[d : d + A]
        rounds = len(team[0].metadata["turn_texts"])
        scores = [[(1.0 if e.metadata["round_correct"][t] else 0.0) if e.metadata["round_well_formed"][t] else None
                   for e in team] for t in range(rounds)]
        R = maporl_rewards(scores, agents.gamma, agents.missing_reward)  # [rounds][agents]
        for a, ep in enumerate(team):
            returns = [R[t][a] for t in range(rounds)]
            ep.metadata["maporl_rewards"] = returns
            ep.metadata["turn_rewards"] = turn_rewards_from_returns(returns)
            ep.reward, ep.reward_components = returns[0], {"maporl": returns[0]}
            ep.metadata["correct"] = ep.metadata["round_correct"][-1]
            ep.metadata["well_formed"] = ep.metadata["round_well_formed"][-1]


def round_metrics(episodes: list[Episode], prefix: str = "agents/") -> dict[str, float]:
    """Per round r: ``accuracy_round{r}``, ``format_round{r}`` and (when scored for training)
    ``reward_round{r}``, the mean over all agents' episodes."""
    if not episodes:
        return {}
    n, out = len(episodes), {}
    for r in range(len(episodes[0].metadata["round_correct"])):
        out[f"{prefix}accuracy_round{r}"] = sum(e.metadata["round_correct"][r] for e in episodes) / n
        out[f"{prefix}format_round{r}"] = sum(e.metadata["round_well_formed"][r] for e in episodes) / n
        if "maporl_rewards" in episodes[0].metadata:
            out[f"{prefix}reward_round{r}"] = sum(e.metadata["maporl_rewards"][r] for e in episodes) / n
    return out


@dataclass
class AgentCollector:
    """The RL loop's collector for ``rollout.agents``: ``collector(params) -> Rollouts`` with
    ``prompts`` × ``params.n`` discussions of ``agents.count`` agents (one episode per agent)."""

    generators: list[Generator]  # one per agent (the same object for a shared policy)
    tokenizer: Any
    task: Task
    data: DataStream
    prompts: int
    chat_template: bool | None
    failure_value: float
    agents: AgentsConfig
    pool_options: PoolOptions | None = None  # where the verdicts run (None = the defaults)
    dynamic_sampling: bool = False  # not with discussions (a config error before this is built)
    first_prompt: int | None = None  # torchrun: the global index of this rank's first prompt (seeds per group)
    pool: RewardPool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.generators) != self.agents.count:
            raise ValueError(f"rollout.agents.count: {self.agents.count} agents but {len(self.generators)} generators")
        self.pool = task_pool(self.task, self.pool_options or PoolOptions.of(None))

    def seed_per_group(self, first_prompt: int) -> None:
        """Under torchrun: seed every agent's answer by its global place in the step (prompt, discussion,
        agent), so a rank's discussions are those one process holding the whole batch samples with the same
        per-group seeds, whatever the world size; group ids are global too."""
        self.first_prompt = first_prompt

    def __call__(self, params: SamplingParams) -> Rollouts:
        gens, offset = self.generators, 0
        if self.first_prompt is not None:
            from llmrl.train.distributed import PerGroupSeeded

            # discuss() samples one prompt per (prompt, discussion, agent of that generator), in that order
            users = {id(g): sum(x is g for x in gens) for g in gens}
            wrapped = {id(g): PerGroupSeeded(g, self.first_prompt * params.n * users[id(g)]) for g in gens}
            gens, offset = [wrapped[id(g)] for g in gens], self.first_prompt * self.agents.count
        eps = run_discussions(gens, self.tokenizer, self.data.next(self.prompts), params,  # type: ignore[arg-type]
                              self.agents, self.chat_template, group_offset=offset)
        score_discussions(eps, self.agents, self.pool, self.failure_value)
        metrics = {**score_summary(eps), **round_metrics(eps)}
        return Rollouts(episodes=eps, metrics=metrics)


def run_discussions(generators: list[Generator], tokenizer: Any, samples: list[Sample], params: SamplingParams,
                    agents: AgentsConfig, chat_template: bool | None, group_offset: int = 0) -> list[Episode]:
    """:func:`~llmrl.rollout.agents.discuss` with the ``rollout.agents`` settings."""
    return discuss(generators, tokenizer, samples, params, rounds=agents.rounds, chat_template=chat_template,
                   roles=agents.roles, template=agents.template, answer_template=agents.answer_template,
                   separator=agents.separator, group_offset=group_offset)


def evaluate_discussion(generators: list[Generator], tokenizer: Any, task: Task, samples: list[Sample], *,
                        agents: AgentsConfig, chat_template: bool | None, max_new_tokens: int, temperature: float,
                        seed: int, batch_size: int = 128, stop: list[str] | None = None) -> dict[str, float]:
    """One discussion per held-out sample at ``temperature`` (0 = greedy): ``discussion/accuracy_round{r}``
    and ``discussion/format_round{r}`` (mean over agents), ``discussion/single`` (round 0: each agent alone)
    and ``discussion/final`` (the last round)."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, stop=list(stop or []))
    eps: list[Episode] = []
    for i in range(0, len(samples), batch_size):
        eps += run_discussions(generators, tokenizer, samples[i : i + batch_size], params, agents, chat_template)
    round_verdicts(eps, task_pool(task))
    out = round_metrics(eps, prefix="discussion/")
    if out:
        out["discussion/single"] = out["discussion/accuracy_round0"]
        out["discussion/final"] = out[f"discussion/accuracy_round{agents.rounds - 1}"]
    return out


def build_agent_collector(generator: Generator, tokenizer: Any, task: Task, cfg: Root, data: DataStream,
                          failure_value: float) -> AgentCollector:
    """The collector of ``rollout.agents`` (shared policy: ``generator`` serves every agent)."""
    r = cfg.rollout
    return AgentCollector([generator] * r.agents.count, tokenizer, task, data, prompts=r.prompts_per_step,
                          chat_template=cfg.model.chat_template, failure_value=failure_value, agents=r.agents,
                          pool_options=PoolOptions.for_run(cfg))
