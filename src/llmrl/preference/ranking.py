"""Preference sources and pair construction for online preference training (IPO arXiv:2502.16182,
ONPO arXiv:2502.16852, CLaMP-DPO arXiv:2502.18008).

A **preference source** turns ``n`` sampled completions of each prompt into one score per completion
(higher = preferred), through one small interface, :class:`PreferenceSource`:

* :class:`RewardSource` — reward functions ``(completion, sample) -> float`` (a task's verifier rewards);
* :class:`RewardModelSource` — a trained reward model (:func:`llmrl.rewards.reward_model.reward_model_reward`);
* :class:`JudgeSource` — an LLM judge read from its Yes/No probabilities, p_yes / (p_yes + p_no)
  (:func:`llmrl.rewards.judge.judge_scores`); pass the policy itself as the model for self-judging (IPO);
* :class:`PairwiseSource` — a pairwise oracle ``P(y1 ≻ y2 | x)`` (any ``callable(prompt, y1, y2) -> prob``,
  e.g. :func:`pairwise_judge`), turned into scores by **win rates**: the score of completion i is the mean
  over j ≠ i of P(y_i ≻ y_j) (``ranking="soft"``, a Borda count), or of 1[P > ½] + ½·1[P = ½]
  (``ranking="hard"``, a Copeland count). The oracle is asked once per unordered pair i < j and
  P(y_j ≻ y_i) is taken as 1 − P(y_i ≻ y_j); ``both_orders=True`` asks both orders and averages
  P(y_i ≻ y_j) with 1 − P(y_j ≻ y_i) (removes a judge's position bias, twice the calls).

Pairs (:class:`llmrl.tasks.preference.PreferencePair`, scores in ``meta``) are built from scored groups by

* :func:`best_worst_pairs` — per prompt, the highest-scoring completion vs the lowest (IPO);
  prompts whose best and worst scores are equal (ties) give no pair;
* :func:`clamp_pairs` — CLaMP-DPO (NotaGen): chosen = the top ``k_top`` completions of the prompt by score,
  minus malformed ones and near-copies of the ground truth; rejected = the bottom ``k_bottom`` by score;
  pairs = every chosen × rejected whose scores differ (see the function for the exact rules);
* :func:`oracle_pairs` — direct pair labelling by a pairwise oracle (ONPO's practice): the completions
  of a prompt are paired in sampling order (1st with 2nd, 3rd with 4th, ...) and the oracle labels
  each pair.

Near-copy similarity is computed offline, without an embedding model (CLaMP 2 is not available):
``"ratio"`` is :class:`difflib.SequenceMatcher`'s ratio 2·M/(|a|+|b|) (M = matched characters), and
``"ngram"`` is the cosine of character-trigram count vectors (faster on long texts).
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from llmrl.core.ops import right_pad
from llmrl.models.loading import eval_mode
from llmrl.rewards.base import RewardFn
from llmrl.rewards.judge import instruction_of
from llmrl.rewards.pool import PoolOptions, RewardPool
from llmrl.tasks.preference import PreferencePair

if TYPE_CHECKING:
    import random

    from llmrl.core.types import Sample

PairwiseOracle = Callable[[Any, str, str], float]
"""``oracle(prompt, y1, y2) -> P(y1 ≻ y2 | prompt)`` in [0, 1]; ``prompt`` is the sample's prompt."""

SIMILARITIES = ("ratio", "ngram")
RANKINGS = ("soft", "hard")


@dataclass
class ScoredGroup:
    """The ``n`` completions sampled for one prompt, their scores and whether each is well formed."""

    sample: Sample
    completions: list[str]
    scores: list[float]
    well_formed: list[bool] = field(default_factory=list)  # empty = all well formed

    def __post_init__(self) -> None:
        if len(self.scores) != len(self.completions):
            raise ValueError(f"ScoredGroup: {len(self.completions)} completions but {len(self.scores)} scores")
        if self.well_formed and len(self.well_formed) != len(self.completions):
            raise ValueError(f"ScoredGroup: {len(self.completions)} completions but "
                             f"{len(self.well_formed)} well_formed flags")

    def ok(self, i: int) -> bool:
        return not self.well_formed or bool(self.well_formed[i])


