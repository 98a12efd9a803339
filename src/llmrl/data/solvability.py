r"""Solvability and difficulty from a model's rollouts (Big-Math: Albalak et al., 2025, arXiv:2502.17387).

Each problem gets ``k`` sampled completions (64 in the paper); a completion is correct when the ``math``
task's verifier accepts it (:meth:`llmrl.tasks.math_task.MathTask.is_correct`: last ``\boxed{}`` — or
``<answer>`` for the tagged style — checked with :func:`llmrl.rewards.math.math_equal`, in the task's reward worker pool, so a hostile answer
cannot stall curation: :mod:`llmrl.rewards.pool`, as in training and ``llmrl reward``). The solve rate is
correct / k. Problems with fewer than ``min_correct`` (default 1) correct rollouts are unsolvable and removed.

Difficulty (:func:`difficulty_edges`, :func:`difficulty`): the kept problems are split into quintiles of
solve rate, as Big-Math reports difficulty. With the kept solve rates sorted ascending (``n`` of them), the
edges are ``e_q = sorted[floor(q n)]`` for q = 0.2, 0.4, 0.6, 0.8, and a problem with solve rate ``s`` gets
``difficulty = 5 - #{edges e : s >= e}``: 5 (hardest) for ``s < e_0.2``, 4 for ``e_0.2 <= s < e_0.4``, ...,
1 (easiest) for ``s >= e_0.8``. Distinct rates give five equal buckets (n = 10: two each); equal rates
stay together in the easier bucket (rows solved in every rollout always get 1), so with many ties some
buckets are smaller or empty. Fixed edges (e.g. ``0.2, 0.4, 0.6, 0.8``, comparable across datasets and
models) can be given instead; then difficulty = len(edges) + 1 - #{e : s >= e}.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

from llmrl.core.progress import progress_bar
from llmrl.rewards.pool import task_pool
from llmrl.tasks.math_task import MathTask

GenerateFn = Callable[[list[str], int], list[list[str]]]
"""``generate(prompts, k)``: ``k`` completion texts for each prompt text."""

QUANTILES = (0.2, 0.4, 0.6, 0.8)


def count_correct(completions: Sequence[str], gold: str, task: MathTask) -> int:
    """How many completions the math task's verifier accepts for ``gold`` (checked in the task's reward pool:
    a verdict that hangs or crashes counts as not correct, :mod:`llmrl.rewards.pool`)."""
    outcomes = task_pool(task).score(list(completions), [{"answer": gold}] * len(completions), checks=True)
    return sum(bool(o.checks.get("correct")) for o in outcomes)


def solve_counts(prompts: Sequence[str], golds: Sequence[str], generate: GenerateFn, k: int, *,
                 style: str = "boxed", chunk: int = 64, progress: bool = False) -> list[int]:
    """Correct rollouts (out of ``k``) per problem; ``generate`` is called on ``chunk`` prompts at a time."""
    if k < 1:
        raise ValueError(f"rollouts must be >= 1, got {k}")
    if len(prompts) != len(golds):
        raise ValueError(f"{len(prompts)} prompts but {len(golds)} answers")
    task, counts = MathTask(style=style), []
    bar = progress_bar(len(prompts), "rollouts", enabled=progress, unit="problem", file=sys.stderr)
    for i in range(0, len(prompts), max(1, chunk)):
        batch = list(prompts[i : i + max(1, chunk)])
        outs = generate(batch, k)
        if len(outs) != len(batch) or any(len(o) != k for o in outs):
            raise RuntimeError(f"generate returned {[len(o) for o in outs]} completions for {len(batch)} "
                               f"prompts, expected {k} each")
        flat = [c for o in outs for c in o]  # one pool call per chunk: k completions of each problem
        gold = [{"answer": g} for g in golds[i : i + len(batch)] for _ in range(k)]
        verdicts = [bool(o.checks.get("correct")) for o in task_pool(task).score(flat, gold, checks=True)]
        counts += [sum(verdicts[j * k : (j + 1) * k]) for j in range(len(batch))]
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return counts


def difficulty_edges(rates: Sequence[float]) -> list[float]:
    """Quintile edges ``sorted(rates)[floor(q n)]`` for q = 0.2, 0.4, 0.6, 0.8 (empty list for no rates)."""
    ordered = sorted(rates)
    if not ordered:
        return []
    return [ordered[min(math.floor(q * len(ordered)), len(ordered) - 1)] for q in QUANTILES]


def difficulty(rate: float, edges: Sequence[float]) -> int:
    """1 (easiest) .. len(edges)+1 (hardest): len(edges) + 1 minus the number of edges ``rate`` reaches."""
    return len(edges) + 1 - sum(rate >= e for e in edges)


def check_edges(edges: Sequence[float]) -> list[float]:
    """Validate user-given bucket edges: strictly increasing numbers in [0, 1]."""
    out = [float(e) for e in edges]
    if not out or any(not 0.0 <= e <= 1.0 for e in out) or any(a >= b for a, b in zip(out, out[1:])):
        raise ValueError(f"difficulty edges must be strictly increasing numbers in [0, 1], got {list(edges)}")
    return out


def model_generator(model_dir: str, *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                    seed: int = 0, dtype: str = "float32", device: str = "cpu",
                    chat_template: bool | None = None, batch_size: int = 64) -> GenerateFn:
    """A :data:`GenerateFn` sampling from a local Hugging Face model directory with the KV-cache sampler.

    Prompts are rendered like training prompts (the tokenizer's chat template when it has one, unless
    ``chat_template`` is False). At most ``batch_size`` sequences are sampled per sampler call (prompts × k,
    or k split over several calls when k > batch_size); each call is seeded from ``seed`` and a call
    counter, so a run is reproducible.
    """
    from llmrl.core.config import ConfigError
    from llmrl.core.seed import derive_seed
    from llmrl.models.loading import encode_prompt, load_model, load_tokenizer, render_prompt
    from llmrl.rollout.base import SamplingParams
    from llmrl.rollout.sampler import KVCacheSampler

    tok = load_tokenizer(model_dir)
    if chat_template and not getattr(tok, "chat_template", None):
        raise ConfigError(f"chat template requested but the tokenizer in {model_dir} has none")
    model = load_model(model_dir, dtype=dtype, device=device)
    sampler = KVCacheSampler(model, tok)
    calls = [0]

    def generate(prompts: list[str], k: int) -> list[list[str]]:
        ids = [encode_prompt(tok, render_prompt(tok, {"prompt": p}, chat_template)) for p in prompts]
        n = min(k, max(1, batch_size))  # samples per prompt and call; k > batch_size takes several calls
        per = max(1, batch_size // n)
        out: list[list[str]] = []
        for i in range(0, len(ids), per):
            texts: list[list[str]] = [[] for _ in ids[i : i + per]]
            while len(texts[0]) < k:
                params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                        n=min(n, k - len(texts[0])), seed=derive_seed(seed, "curate", calls[0]))
                calls[0] += 1
                for t, gens in zip(texts, sampler.generate(ids[i : i + per], params)):
                    t += [g.text for g in gens]
            out += texts
        return out

    return generate
