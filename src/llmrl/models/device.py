"""Where models run and how they are built for it: the ``model.device`` setting, the attention kernel, and
activation (gradient) checkpointing.

* :func:`resolve_device` turns ``auto | cpu | cuda | cuda:N`` into a :class:`torch.device`: ``auto`` is
  ``cuda`` when ``torch.cuda.is_available()`` else ``cpu``; ``cuda`` without CUDA (or ``cuda:N`` past the
  last GPU) is a one-line :class:`~llmrl.core.errors.ConfigError` naming the key. Config validation only
  checks the spelling (:func:`llmrl.core.device.device_spec_issue`), so ``llmrl config`` reads a GPU recipe
  on a CPU machine.
* :func:`module_device` is where a model's weights are: tensors meet the model there.
* :func:`attention_implementation`: ``flash_attention_2`` for a half-precision model on CUDA when the
  ``flash_attn`` package is installed, else ``sdpa`` (``torch.nn.functional.scaled_dot_product_attention``).
* :func:`enable_gradient_checkpointing`: the Hugging Face per-layer activation checkpointing (non-reentrant),
  active for every forward run with gradients enabled, whatever the model's train/eval mode.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from llmrl.core.device import DEVICE_CHOICES, device_spec_issue
from llmrl.core.errors import ConfigError


def resolve_device(spec: str, key: str = "model.device") -> torch.device:
    """The device of a ``model.device``-style setting; a one-line ConfigError naming ``key`` when it is
    misspelt or asks for a GPU this machine does not have."""
    issue = device_spec_issue(spec)
    if issue is not None:
        raise ConfigError(f"{key}: {issue}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{key}: {spec} requested but CUDA is not available here (torch "
                          f"{torch.__version__}, torch.cuda.is_available() is false); use {key}=cpu or auto")
    dev = torch.device(spec)
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ConfigError(f"{key}: {spec} requested but this machine has {count} CUDA device(s) "
                          f"(cuda:0..cuda:{count - 1})")
    return dev


def module_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a module without either."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def attention_implementation(device: str | torch.device, dtype: torch.dtype | str | None = None) -> str:
    """The ``attn_implementation`` to load a Hugging Face model with: ``flash_attention_2`` on CUDA for a
    bfloat16 / float16 model when ``flash_attn`` is installed (it takes only those dtypes), else ``sdpa``."""
    on_cuda = torch.device(device).type == "cuda"
    half = dtype in (torch.bfloat16, torch.float16)
    if on_cuda and half and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _checkpointed_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules()
            if m is not module and getattr(m, "gradient_checkpointing", False) is True]


def _force_checkpointing(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: with gradients enabled, the checkpointed layers run as in training mode (Hugging Face
    checkpoints a layer only when ``layer.training``). Only the layers' own flag changes, not their
    submodules': dropout stays as the model's mode says (off in eval mode, as the RL loop runs the policy)."""
    if torch.is_grad_enabled():
        layers = _checkpointed_layers(module)
        module.__dict__["_llmrl_ckpt_modes"] = [(m, m.training) for m in layers]
        for m in layers:
            m.training = True


def _restore_modes(module: nn.Module, args: Any, output: Any) -> None:
    for m, mode in module.__dict__.pop("_llmrl_ckpt_modes", ()):
        m.training = mode


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Turn on activation checkpointing of ``model``'s decoder layers (``use_reentrant=False``: exact same
    gradients, activations recomputed in the backward pass instead of stored) for every forward with
    gradients enabled, in train or eval mode. Forwards without gradients (sampling, reference and old
    log-probs) are unchanged and keep their KV cache. The hooks sit on the base transformer, so a critic or
    reward model built from a copy of it checkpoints too. Returns ``model``; a ValueError when the model does
    not support it (no Hugging Face checkpointable layers)."""
    target = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model  # peft
    if not getattr(target, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(target).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if callable(getattr(target, "activation_checkpointing_enable", None)):  # transformers >= 5.x
        target.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    base = getattr(target, getattr(target, "base_model_prefix", "model"), None)
    base = base if isinstance(base, nn.Module) else target
    if not _checkpointed_layers(base):
        raise ValueError(f"{type(target).__name__}: no checkpointable layers found")
    if not getattr(base, "_llmrl_ckpt_hooked", False):
        base.register_forward_pre_hook(_force_checkpointing)
        base.register_forward_hook(_restore_modes, always_call=True)
        base._llmrl_ckpt_hooked = True
    return model


__all__ = ["DEVICE_CHOICES", "attention_implementation", "device_spec_issue", "enable_gradient_checkpointing",
           "module_device", "resolve_device"]