class PreferenceSource(Protocol):
    """Scores every completion of every prompt: ``completions[i]`` are the completions of ``samples[i]``."""

    def score(self, samples: Sequence[Sample], completions: Sequence[Sequence[str]]) -> list[list[float]]: ...


class RewardSource:
    """Scores = the weighted sum of reward functions (a failing one contributes ``failure_value``), computed
    in a :class:`~llmrl.rewards.pool.RewardPool`: ``pool`` (e.g. the task's,
    :func:`~llmrl.rewards.pool.task_pool`, whose functions must be ``fns``), else one of its own over ``fns``
    with ``options``, started on first use. A hanging or crashing reward scores ``failure_value``."""

    def __init__(self, fns: Mapping[str, RewardFn] | RewardFn, weights: Mapping[str, float] | None = None,
                 failure_value: float = 0.0, pool: RewardPool | None = None,
                 options: PoolOptions | None = None) -> None:
        self.fns = dict(fns) if isinstance(fns, Mapping) else {"reward": fns}
        self.weights, self.failure_value = weights, failure_value
        self.pool = pool if pool is not None else RewardPool(self.fns, options)

    def score(self, samples: Sequence[Sample], completions: Sequence[Sequence[str]]) -> list[list[float]]:
        flat_c = [c for cs in completions for c in cs]
        flat_s = [s for s, cs in zip(samples, completions, strict=True) for _ in cs]
        outs = self.pool.score(flat_c, flat_s, failure_value=self.failure_value, weights=self.weights)
        return _unflatten([o.total for o in outs], completions)


