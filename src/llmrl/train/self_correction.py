"""Self-rewarding correction's SFT data (arXiv 2502.19613; PAPERS.md §10): sequential rejection sampling.

Through the ``self_correction`` environment (:mod:`llmrl.rollout.self_correction`) and with its ground-truth
verifier (the task's ``is_correct``), from the current policy:

1. ``n1`` first answers a1 per prompt (distinct texts; the first ``per_prompt`` right and wrong ones go on);
2. ``n2`` self-evaluations per a1; the first whose verdict matches the verifier is kept (y1);
3. a wrong a1 judged ``[VERIFY] wrong``: ``m1`` corrections a2, the first right one makes a **D1** row; a correct
   a1 told ``[VERIFY] wrong`` (the verdict written in, not sampled): ``m2`` corrections, the first right one makes
   a **D2** row; a correct a1 judged ``[VERIFY] correct`` is a **D3** row.

SFT masks (which turns get loss): D1 y1 and a2 (not the wrong a1); D2 a2 only (not the false verdict); D3 a1 and
y1. Rows are episodes built exactly as :func:`~llmrl.rollout.multiturn.rollout_episodes` builds them (sampled
token ids kept, only environment messages rendered, mask 0), so SFT and RL see the same token layout.

``format_warm_start`` (before the sampling): demonstrations in the episode format with random verdicts, so that
a tiny model trained from scratch can follow the format at all (a prompted base model does in the paper); its
verdicts carry no information about correctness, which the sampled statistics show (``srs/verdict_match``).
"""

from __future__ import annotations

import json
import math
import random
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrl.core.errors import ConfigError
from llmrl.core.seed import derive_seed
from llmrl.core.types import Episode, Sample
from llmrl.models.loading import encode_prompt, render_prompt
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.rollout.chat_tokens import closing_tokens, continuation_tokens, has_chat_template
from llmrl.rollout.multiturn import EnvironmentFactory, as_messages, environment_factory
from llmrl.rollout.self_correction import SelfCorrectionEnvironment, parse_verdict
from llmrl.train.build import build_generator
from llmrl.train.sft import demonstrations, run_sft

if TYPE_CHECKING:
    import torch

    from llmrl.config import Root
    from llmrl.tasks.base import Task

Turn = tuple[list[int], str, bool]
"""A policy turn: (token ids, text, trained = gets SFT loss)."""


@dataclass
class Row:
    """One SFT row: its kind (D1, D2, D3 or format), sample and policy turns."""

    kind: str
    sample: Sample
    turns: list[Turn]


def replay(tokenizer: Any, factory: EnvironmentFactory, sample: Sample, turns: list[Turn],
           chat_template: bool | None, open_end: bool = False) -> tuple[Episode, SelfCorrectionEnvironment]:
    """The episode of ``turns`` through a fresh environment (the prompt and the environment's messages mask 0,
    each turn's ids masked by its ``trained`` flag), and that environment after them. ``open_end``: also the
    environment's message after the last turn (a context to sample the next turn from)."""
    chat = has_chat_template(tokenizer, chat_template)
    env = factory()
    if not isinstance(env, SelfCorrectionEnvironment):
        raise ConfigError("rollout.env: self-correction data needs the self_correction environment")
    obs = env.reset(sample)
    ids = encode_prompt(tokenizer, render_prompt(tokenizer, {**sample, "prompt": obs}, chat_template))
    ep = Episode(tokens=list(ids), loss_mask=[0] * len(ids), logprobs=[0.0] * len(ids), sample=sample,
                 prompt_len=len(ids))
    messages = as_messages(obs)
    for k, (tids, text, trained) in enumerate(turns):
        ep.append(tids, policy=trained, logprobs=[0.0] * len(tids) if trained else None)
        prefix = sample.get("assistant_prefix", "") if k == 0 else ""
        messages.append({"role": "assistant", "content": prefix + text})
        res = env.step(text)
        if res.done and (k + 1 < len(turns) or open_end):
            raise ValueError(f"the environment ended the episode after turn {k + 1} of {len(turns)}")
        if k + 1 < len(turns) or open_end:
            new = as_messages(res.observations)
            ep.append(closing_tokens(tokenizer, tids, chat_template=chat)
                      + continuation_tokens(tokenizer, messages, new, chat_template=chat), policy=False)
            messages += new
    return ep, env


def _text_turn(tokenizer: Any, text: str, trained: bool) -> Turn:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return list(tokenizer.encode(text, add_special_tokens=False)) + eos, text, trained


