"""Small factories that turn a Config into the parts the loops use."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from llmrl.rollout.base import GENERATORS
from llmrl.tasks.base import Task, get_task
from llmrl.tasks.io import read_jsonl

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import torch

    from llmrl.config import Root
    from llmrl.core.types import Sample
    from llmrl.rollout.base import Generator


def build_policy(cfg: Root, path: str | Path | None = None) -> tuple[torch.nn.Module, Any]:
    """The model and its tokenizer: a local HF directory, or the offline tiny model. LoRA adapters are
    added later (after any SFT warm start, so that the reference = adapters off = the warm-started model)."""
    from llmrl.models.loading import load_model, load_tokenizer

    path = path if path is not None else cfg.model.path
    if path is not None:
        tok = load_tokenizer(path)
        model = load_model(path, dtype=cfg.model.dtype)
    else:
        from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model

        t = cfg.model.tiny
        spec = TinyModelSpec(arch=t.arch, hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.num_heads,
                             num_kv_heads=t.num_kv_heads or t.num_heads, intermediate_size=t.intermediate_size,
                             max_position_embeddings=t.max_position_embeddings)
        tok = build_char_tokenizer()
        model, tok = build_tiny_model(spec, tok, seed=cfg.seed)
    return model, tok


def build_reference(model: torch.nn.Module, cfg: Root, kl_coef: float,
                    ) -> tuple[torch.nn.Module | None, Callable[[], AbstractContextManager[Any]]]:
    """(KL reference model, context to enter while scoring with it): :func:`reference_policy`, None when no
    KL is used (``kl_coef`` 0: the RL trainers pass ``algo.kl_coef``)."""
    if kl_coef == 0.0:
        return None, nullcontext
    return reference_policy(model, cfg.model.lora.enabled)


def reference_policy(model: torch.nn.Module, lora: bool, copy: bool = True,
                     ) -> tuple[torch.nn.Module, Callable[[], AbstractContextManager[Any]]]:
    """The policy as it is now, frozen, for reference scores or samples: (model, context to enter while using
    it). Under LoRA (``lora``) the policy itself with its adapters disabled (no second copy in memory), else
    a frozen deep copy (:func:`llmrl.models.reference_model`), or, with ``copy=False`` (used at once,
    before any update), the policy itself."""
    if lora:
        from llmrl.models.lora import adapters_disabled

        return model, lambda: adapters_disabled(model)
    if not copy:
        return model, nullcontext
    from llmrl.models.loading import reference_model

    return reference_model(model), nullcontext


def build_generator(model: torch.nn.Module, tokenizer: Any, backend: str = "kvcache") -> Generator:
    """The ``backend`` generator (:data:`llmrl.rollout.base.GENERATORS`: kvcache, hf) of ``model``."""
    try:
        factory = GENERATORS.get(backend)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return factory(model, tokenizer)


def build_task(cfg: Root) -> Task:
    return get_task(cfg.task.name, **cfg.task.options)


def build_data(cfg: Root, task: Task) -> tuple[list[Sample], list[Sample]]:
    """(train samples, held-out samples), from files when given, else from the task's generator."""
    t = cfg.task
    req = ("prompt", "answer")
    train = read_jsonl(t.train_file, required=req) if t.train_file else task.samples(t.train_size, "train", t.data_seed)
    test = read_jsonl(t.test_file, required=req) if t.test_file else task.samples(t.test_size, "test", t.data_seed)
    for rows in (train, test):
        for r in rows:
            r.setdefault("task", task.name)
    if cfg.eval.size is not None:
        test = test[: cfg.eval.size]
    return train, test