class JudgeSource:
    """Scores = p_yes / (p_yes + p_no) of a Yes/No judge (IPO); ``model`` may be the policy itself."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, category: str = "chat", max_tokens: int = 1024,
                 batch_size: int = 16, instruction_key: str = "prompt") -> None:
        self.model, self.tokenizer, self.category = model, tokenizer, category
        self.max_tokens, self.batch_size, self.instruction_key = max_tokens, batch_size, instruction_key

    def score(self, samples: Sequence[Sample], completions: Sequence[Sequence[str]]) -> list[list[float]]:
        from llmrl.rewards.judge import judge_scores

        flat = [(instruction_of(s, self.instruction_key), c) for s, cs in zip(samples, completions, strict=True)
                for c in cs]
        scores = judge_scores(self.model, self.tokenizer, flat, self.category, self.max_tokens, self.batch_size)
        return _unflatten(scores, completions)


class RewardModelSource:
    """Scores = a reward model's scalar at the last token of prompt + completion + EOS, tokenised exactly like
    its training pairs: wraps :class:`llmrl.rewards.reward_model.RewardModelReward` (from
    :func:`llmrl.rewards.reward_model.reward_model_reward`), or anything with the same
    ``score_batch(completions, samples) -> list[float]``."""

    def __init__(self, reward: Any) -> None:
        if not callable(getattr(reward, "score_batch", None)):
            raise TypeError(f"RewardModelSource needs an object with score_batch(completions, samples), "
                            f"got {type(reward).__name__}")
        self.reward = reward

    def score(self, samples: Sequence[Sample], completions: Sequence[Sequence[str]]) -> list[list[float]]:
        flat_c = [c for cs in completions for c in cs]
        flat_s = [s for s, cs in zip(samples, completions, strict=True) for _ in cs]
        return _unflatten(self.reward.score_batch(flat_c, flat_s) if flat_c else [], completions)


class PairwiseSource:
    """Scores = win rates under a pairwise oracle (``ranking="soft"``: mean P(y_i ≻ y_j) over j ≠ i;
    ``"hard"``: mean of 1[P > ½] + ½·1[P = ½]). A prompt with one completion scores 0.5."""

    def __init__(self, oracle: PairwiseOracle, ranking: str = "soft", both_orders: bool = False) -> None:
        if ranking not in RANKINGS:
            raise ValueError(f"pairwise ranking must be one of {RANKINGS}, got {ranking!r}")
        self.oracle, self.ranking, self.both_orders = oracle, ranking, both_orders

    def prob(self, prompt: Any, y1: str, y2: str) -> float:
        """P(y1 ≻ y2 | prompt), checked to lie in [0, 1] (averaged over both orders if asked)."""
        p = _check_prob(self.oracle(prompt, y1, y2))
        if self.both_orders:
            p = 0.5 * (p + 1.0 - _check_prob(self.oracle(prompt, y2, y1)))
        return p

    def win_matrix(self, prompt: Any, completions: Sequence[str]) -> list[list[float]]:
        """``W[i][j]`` = P(y_i ≻ y_j) (diagonal 0.5)."""
        n = len(completions)
        w = [[0.5] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                w[i][j] = self.prob(prompt, completions[i], completions[j])
                w[j][i] = 1.0 - w[i][j]
        return w

    def score(self, samples: Sequence[Sample], completions: Sequence[Sequence[str]]) -> list[list[float]]:
        out = []
        for s, cs in zip(samples, completions, strict=True):
            w, n = self.win_matrix(s["prompt"], cs), len(cs)
            if n < 2:
                out.append([0.5] * n)
                continue
            if self.ranking == "hard":
                w = [[1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in row] for row in w]
            out.append([(sum(row) - w[i][i]) / (n - 1) for i, row in enumerate(w)])
        return out


def _check_prob(p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"pairwise oracle returned {p}, expected a probability in [0, 1]")
    return p


def _unflatten(flat: Sequence[float], like: Sequence[Sequence[str]]) -> list[list[float]]:
    out, i = [], 0
    for cs in like:
        out.append([float(x) for x in flat[i : i + len(cs)]])
        i += len(cs)
    return out


# -- a pairwise LLM judge -------------------------------------------------------------------------------
PAIRWISE_INSTRUCTION = ("Below is a question and two responses, A and B. Which response is better? "
                        "Answer with just A/B.")
A_VARIANTS = ("A", " A")
B_VARIANTS = ("B", " B")


def pairwise_judge_prompt(instruction: str, a: str, b: str) -> str:
    """The raw-text (no chat template) prompt of :func:`pairwise_judge`."""
    return (f"{PAIRWISE_INSTRUCTION}\n\nUser : {instruction}\n\nResponse A : {a}\n\nResponse B : {b}\n\n"
            f"Answer:")


def pairwise_judge(model: torch.nn.Module, tokenizer: Any, max_tokens: int = 1024) -> PairwiseOracle:
    """A pairwise oracle read from an LM's next-token distribution, the pairwise analogue of the IPO judge:
    P(y1 ≻ y2) = p_A / (p_A + p_B), with p_A the teacher-forced probability of "A" or " A" after
    :func:`pairwise_judge_prompt` (y1 shown as A); 0.5 when both are 0. Over-long prompts keep their
    last ``max_tokens`` tokens. Wrap it in :class:`PairwiseSource` with ``both_orders=True`` to cancel
    position bias."""
    variants = [tokenizer.encode(v, add_special_tokens=False) for v in A_VARIANTS + B_VARIANTS]

    @torch.no_grad()
    def oracle(prompt: Any, y1: str, y2: str) -> float:
        instruction = instruction_of({"prompt": prompt})
        p = tokenizer.encode(pairwise_judge_prompt(instruction, y1, y2), add_special_tokens=False)[-max_tokens:]
        dev = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids, _ = right_pad([p + v for v in variants], pad)  # right padding: causal attention needs no mask
        with eval_mode(model):
            logp = torch.log_softmax(model(input_ids=ids.to(dev)).logits.double(), -1)  # [V, L, vocab]
        probs = []
        for r, v in enumerate(variants):
            pos = torch.arange(len(p) - 1, len(p) + len(v) - 1, device=dev)
            probs.append(math.exp(float(logp[r, pos, torch.tensor(v, device=dev)].sum())))
        p_a, p_b = sum(probs[: len(A_VARIANTS)]), sum(probs[len(A_VARIANTS):])
        return p_a / (p_a + p_b) if p_a + p_b > 0 else 0.5

    return oracle


# -- scoring groups --------------------------------------------------------------------------------------
def score_groups(source: PreferenceSource, samples: Sequence[Sample], completions: Sequence[Sequence[str]],
                 well_formed: Sequence[Sequence[bool]] | None = None) -> list[ScoredGroup]:
    """Score every completion with ``source`` and bundle each prompt's completions into a group."""
    scores = source.score(samples, completions)
    if len(scores) != len(samples) or any(len(a) != len(b) for a, b in zip(scores, completions)):
        raise ValueError(f"{type(source).__name__}.score returned a result of the wrong shape")
    flags = well_formed if well_formed is not None else [[] for _ in samples]
    return [ScoredGroup(dict(s), list(cs), [float(x) for x in sc], list(f))
            for s, cs, sc, f in zip(samples, completions, scores, flags, strict=True)]


