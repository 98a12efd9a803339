"""Trainer ``reasoner_critic``: dual-model verbal reflection (arXiv 2502.19230; PAPERS.md §19; docs/agents.md).

Two models of the same architecture (the critic initialised with another seed), both SFT-trained:

1. Contrastive pairs: for each of ``reflect.pairs`` training questions, chosen = the task's demonstration (a worked
   rationale, e.g. arithmetic style ``steps``), rejected = its sloppy ``wrong_demonstration`` (and, with
   ``reflect.self_pairs``, paths sampled from the SFT-trained reasoner; with ``reflect.self_revision_steps`` the
   reasoner is then trained further with revision examples from those paths too).
2. Reasoner SFT (``sft``): ``sft.num_examples`` demonstrations (a ``sft.noise`` fraction sloppy: a reasoner that
   makes mistakes) plus one revision example per diverging pair: (question, rejected path, the reflection at the
   first divergence) -> chosen path (:func:`llmrl.rollout.reflection.revision_prompt`).
3. Critic SFT (``reflect.critic_steps``, ``sft`` batch size / lr / schedule): (question, chosen) -> ``[STOP]`` and
   (question, rejected) -> :func:`~llmrl.rollout.reflection.critique` (``[STOP]`` where the paths agree).
4. Held-out evaluation of the loop (:func:`~llmrl.rollout.reflection.reflect`, greedy): accuracy after 0 (the
   reasoner alone), 1, ..., ``reflect.rounds`` critic rounds; the same loop with a perfect critic (the oracle
   reflection from the gold path) as the upper bound; the critic's verdicts on the reasoner's first answers.

Prompts are plain text (no chat template) in SFT and in the loop alike. Outputs: ``reasoner_model``,
``critic_model``, ``metrics.jsonl`` (SFT losses, the evaluation) and ``summary.json``. No resume.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrl.core.errors import ConfigError
from llmrl.core.seed import derive_seed, seed_everything
from llmrl.rollout.base import SamplingParams
from llmrl.rollout.reflection import STOP, Trace, critic_prompt, critique, is_stop, reflect, revision_prompt
from llmrl.train.build import build_data, build_generator, build_policy, build_task
from llmrl.train.metrics import MetricsLogger
from llmrl.train.run import save_model_atomic
from llmrl.train.rundir import apply_threads, write_config
from llmrl.train.sft import demonstrations, run_sft, sft_episodes

if TYPE_CHECKING:
    from llmrl.core.types import Sample
    from llmrl.rl.reflect_config import ReasonerCriticRoot, ReflectConfig
    from llmrl.rollout.base import Generator
    from llmrl.tasks.base import Task

Example = tuple["Sample", str]  # (sample whose prompt is the model's input, target completion)


def question(sample: Sample) -> str:
    """The sample's prompt, which must be plain text here."""
    p = sample["prompt"]
    if not isinstance(p, str):
        raise ConfigError("trainer reasoner_critic: task prompts must be plain text (e.g. task arithmetic with "
                          "options.style: steps), got a list of messages")
    return p


def contrastive_examples(samples: list[Sample], chosen: list[str], rejected: list[list[str]], r: ReflectConfig,
                         with_chosen: bool = True) -> tuple[list[Example], list[Example]]:
    """(critic examples, reasoner revision examples) from contrastive pairs: ``chosen[i]`` is the correct path of
    ``samples[i]``, ``rejected[i]`` its rejected paths. Per question (``with_chosen``): (q + chosen) -> ``[STOP]``; per rejected
    path: (q + path) -> its :func:`critique`, and where that is not ``[STOP]`` also the revision example
    (q + path + reflection) -> chosen."""
    critic, revise = [], []
    for s, good, bads in zip(samples, chosen, rejected, strict=True):
        q = question(s)
        if with_chosen:
            critic.append(({**s, "prompt": critic_prompt(q, good)}, STOP))
        for bad in bads:
            note = critique(good, bad, r.sep, r.answer_mark)
            critic.append(({**s, "prompt": critic_prompt(q, bad)}, note))
            if note != STOP:
                revise.append(({**s, "prompt": revision_prompt(q, bad, note)}, good))
    return critic, revise