def _sample(generator: Generator, contexts: list[list[int]], params: SamplingParams, k: int,
            batch_size: int) -> list[list[tuple[list[int], str]]]:
    out: list[list[tuple[list[int], str]]] = []
    for i in range(0, len(contexts), batch_size):
        p = replace(params, n=k, seed=None if params.seed is None else params.seed + i)
        out += [[(list(g.token_ids), g.text) for g in gs] for gs in generator.generate(contexts[i: i + batch_size], p)]
    return out


def rejection_rows(generator: Generator, tokenizer: Any, factory: EnvironmentFactory, samples: list[Sample], *,
                   n1: int, n2: int, m1: int, m2: int, per_prompt: int, params: SamplingParams,
                   chat_template: bool | None, batch_size: int = 64) -> tuple[list[Row], dict[str, float]]:
    """Sequential rejection sampling (module docstring): the D1/D2/D3 rows (at most ``per_prompt`` of each kind
    per sample, in sampling order) and statistics ``srs/*``: a1 accuracy and verdict match rate of the sampled
    turns, how many a1 were judged, and the number of rows of each kind."""
    env = factory()
    if not isinstance(env, SelfCorrectionEnvironment):
        raise ConfigError("rollout.env: self-correction data needs the self_correction environment")
    if env.max_attempts is not None and env.max_attempts < 2:
        raise ConfigError("rollout.env_options.max_attempts: self-correction data needs >= 2 (a correction)")

    def ctx(s: Sample, turns: list[Turn]) -> list[int]:
        return replay(tokenizer, factory, s, turns, chat_template, open_end=True)[0].tokens

    def draw(items: list[tuple[int, list[Turn]]], k: int, seed_key: str) -> list[list[tuple[list[int], str]]]:
        p = replace(params, seed=derive_seed(params.seed or 0, seed_key))
        return _sample(generator, [ctx(samples[i], t) for i, t in items], p, k, batch_size)

    # 1. first answers judged by the verifier: distinct texts, at most per_prompt right and per_prompt wrong ones
    #    per prompt go on (a row of each kind per prompt needs no more)
    firsts: list[tuple[int, Turn, bool]] = []
    a1_all = a1_ok = 0
    for i, gens in enumerate(draw([(i, []) for i in range(len(samples))], n1, "a1")):
        seen: dict[str, bool] = {}
        for ids, text in gens:
            ok = bool(env.is_correct(text, samples[i]))
            a1_all, a1_ok = a1_all + 1, a1_ok + ok
            if text not in seen and sum(v is ok for v in seen.values()) < per_prompt:
                firsts.append((i, (ids, text, False), ok))
            seen.setdefault(text, ok)
    # 2. self-evaluations: keep the first whose verdict matches the verifier
    judged: list[Turn | None] = []
    v_all = v_ok = 0
    for (_i, _a1, ok), gens in zip(firsts, draw([(i, [a1]) for i, a1, _ in firsts], n2, "y1"), strict=True):
        hit = None
        for ids, text in gens:
            match = parse_verdict(text, env.correct, env.wrong) is ok
            v_all, v_ok = v_all + 1, v_ok + match
            if match and hit is None:
                hit = (ids, text, True)
        judged.append(hit)
    # 3. corrections: wrong a1 after its sampled [VERIFY] wrong (D1); correct a1 told [VERIFY] wrong (D2)
    told = _text_turn(tokenizer, env.wrong, False)
    d1 = [(i, [a1, y1]) for (i, a1, ok), y1 in zip(firsts, judged, strict=True) if not ok and y1 is not None]
    d2 = [(i, [a1, told]) for i, a1, ok in firsts if ok]
    rows: list[Row] = []
    counts: dict[tuple[str, int], int] = {}

    def keep(kind: str, i: int, turns: list[Turn]) -> None:
        if counts.get((kind, i), 0) < per_prompt:
            counts[kind, i] = counts.get((kind, i), 0) + 1
            rows.append(Row(kind, samples[i], turns))

    for kind, items, k in (("D1", d1, m1), ("D2", d2, m2)):
        for (i, (a1, y1)), gens in zip(items, draw(items, k, f"a2-{kind}") if items else [], strict=True):
            right = next(((ids, t) for ids, t in gens if env.is_correct(t, samples[i])), None)
            if right is not None:  # D1: y1 and a2 trained; D2: a2 only
                keep(kind, i, [(a1[0], a1[1], False), (y1[0], y1[1], kind == "D1"), (right[0], right[1], True)])
    for (i, a1, ok), y1 in zip(firsts, judged, strict=True):
        if ok and y1 is not None:  # D3: a1 and y1 trained
            keep("D3", i, [(a1[0], a1[1], True), y1])
    stats = {"srs/a1_accuracy": a1_ok / max(a1_all, 1), "srs/verdict_match": v_ok / max(v_all, 1),
             "srs/a1_judged": float(len(firsts))}
    stats.update({f"srs/{k}": float(sum(r.kind == k for r in rows)) for k in ("D1", "D2", "D3")})
    return rows, stats