def _prefix(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The sample's ``assistant_prefix`` (text the completions were sampled after), kept for encode_pairs."""
    return {"assistant_prefix": sample["assistant_prefix"]} if "assistant_prefix" in sample else {}


def _pair(g: ScoredGroup, i: int, j: int, **meta: Any) -> PreferencePair:
    return PreferencePair(prompt=g.sample["prompt"], chosen=g.completions[i], rejected=g.completions[j],
                          meta={"chosen_score": g.scores[i], "rejected_score": g.scores[j], **meta,
                                **_prefix(g.sample)})


# -- pair construction -----------------------------------------------------------------------------------
def best_worst_pairs(groups: Sequence[ScoredGroup], min_margin: float = 0.0) -> list[PreferencePair]:
    """One pair per prompt: the highest-scoring completion (chosen) vs the lowest (rejected); among equal
    scores the first sampled wins. No pair when best − worst ≤ ``min_margin`` (ties) or both texts are
    identical."""
    out = []
    for gi, g in enumerate(groups):
        if len(g.completions) < 2:
            continue
        best = max(range(len(g.scores)), key=lambda i: (g.scores[i], -i))
        worst = min(range(len(g.scores)), key=lambda i: (g.scores[i], i))
        if g.scores[best] - g.scores[worst] > min_margin and g.completions[best] != g.completions[worst]:
            out.append(_pair(g, best, worst, group=gi))
    return out


def similarity(a: str, b: str, method: str = "ratio") -> float:
    """Offline text similarity in [0, 1]: ``"ratio"`` (difflib, 2·matches/(|a|+|b|)) or ``"ngram"``
    (cosine of character-trigram counts; strings shorter than 3 characters are compared whole)."""
    if method == "ratio":
        if not a and not b:
            return 1.0
        return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    if method == "ngram":
        ca, cb = _trigrams(a), _trigrams(b)
        if not ca or not cb:
            return 1.0 if a == b else 0.0
        dot = sum(v * cb[k] for k, v in ca.items())
        return dot / math.sqrt(sum(v * v for v in ca.values()) * sum(v * v for v in cb.values()))
    raise ValueError(f"unknown similarity {method!r}; valid: {', '.join(SIMILARITIES)}")


def _trigrams(s: str) -> Counter[str]:
    return Counter([s] if len(s) < 3 else (s[i : i + 3] for i in range(len(s) - 2)))


def references_of(sample: Mapping[str, Any], key: str | None) -> list[str]:
    """The ground-truth texts under ``key`` (a string or a list of strings); none when ``key`` is None."""
    if key is None:
        return []
    if key not in sample:
        raise ValueError(f"near-copy filter: sample has no reference column {key!r}; has {sorted(sample)}")
    ref = sample[key]
    refs = [ref] if isinstance(ref, str) else list(ref) if isinstance(ref, (list, tuple)) else None
    if refs is None or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"near-copy filter: column {key!r} must be a string or a list of strings")
    return refs