def _sft(model: Any, tok: Any, examples: list[Example], cfg: ReasonerCriticRoot, steps: int, seed: int,
         log: MetricsLogger, name: str) -> dict[str, float]:
    s = cfg.sft
    eps = sft_episodes(tok, examples, chat_template=False)  # plain text, as the loop reads it
    m = run_sft(model, tok, eps, steps=steps, batch_size=s.batch_size, lr=s.lr, warmup_steps=s.warmup_steps,
                schedule=s.schedule, seed=seed, progress=cfg.progress, micro_batch_size=s.micro_batch_size,
                memory_budget_gb=cfg.optim.memory_budget_gb,
                log=lambda step, rec: log.log(step, {f"{name}/{k}": v for k, v in rec.items()}))
    model.eval()
    return {f"{name}/{k}": v for k, v in m.items()} | {f"{name}/examples": float(len(examples))}


def sample_paths(gen: Generator, tok: Any, samples: list[Sample], k: int, params: SamplingParams,
                 batch: int) -> list[list[str]]:
    """``k`` sampled reasoning paths per sample (``params`` with n = k)."""
    from llmrl.models.loading import encode_prompt

    out: list[list[str]] = []
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        gens = gen.generate([encode_prompt(tok, question(s)) for s in chunk], params)
        out += [[g.text for g in per] for per in gens]
    return out


def loop_metrics(task: Task, samples: list[Sample], traces: list[Trace], oracle: list[Trace], gold: list[str],
                 rounds: int, r: ReflectConfig) -> dict[str, float]:
    """Accuracy after t = 0..rounds critic rounds (critic and oracle loops), how many loops stopped by round t,
    and the critic's first reflection on the reasoner's first answer: verdict accuracy ([STOP] iff that answer is
    correct) and exact match with the ideal reflection (:func:`critique` against the gold path)."""
    n, out = len(samples), {}
    for t in range(rounds + 1):
        out[f"accuracy_round{t}"] = sum(task.is_correct(tr.answer_after(t), s) for tr, s in zip(traces, samples)) / n
        out[f"oracle_accuracy_round{t}"] = sum(task.is_correct(tr.answer_after(t), s)
                                               for tr, s in zip(oracle, samples)) / n
        if t:
            out[f"stopped_by_round{t}"] = sum(tr.stopped and len(tr.reflections) <= t for tr in traces) / n
    out["accuracy"] = out[f"accuracy_round{rounds}"]
    out["reasoner_accuracy"] = out["accuracy_round0"]
    if rounds:
        first = [(tr.reflections[0], tr.attempts[0], s, g) for tr, s, g in zip(traces, samples, gold)]
        out["critic/verdict_accuracy"] = sum(is_stop(note) == task.is_correct(a, s) for note, a, s, _ in first) / n
        out["critic/exact"] = sum(note.strip() == critique(g, a, r.sep, r.answer_mark)
                                  for note, a, _, g in first) / n
        out["critic/stop_rate"] = sum(is_stop(note) for note, *_ in first) / n
        out["mean_reflections"] = sum(len(tr.reflections) for tr in traces) / n
        right0 = [task.is_correct(tr.attempts[0], s) for tr, s in zip(traces, samples)]
        final = [task.is_correct(tr.answer_after(rounds), s) for tr, s in zip(traces, samples)]
        out["wrong_to_right"] = sum(not a and b for a, b in zip(right0, final)) / n
        out["right_to_wrong"] = sum(a and not b for a, b in zip(right0, final)) / n
    return out


def evaluate_loop(reasoner: Generator, critic: Generator, tok: Any, task: Task, samples: list[Sample],
                  cfg: ReasonerCriticRoot) -> tuple[dict[str, float], list[Trace]]:
    """The held-out metrics of :func:`loop_metrics` (greedy decoding) and the critic loop's traces."""
    r, e = cfg.reflect, cfg.eval
    params = SamplingParams(max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens, temperature=0.0)
    cparams = SamplingParams(max_new_tokens=r.critic_max_new_tokens, temperature=0.0)
    gold = [task.demonstration(s) for s in samples]
    traces: list[Trace] = []
    oracle: list[Trace] = []
    for i in range(0, len(samples), e.batch_size):
        qs = [question(s) for s in samples[i : i + e.batch_size]]
        traces += reflect(reasoner, critic, tok, qs, rounds=r.rounds, params=params, critic_params=cparams)
        oracle += reflect(reasoner, critic, tok, qs, rounds=r.rounds, params=params,
                          oracle=gold[i : i + e.batch_size])
    return loop_metrics(task, samples, traces, oracle, gold, r.rounds, r), traces


