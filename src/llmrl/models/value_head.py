"""A scalar head on a causal LM's transformer: one number per position.

Used for reward models (the value at the last real token of a sequence) and for critics (a value per
token). The backbone is the causal LM's base transformer (``model.model`` for Llama/Qwen2/Mistral,
found generically through ``base_model_prefix``), so any local Hugging Face checkpoint works.

Saved as a directory: the backbone's ``save_pretrained`` files, the tokenizer if given, and
``scalar_head.safetensors`` + ``scalar_head.json`` (hidden size, the source class).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from llmrl.models.device import attention_implementation
from llmrl.models.loading import (
    ModelLoadError,
    check_finite,
    check_model_dir,
    check_safetensors,
    from_pretrained,
    one_line,
    read_model_json,
    resolve_dtype,
)

HEAD_WEIGHTS = "scalar_head.safetensors"
HEAD_CONFIG = "scalar_head.json"


def backbone_of(model: nn.Module) -> nn.Module:
    """The base transformer of a causal LM (returns hidden states), or the model itself if it is one."""
    prefix = getattr(model, "base_model_prefix", "model")
    inner = getattr(model, prefix, None)
    return inner if isinstance(inner, nn.Module) else model


class ScalarHeadModel(nn.Module):
    """``backbone`` (a base transformer) + ``Linear(hidden, 1)``; ``forward`` returns values ``[B, L]``."""

    def __init__(self, backbone: nn.Module, hidden_size: int | None = None, init_std: float | None = None):
        super().__init__()
        self.backbone = backbone
        cfg = getattr(backbone, "config", None)
        hidden = hidden_size or getattr(cfg, "hidden_size", None)
        if hidden is None:
            raise ValueError("ScalarHeadModel: cannot infer hidden_size from the backbone; pass hidden_size=")
        self.hidden_size = int(hidden)
        self.head = nn.Linear(self.hidden_size, 1)
        std = init_std if init_std is not None else 1.0 / (self.hidden_size + 1) ** 0.5
        nn.init.normal_(self.head.weight, std=std)
        nn.init.zeros_(self.head.bias)
        dtype = next(backbone.parameters()).dtype
        self.head.to(dtype)

    @property
    def config(self):  # noqa: ANN201 - the backbone's HF config
        return self.backbone.config

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Values ``[B, L]`` in float32 (one per input position)."""
        h = self.hidden_states(input_ids, attention_mask)
        return self.head(h).squeeze(-1).float()

    def score(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """One scalar per sequence ``[B]``: the value at the last position where ``attention_mask`` is 1
        (right padding assumed; all-padding rows read position 0)."""
        values = self(input_ids, attention_mask)
        last = (attention_mask.long().cumsum(-1).argmax(-1)).clamp(min=0)
        return values.gather(1, last[:, None]).squeeze(1)

    def save(self, path: str | Path, tokenizer=None) -> Path:  # noqa: ANN001
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, str(path / HEAD_WEIGHTS))
        (path / HEAD_CONFIG).write_text(json.dumps({"hidden_size": self.hidden_size,
                                                    "backbone_class": type(self.backbone).__name__}, indent=2))
        return path


def scalar_model_from_policy(policy: nn.Module, *, share: bool = False, init_std: float | None = None,
                             seed: int | None = None) -> ScalarHeadModel:
    """A scalar-head model whose backbone starts from ``policy``'s weights (a deep copy unless ``share``:
    then the backbone *is* the policy's, and training one trains the other)."""
    base = backbone_of(policy)
    backbone = base if share else copy.deepcopy(base)
    if not share:
        backbone.requires_grad_(True)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ScalarHeadModel(backbone, init_std=init_std)
    return ScalarHeadModel(backbone, init_std=init_std)


def load_scalar_model(path: str | Path, dtype: str | torch.dtype = "float32",
                      device: str | torch.device = "cpu") -> ScalarHeadModel:
    """Load a directory written by :meth:`ScalarHeadModel.save`, or start a fresh head on any local
    causal-LM checkpoint (a directory with ``config.json`` and no head files), on ``device`` (attention as
    :func:`~llmrl.models.loading.load_model`)."""
    from transformers import AutoModel

    torch_dtype = resolve_dtype(dtype)
    p, where = check_model_dir(path)  # config.json, complete weight files: one-line errors naming the file
    head = p / HEAD_WEIGHTS
    if head.exists():
        where.update(dict.fromkeys((f"head.{k}" for k in check_safetensors(head)), head))
    meta = read_model_json(p / HEAD_CONFIG) if (p / HEAD_CONFIG).exists() else {}
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{p / HEAD_CONFIG}: not a JSON object")
    try:
        backbone = from_pretrained(AutoModel, p, torch_dtype, attention_implementation(device, torch_dtype))
    except Exception as exc:  # unknown architecture, unreadable weights...: one line, no traceback
        raise ModelLoadError(f"{p}: cannot load a transformer backbone: {one_line(exc)}") from exc
    backbone = backbone_of(backbone)
    if not head.exists():
        model = ScalarHeadModel(backbone)
    else:
        model = ScalarHeadModel(backbone, hidden_size=meta.get("hidden_size"))
        try:
            state = load_file(str(head))
            model.head.load_state_dict({k: v.to(model.head.weight.dtype) for k, v in state.items()})
        except RuntimeError as exc:
            raise ModelLoadError(f"{head}: does not match the backbone: {one_line(exc)}") from None
        except Exception as exc:  # safetensors' own error type: one line naming the file
            raise ModelLoadError(f"{head}: cannot load the scalar head: {one_line(exc)}") from exc
    check_finite(model, p, where, locate=lambda name: name.removeprefix("backbone."))
    return model.to(device)


__all__ = ["HEAD_CONFIG", "HEAD_WEIGHTS", "ScalarHeadModel", "backbone_of", "load_scalar_model",
           "scalar_model_from_policy"]
