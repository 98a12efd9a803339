"""Building and finishing a run: everything the RL loop needs that is not the loop itself."""

from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmrl.core.progress import progress_bar
from llmrl.core.seed import derive_seed
from llmrl.rewards.pool import PoolOptions, task_pool
from llmrl.rollout.base import Generator, SamplingParams
from llmrl.rollout.multiturn import EnvironmentFactory, environment_factory
from llmrl.train.agent_collect import AgentCollector, build_agent_collector, evaluate_discussion
from llmrl.train.build import (
    build_data,
    build_generator,
    build_policy,
    build_reference,
    build_task,
    read_sft_examples,
    validate_tokenized,
)
from llmrl.train.collect import Collector, DataStream
from llmrl.train.distributed import is_main, world
from llmrl.train.evaluate import evaluate, evaluate_environment
from llmrl.train.rundir import apply_threads, atomic_dir
from llmrl.train.sft import demonstrations, rejection_sample, run_sft, sft_episodes

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmrl.config import Root
    from llmrl.core.types import Sample
    from llmrl.tasks.base import Task
    from llmrl.train.metrics import MetricsLogger


@dataclass
class RunParts:
    model: torch.nn.Module
    tokenizer: Any
    generator: Generator
    task: Task
    train: list[Sample]
    test: list[Sample]
    ref: torch.nn.Module | None = None
    ref_context: Callable[[], AbstractContextManager[Any]] = nullcontext
    env: EnvironmentFactory | None = None  # a fresh environment per episode (rollout.env)
    max_turns: int = 1
    pad_id: int = 0
    show_progress: bool = True
    before: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    sft_seconds: float = 0.0

    def warn(self, msg: str) -> None:
        warnings.warn(msg, RuntimeWarning, stacklevel=2)

    def progress(self, total: int, start: int) -> Any:
        return progress_bar(total, "rl", enabled=self.show_progress, initial=start)

    def show(self, bar: Any, step: int, rec: dict[str, Any], every: int) -> None:
        if not is_main():  # torchrun: rank 0 reports
            return
        acc = self.last_eval.get("accuracy", self.before.get("accuracy", float("nan")))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{rec['reward']:.3f}", acc=f"{rec['accuracy']:.2f}", eval_acc=f"{acc:.2f}")
        elif every and step % every == 0:
            print(f"step {step}: reward {rec['reward']:.3f} accuracy {rec['accuracy']:.3f} "
                  f"loss {float(rec.get('loss', 'nan')):.4f} eval_acc {acc:.3f}", file=sys.stderr)


def sampling_params(cfg: Root, seed: int, n: int | None = None) -> SamplingParams:
    r = cfg.rollout
    return SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                          n=r.samples_per_prompt if n is None else n, stop=list(r.stop), seed=seed)


def build_run(cfg: Root, resume: bool, kl_coef: float = 0.0) -> RunParts:
    """The run's parts (any trainer's root); a KL reference model only with ``kl_coef`` != 0 (``algo.kl_coef`` of
    the RL trainers). Task, data and model are loaded and validated before anything is written."""
    apply_threads(cfg)
    out = Path(cfg.output_dir)
    task = build_task(cfg)
    task_pool(task, PoolOptions.for_run(cfg))  # where its rewards run: worker processes, time/memory bounds
    r = cfg.rollout  # the environment: unknown names / bad options fail before anything is written
    env = environment_factory(r.env, task, r.env_options) if r.env else None
    train, test = build_data(cfg, task)
    sft_dir, sft_seconds = out / "sft_model", 0.0
    resumed_sft = cfg.sft.steps > 0 and resume and (sft_dir / "config.json").is_file()
    # the warm start already ran: reload it (the reference)
    model, tok = build_policy(cfg, path=sft_dir) if resumed_sft else build_policy(cfg)
    validate_tokenized(train, tok, cfg.model.chat_template, cfg.task.train_file or f"task {task.name} (train)")
    validate_tokenized(test, tok, cfg.model.chat_template, cfg.task.test_file or f"task {task.name} (test)")
    out.mkdir(parents=True, exist_ok=True)  # inputs valid (run_trainer has claimed it already)
    if cfg.sft.steps > 0 and not resumed_sft:
        t = time.time()
        warm_start(model, tok, task, train, cfg)
        sft_seconds = time.time() - t
        save_model_atomic(model, tok, sft_dir)
    if cfg.model.lora.enabled:
        from llmrl.models.lora import apply_lora

        lo = cfg.model.lora
        model = apply_lora(model, r=lo.r, alpha=lo.alpha, dropout=lo.dropout, target_modules=lo.target_modules)
    model.eval()  # no dropout in RL: sampler and trainer must score the same policy
    ref, ref_ctx = build_reference(model, cfg, kl_coef)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    return RunParts(model=model, tokenizer=tok, generator=build_generator(model, tok, r.backend), task=task,
                    train=train, test=test, ref=ref, ref_context=ref_ctx, env=env, max_turns=r.max_turns if env else 1,
                    pad_id=pad, show_progress=cfg.progress, sft_seconds=sft_seconds)