def train(cfg: ReasonerCriticRoot, resume: bool = False) -> dict[str, Any]:
    """Build the contrastive data, SFT the reasoner and the critic, evaluate the loop; returns the summary."""
    if resume:
        raise ConfigError("trainer reasoner_critic: --resume is not supported (a run is two SFT runs and an "
                          "evaluation; start it again)")
    if cfg.sft.steps < 1:
        raise ConfigError("sft.steps: trainer reasoner_critic trains the reasoner by SFT: must be > 0")
    t0 = time.time()
    apply_threads(cfg)
    seed_everything(cfg.seed)
    task = build_task(cfg)
    if not hasattr(task, "wrong_demonstration"):
        raise ConfigError(f"trainer reasoner_critic: task {task.name!r} has no wrong_demonstration (the rejected "
                          "paths of the contrastive pairs)")
    train_set, test = build_data(cfg, task)
    for s in train_set[:1] + test[:1]:
        question(s)
    r, s = cfg.reflect, cfg.sft
    reasoner, tok = build_policy(cfg)
    critic, _ = build_policy(dataclasses.replace(cfg, seed=derive_seed(cfg.seed, "critic") % 2**31))
    out = Path(cfg.output_dir)
    write_config(cfg)
    log = MetricsLogger(out, trackers=[])
    rng = random.Random(derive_seed(cfg.seed, "pairs"))
    pairs = train_set[: r.pairs]
    chosen = [task.demonstration(x) for x in pairs]
    rejected = [[task.wrong_demonstration(x, rng)] for x in pairs]  # type: ignore[attr-defined]
    critic_ex, revise_ex = contrastive_examples(pairs, chosen, rejected, r)
    base = demonstrations(task, train_set[: s.num_examples], s.noise, cfg.seed)
    t = time.time()
    rec = _sft(reasoner, tok, base + revise_ex, cfg, s.steps, cfg.seed, log, "reasoner")
    rec["reasoner/seconds"] = time.time() - t
    gen_r = build_generator(reasoner, tok, cfg.rollout.backend)
    if r.self_pairs:  # the reasoner's own paths as rejected ones: the critic sees the errors it will meet
        ro = cfg.rollout
        params = SamplingParams(max_new_tokens=ro.max_new_tokens, temperature=ro.temperature, top_p=ro.top_p,
                                top_k=ro.top_k, n=r.self_pairs, seed=derive_seed(cfg.seed, "self-pairs"))
        sampled = sample_paths(gen_r, tok, pairs, r.self_pairs, params, max(1, cfg.eval.batch_size // r.self_pairs))
        more, self_revise = contrastive_examples(pairs, chosen, sampled, r, with_chosen=False)
        critic_ex += more
        if r.self_revision_steps:  # then revisions of its own errors, on top of its data so far
            t = time.time()
            rec.update(_sft(reasoner, tok, base + revise_ex + self_revise, cfg, r.self_revision_steps,
                            derive_seed(cfg.seed, "self-revision"), log, "reasoner_self"))
            rec["reasoner_self/seconds"] = time.time() - t
    t = time.time()
    rec.update(_sft(critic, tok, critic_ex, cfg, r.critic_steps or s.steps, derive_seed(cfg.seed, "critic-sft"),
                    log, "critic"))
    rec["critic/seconds"] = time.time() - t
    rec["critic/stop_fraction"] = sum(target == STOP for _, target in critic_ex) / len(critic_ex)
    log.log(s.steps, rec)
    t = time.time()
    metrics, traces = evaluate_loop(gen_r, build_generator(critic, tok, cfg.rollout.backend), tok, task, test, cfg)
    metrics["eval_seconds"] = time.time() - t
    log.log(s.steps, metrics, kind="eval")
    log.close()
    save_model_atomic(reasoner, tok, out / "reasoner_model")
    save_model_atomic(critic, tok, out / "critic_model")
    examples = [{"question": tr.question, "attempts": tr.attempts, "reflections": tr.reflections}
                for tr in traces[:20]]
    summary = {"accuracy": metrics["accuracy"], "reasoner_accuracy": metrics["reasoner_accuracy"],
               "wall_seconds": time.time() - t0, "train": rec, "eval": metrics, "examples": examples}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
