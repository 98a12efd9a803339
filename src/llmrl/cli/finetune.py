"""The non-RL commands: SFT only, rejection-sampling fine-tuning, and evaluation of a model directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmrl.config import Root
from llmrl.core.seed import derive_seed, seed_everything
from llmrl.train.build import (
    build_data,
    build_generator,
    build_policy,
    build_task,
    require_device,
    require_model,
    validate_tokenized,
)
from llmrl.train.run import RunParts, evaluate_run, rejection_finetune, save_model_atomic, warm_start
from llmrl.train.rundir import apply_threads, claim_output


@contextmanager
def _claimed(cfg: Root, overwrite: bool, output: str) -> Iterator[None]:
    """``output_dir`` locked for the command; an earlier ``output`` (``sft_model`` / ``rft_model``) there is
    refused unless ``overwrite``."""
    require_model(cfg)  # before output_dir is touched
    require_device(cfg)
    claim = claim_output(cfg.output_dir, overwrite=overwrite, outputs=(output,))
    try:
        yield
    finally:
        claim.release()


def _parts(cfg: Root, model_path: str | None = None) -> RunParts:
    require_model(cfg, model_path)
    seed_everything(cfg.seed)
    apply_threads(cfg)
    task = build_task(cfg)
    train, test = build_data(cfg, task)
    model, tok = build_policy(cfg, path=model_path)
    validate_tokenized(train, tok, cfg.model.chat_template, cfg.task.train_file or f"task {task.name} (train)")
    validate_tokenized(test, tok, cfg.model.chat_template, cfg.task.test_file or f"task {task.name} (test)")
    model.eval()
    return RunParts(model=model, tokenizer=tok, generator=build_generator(model, tok, cfg.rollout.backend), task=task,
                    train=train, test=test, show_progress=cfg.progress)


def sft_command(cfg: Root, overwrite: bool = False) -> dict[str, Any]:
    """Evaluate, SFT for ``sft.steps``, evaluate again, save ``<output_dir>/sft_model``."""
    with _claimed(cfg, overwrite, "sft_model"):
        return _sft(cfg)


def _sft(cfg: Root) -> dict[str, Any]:
    t0, run = time.time(), _parts(cfg)
    before = evaluate_run(run, cfg, 0)
    metrics = warm_start(run.model, run.tokenizer, run.task, run.train, cfg)
    after = evaluate_run(run, cfg, 1)
    save_model_atomic(run.model, run.tokenizer, Path(cfg.output_dir) / "sft_model")
    return {"accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"], **metrics,
            "wall_seconds": time.time() - t0, "before": before, "after": after}


def rft_command(cfg: Root, rounds: int, k: int, prompts: int, overwrite: bool = False) -> dict[str, Any]:
    """Rejection-sampling fine-tuning: each round samples ``k`` completions for ``prompts`` training
    prompts from the current policy, keeps the verified-correct ones and SFTs on them (sft.steps steps per
    round): :func:`~llmrl.train.run.rejection_finetune`, as the ``sft.source=rejection`` warm start."""
    with _claimed(cfg, overwrite, "rft_model"):
        return _rft(cfg, rounds, k, prompts)


def _rft(cfg: Root, rounds: int, k: int, prompts: int) -> dict[str, Any]:
    t0, run = time.time(), _parts(cfg)
    before = evaluate_run(run, cfg, 0)
    history = []
    for rnd in range(rounds):
        rng_lo = (rnd * prompts) % max(len(run.train), 1)
        chunk = (run.train[rng_lo:] + run.train[:rng_lo])[:prompts]
        seed = derive_seed(cfg.seed, "rft", rnd)  # one chunk: all the round's prompts
        kept = rejection_finetune(run.model, run.tokenizer, run.task, chunk, cfg, k=k, generator=run.generator,
                                  gen_tok=run.tokenizer, chunk=max(len(chunk), 1), seeds=lambda _, s=seed: s,
                                  sft_seed=derive_seed(cfg.seed, rnd))["sft_examples"]
        ev = evaluate_run(run, cfg, rnd + 1)
        history.append({"round": rnd + 1, "kept": int(kept), "accuracy": ev["accuracy"]})
    save_model_atomic(run.model, run.tokenizer, Path(cfg.output_dir) / "rft_model")
    return {"accuracy_before": before["accuracy"], "accuracy_after": history[-1]["accuracy"] if history else None,
            "rounds": history, "wall_seconds": time.time() - t0}


def eval_command(cfg: Root, model_path: str) -> dict[str, float]:
    return evaluate_run(_parts(cfg, model_path), cfg, 0)