def warm_start(model: torch.nn.Module, tok: Any, task: Task, train: list[Sample], cfg: Root) -> dict[str, float]:
    """SFT on demonstrations (the task's, a ``noise`` fraction of them sloppy), on a JSONL file, or
    (``sft.source=rejection``) on sampled completions the task accepts; skipped with a warning if none is."""
    s = cfg.sft
    if s.source == "self_correction" and not s.data_file:  # sequential rejection sampling of D1/D2/D3
        from llmrl.train.self_correction import self_correction_warm_start

        return self_correction_warm_start(model, tok, task, train[: s.num_examples], cfg)
    if s.source == "rejection" and not s.data_file:  # one RFT round, sampled by the teacher or the policy
        gen_model, gen_tok = build_policy(cfg, path=s.teacher_path) if s.teacher_path else (model, tok)
        gen_model.eval()
        metrics = rejection_finetune(model, tok, task, train[: s.num_examples], cfg, k=s.rejection_k,
                                     generator=build_generator(gen_model, gen_tok, cfg.rollout.backend),
                                     gen_tok=gen_tok, chunk=max(cfg.eval.batch_size, 1),
                                     seeds=lambda i: derive_seed(cfg.seed, "sft-rejection", i), sft_seed=cfg.seed)
        if not metrics["sft_examples"]:
            warnings.warn(f"sft.source=rejection: no sampled completion was accepted ({s.rejection_k} per prompt, "
                          f"{min(len(train), s.num_examples)} prompts); the SFT warm start is skipped",
                          RuntimeWarning, stacklevel=2)
        return metrics
    if s.data_file:
        rows = read_sft_examples(s.data_file)
        validate_tokenized(rows, tok, cfg.model.chat_template, s.data_file)
        examples = [(r, str(r.get("completion", r.get("answer", "")))) for r in rows]
    else:
        examples = demonstrations(task, train[: s.num_examples], s.noise, cfg.seed)
    return finetune(model, tok, examples, cfg, seed=cfg.seed)


def finetune(model: torch.nn.Module, tok: Any, examples: list[tuple[Sample, str]], cfg: Root,
             seed: int) -> dict[str, float]:
    """``sft.steps`` SFT steps (``sft`` settings) on (sample, completion) pairs; metrics + ``sft_examples``."""
    s = cfg.sft
    eps = sft_episodes(tok, examples, cfg.model.chat_template)
    metrics = run_sft(model, tok, eps, steps=s.steps, batch_size=s.batch_size, lr=s.lr, warmup_steps=s.warmup_steps,
                      schedule=s.schedule, seed=seed, progress=cfg.progress, micro_batch_size=s.micro_batch_size,
                      memory_budget_gb=cfg.optim.memory_budget_gb)
    return {**metrics, "sft_examples": float(len(examples))}


def rejection_finetune(model: torch.nn.Module, tok: Any, task: Task, samples: list[Sample], cfg: Root, *, k: int,
                       generator: Generator, gen_tok: Any, chunk: int, seeds: Callable[[int], int],
                       sft_seed: int) -> dict[str, float]:
    """One round of rejection-sampling fine-tuning (RFT; SoRFT stage 1), the SFT warm start of
    ``sft.source=rejection`` and each round of ``llmrl rft``: ``k`` completions per prompt of ``samples`` from
    ``generator`` (tokenizer ``gen_tok``; rollout sampling settings), prompts in chunks of ``chunk``, the chunk
    at offset i seeded ``seeds(i)``; those ``task.accept_for_sft`` accepts are kept (distinct per prompt) and
    ``model`` is fine-tuned on them (:func:`finetune`, seed ``sft_seed``). Returns the SFT metrics and
    ``sft_examples``, the number kept (only ``{"sft_examples": 0.0}``, and no SFT, when none is)."""
    kept: list[tuple[Sample, str]] = []
    for i in range(0, len(samples), chunk):
        params = sampling_params(cfg, seeds(i), n=k)
        kept += rejection_sample(generator, gen_tok, task, samples[i : i + chunk], k, params, cfg.model.chat_template)
    return finetune(model, tok, kept, cfg, seed=sft_seed) if kept else {"sft_examples": 0.0}