def format_rows(tokenizer: Any, task: Task, samples: list[Sample], *, noise: float, seed: int, correct: str,
                wrong: str) -> list[Row]:
    """Demonstrations in the episode format, every turn trained: a1 (a ``noise`` fraction from the sloppy
    teacher), a verdict drawn at random, and after ``wrong`` a second demonstration a2 and another random verdict."""
    rng = random.Random(derive_seed(seed, "format-verdicts"))
    first = demonstrations(task, samples, noise, derive_seed(seed, "format-a1"))
    second = demonstrations(task, samples, noise, derive_seed(seed, "format-a2"))
    rows = []
    for (s, a1), (_, a2) in zip(first, second, strict=True):
        turns = [_text_turn(tokenizer, a1, True)]
        if rng.random() < 0.5:
            turns.append(_text_turn(tokenizer, correct, True))
        else:
            turns += [_text_turn(tokenizer, t, True) for t in (wrong, a2, rng.choice((correct, wrong)))]
        rows.append(Row("format", s, turns))
    return rows


def row_episodes(tokenizer: Any, factory: EnvironmentFactory, rows: list[Row],
                 chat_template: bool | None) -> list[Episode]:
    return [replay(tokenizer, factory, r.sample, r.turns, chat_template)[0] for r in rows]


def self_correction_warm_start(model: torch.nn.Module, tok: Any, task: Task, samples: list[Sample],
                               cfg: Root) -> dict[str, float]:
    """``sft.source=self_correction``: the format warm start (``sft.steps``, if asked), sequential rejection
    sampling from the policy (rollout sampling settings), then SFT on D1 ∪ D2 ∪ D3 (``sft.steps`` steps, or
    ``sft.self_correction.epochs`` passes). The
    statistics go to ``<output_dir>/self_correction.json``, the rows to ``self_correction_rows.jsonl``."""
    s, sc, r = cfg.sft, cfg.sft.self_correction, cfg.rollout
    if r.env != "self_correction":
        raise ConfigError(f"sft.source: self_correction needs rollout.env=self_correction, got {r.env!r}")
    factory = environment_factory(r.env, task, r.env_options)
    env = factory()
    assert isinstance(env, SelfCorrectionEnvironment)

    def sft(rows: list[Row], seed_key: str, steps: int) -> float:
        eps = row_episodes(tok, factory, rows, cfg.model.chat_template)
        out = run_sft(model, tok, eps, steps=steps, batch_size=s.batch_size, lr=s.lr, warmup_steps=s.warmup_steps,
                      schedule=s.schedule, seed=derive_seed(cfg.seed, seed_key), progress=cfg.progress,
                      micro_batch_size=s.micro_batch_size, memory_budget_gb=cfg.optim.memory_budget_gb)
        model.eval()
        return out["sft_loss"]

    metrics: dict[str, float] = {}
    if sc.format_warm_start:
        rows = format_rows(tok, task, samples, noise=s.noise, seed=cfg.seed, correct=env.correct, wrong=env.wrong)
        metrics["format_sft_loss"] = sft(rows, "sft-format", s.steps)
    params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                            top_k=r.top_k, stop=list(r.stop), seed=derive_seed(cfg.seed, "self-correction"))
    rows, stats = rejection_rows(build_generator(model, tok, r.backend), tok, factory, samples[: sc.prompts or None],
                                 n1=sc.n1, n2=sc.n2, m1=sc.m1, m2=sc.m2, per_prompt=sc.per_prompt, params=params,
                                 chat_template=cfg.model.chat_template, batch_size=cfg.eval.batch_size)
    metrics.update(stats)
    if rows:
        steps = s.steps if sc.epochs is None else math.ceil(sc.epochs * len(rows) / s.batch_size)
        metrics["sft_loss"], metrics["sft_steps"] = sft(rows, "sft-srs", steps), float(steps)
    else:
        warnings.warn("sft.source=self_correction: sequential rejection sampling kept no row (raise sft.steps or "
                      "sft.self_correction.n1 / n2 / m1 / m2); the SFT on D1/D2/D3 is skipped", RuntimeWarning,
                      stacklevel=2)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "self_correction.json").write_text(json.dumps(metrics, indent=2))
    with open(out / "self_correction_rows.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({"kind": row.kind, "prompt": row.sample.get("prompt"),
                                "turns": [{"text": t, "trained": tr} for _, t, tr in row.turns]}) + "\n")
    return metrics