def fraction_count(n: int, frac: float) -> int:
    """How many of ``n`` completions a fraction selects: round(frac·n) (halves up), at least 1, at most n // 2
    (so the chosen and rejected sets never overlap)."""
    return min(max(1, math.floor(frac * n + 0.5)), n // 2)


def clamp_pairs(groups: Sequence[ScoredGroup], top_frac: float = 0.1, bottom_frac: float = 0.1,
                reference_key: str | None = None, max_similarity: float = 0.95,
                similarity_method: str = "ratio") -> list[PreferencePair]:
    """CLaMP-DPO pairs (NotaGen: Wang et al., 2025, arXiv:2502.18008). Per prompt with n ≥ 2 completions,
    ranked by score
    (stable: among equal scores the earlier sampled ranks higher):

    * k_top = :func:`fraction_count` (n, ``top_frac``) and k_bottom = :func:`fraction_count` (n, ``bottom_frac``);
    * chosen = the top k_top, then minus the malformed ones and the near-copies of the ground truth
      (similarity > ``max_similarity`` to any text under ``reference_key``; no filter when it is None) —
      filtered completions are dropped, not replaced by lower-ranked ones;
    * rejected = the bottom k_bottom (malformed ones included: they are legitimate negatives);
    * pairs = every chosen × rejected with chosen score > rejected score and different texts.
    """
    if not (0.0 < top_frac <= 0.5 and 0.0 < bottom_frac <= 0.5):
        raise ValueError(f"clamp_pairs: top_frac and bottom_frac must be in (0, 0.5], got {top_frac}, {bottom_frac}")
    if similarity_method not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity_method!r}; valid: {', '.join(SIMILARITIES)}")
    out = []
    for gi, g in enumerate(groups):
        n = len(g.completions)
        if n < 2:
            continue
        order = sorted(range(n), key=lambda i: (-g.scores[i], i))
        top = order[: fraction_count(n, top_frac)]
        bottom = order[n - fraction_count(n, bottom_frac):]
        refs = references_of(g.sample, reference_key)
        chosen = [i for i in top if g.ok(i)
                  and all(similarity(g.completions[i], r, similarity_method) <= max_similarity for r in refs)]
        out += [_pair(g, i, j, group=gi) for i in chosen for j in bottom
                if g.scores[i] > g.scores[j] and g.completions[i] != g.completions[j]]
    return out


def oracle_pairs(samples: Sequence[Sample], completions: Sequence[Sequence[str]], oracle: PairwiseOracle, *,
                 label: str = "threshold", rng: random.Random | None = None) -> list[PreferencePair]:
    """Direct pair labelling by a pairwise oracle: the completions of each prompt are paired in sampling
    order (y1 with y2, y3 with y4, ...; an odd last one is unused) and the oracle's P = P(y1 ≻ y2) labels
    each pair. ``label="threshold"``: y1 wins when P > ½, y2 when P < ½, no pair at P = ½;
    ``label="sample"``: y1 wins with probability P (drawn from ``rng``), the stochastic preference the
    ONPO analysis assumes. Identical texts give no pair. ``meta["prob"]`` = P(chosen ≻ rejected)."""
    if label not in ("threshold", "sample"):
        raise ValueError(f"oracle_pairs: label must be threshold or sample, got {label!r}")
    if label == "sample" and rng is None:
        raise ValueError("oracle_pairs: label='sample' needs an rng")
    out = []
    for gi, (s, cs) in enumerate(zip(samples, completions, strict=True)):
        for k in range(0, len(cs) - 1, 2):
            y1, y2 = cs[k], cs[k + 1]
            if y1 == y2:
                continue
            p = _check_prob(oracle(s["prompt"], y1, y2))
            if label == "threshold":
                if p == 0.5:
                    continue
                first = p > 0.5
            else:
                first = rng.random() < p  # type: ignore[union-attr]
            w, lo, pw = (y1, y2, p) if first else (y2, y1, 1.0 - p)
            out.append(PreferencePair(prompt=s["prompt"], chosen=w, rejected=lo,
                                      meta={"prob": pw, "group": gi, **_prefix(s)}))
    return out


PAIRINGS = ("best_worst", "clamp", "oracle_pairs")

__all__ = [
    "PAIRINGS", "RANKINGS", "SIMILARITIES", "JudgeSource", "PairwiseOracle", "PairwiseSource", "PreferenceSource",
    "RewardModelSource", "RewardSource", "ScoredGroup", "best_worst_pairs", "clamp_pairs", "fraction_count",
    "instruction_of", "oracle_pairs", "pairwise_judge", "pairwise_judge_prompt", "references_of", "score_groups",
    "similarity",
]