def save_model_atomic(model: torch.nn.Module, tok: Any, path: Path) -> None:
    """Save a HF model directory via a temporary directory + rename: never a half-written ``path``."""
    from llmrl.models.loading import save_model

    if not is_main():  # torchrun: rank 0 writes models
        return
    with atomic_dir(path) as tmp:
        save_model(model, tok, tmp)


def evaluate_run(run: RunParts, cfg: Root, step: int) -> dict[str, float]:
    """Held-out evaluation of the policy (its rollout replica under torchrun: rank 0 only, others get {})."""
    if not is_main():
        return {}
    e, ag = cfg.eval, cfg.rollout.agents
    out = evaluate(run.generator, run.tokenizer, run.task, run.test,
                   max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens, chat_template=cfg.model.chat_template,
                   pass_k=e.pass_k, n_samples=e.samples, temperature=e.temperature, seed=derive_seed(cfg.seed, step),
                   batch_size=e.batch_size, stop=cfg.rollout.stop)
    if ag.count:  # rollout.agents: the discussion's accuracy per round (round 0 = each agent alone)
        out.update(evaluate_discussion([run.generator] * ag.count, run.tokenizer, run.task, run.test, agents=ag,
                                       chat_template=cfg.model.chat_template,
                                       max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens,
                                       temperature=e.temperature, seed=derive_seed(cfg.seed, "discussion", step),
                                       batch_size=e.batch_size, stop=cfg.rollout.stop))
    if run.env is not None:  # rollout.env: greedy episodes through the environment (env/* metrics)
        out.update(evaluate_environment(run.generator, run.tokenizer, run.task, run.test, run.env,
                                        max_turns=run.max_turns,
                                        max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens,
                                        chat_template=cfg.model.chat_template,
                                        max_episode_tokens=cfg.rollout.max_episode_tokens, batch_size=e.batch_size,
                                        stop=cfg.rollout.stop))
    return out


def build_collector(run: RunParts, cfg: Root, data: DataStream,
                    failure_value: float) -> Collector | AgentCollector:
    """The RL loop's rollout collector (``rollout`` settings), drawing prompts from ``data``; a reward function
    that fails scores ``failure_value`` (the RL trainers pass ``algo.reward_failure_value``); multi-agent
    discussions with ``rollout.agents`` (:mod:`llmrl.train.agent_collect`)."""
    r = cfg.rollout
    if r.agents.count:
        return build_agent_collector(run.generator, run.tokenizer, run.task, cfg, data, failure_value)
    return Collector(run.generator, run.tokenizer, run.task, data, prompts=r.prompts_per_step,
                     chat_template=cfg.model.chat_template, failure_value=failure_value,
                     dynamic_sampling=r.dynamic_sampling, max_rounds=r.max_sampling_rounds,
                     overlong_buffer=r.overlong_buffer, overlong_factor=r.overlong_penalty, env=run.env,
                     max_turns=run.max_turns, max_episode_tokens=r.max_episode_tokens,
                     pool_options=PoolOptions.for_run(cfg))


def save_final(run: RunParts, cfg: Root) -> None:
    """Save the trained policy to ``<output_dir>/final_model`` (LoRA adapters merged into the weights)."""
    final = run.model.merge_and_unload() if cfg.model.lora.enabled else run.model  # type: ignore[operator]
    save_model_atomic(final, run.tokenizer, Path(cfg.output_dir) / "final_model")


def finish_run(run: RunParts, cfg: Root, log: MetricsLogger, t0: float) -> dict[str, Any]:
    if not is_main():  # torchrun: rank 0 evaluates and writes final_model and summary.json
        log.close()
        return {"steps": cfg.steps, "rank": world().rank}  # type: ignore[union-attr]
    after = log.once(cfg.steps, "eval", lambda: evaluate_run(run, cfg, cfg.steps))
    log.close()
    save_final(run, cfg)
    summary = {
        "accuracy_before": run.before.get("accuracy"),
        "accuracy_after": after.get("accuracy"),
        "reward_before": run.before.get("reward"),
        "reward_after": after.get("reward"),
        "wall_seconds": time.time() - t0,
        "sft_seconds": run.sft_seconds,
        "steps": cfg.steps,
        "before": run.before,
        "after": after,
    }
    (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
