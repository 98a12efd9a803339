"""Load and save Hugging Face causal LMs and tokenizers from LOCAL directories (never a hub).

Prompt conventions used everywhere in llmrl:

* ``render_prompt`` turns a task sample into the prompt text (chat template when the tokenizer has one).
* ``encode_prompt`` turns that text into token ids with ``add_special_tokens=False``; the only special
  token it may add is a leading BOS, and only for tokenizers that declare ``add_bos_token=True``
  (Llama-style) and whose text does not already start with it. Chat templates normally write the BOS
  themselves, so templated prompts are never given a second one. The char tokenizer of
  :mod:`llmrl.models.tiny` adds nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llmrl.core.errors import ModelLoadError

_DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}


def _check_dir(path: str | Path, need: str | None) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"model directory {str(p)!r} does not exist (only local paths are supported)")
    if not p.is_dir():
        raise ModelLoadError(f"model path {str(p)!r} is not a directory")
    if need is not None and not (p / need).is_file():
        raise ModelLoadError(
            f"model directory {str(p)!r} has no {need} (is it a Hugging Face model directory?)"
        )
    return p


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """Map "float32" | "bfloat16" | "float16" | "auto" (or a torch.dtype) to what from_pretrained takes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}") from None


def load_model(
    path: str | Path, *, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu"
) -> PreTrainedModel:
    """Load a causal LM from a local Hugging Face directory (``config.json`` + weights), in eval mode."""
    torch_dtype = resolve_dtype(dtype)
    p = _check_dir(path, "config.json")
    try:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=torch_dtype, local_files_only=True)
    except (OSError, ValueError) as e:  # missing weights, unknown architecture...
        raise ModelLoadError(f"could not load a causal LM from {str(p)!r}: {e}") from e
    return model.to(device).eval()


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Ensure a pad token (falling back to EOS) and left padding, in place; returns the tokenizer."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("tokenizer has neither a pad token nor an eos token to use for padding")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory; pad token ensured (EOS fallback), left padding."""
    p = _check_dir(path, None)
    try:
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load a tokenizer from {str(p)!r}: {e}") from e
    return prepare_tokenizer(tok)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, path: str | Path) -> Path:
    """Write a normal Hugging Face directory (config.json, model.safetensors, tokenizer files)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(p, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(p)
    return p


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, sample: dict[str, Any], use_chat_template: bool | None = None
) -> str:
    """The prompt text for a task sample.

    ``sample["prompt"]`` is a string or a list of ``{"role", "content"}`` messages. With a chat template
    (and ``use_chat_template`` not False) the template is applied with ``add_generation_prompt=True``
    (a plain string becomes one user message). Without one, a string is used as is and messages become
    ``"role: content\\n"`` lines followed by ``"assistant: "``. ``sample["assistant_prefix"]`` (if any)
    is appended last. ``use_chat_template=True`` without a template is an error.
    """
    prompt = sample["prompt"]
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template and not has_template:
        raise ValueError("use_chat_template=True but the tokenizer has no chat_template")
    if has_template and use_chat_template is not False:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(text, str):  # pragma: no cover - defensive, depends on transformers version
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    elif isinstance(prompt, str):
        text = prompt
    else:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant: "
    return text + sample.get("assistant_prefix", "")


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text``: no special tokens, except a leading BOS for ``add_bos_token`` tokenizers."""
    ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
    bos = tokenizer.bos_token_id
    if getattr(tokenizer, "add_bos_token", False) and bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


def reference_model(model: PreTrainedModel) -> PreTrainedModel:
    """A frozen deep copy (eval mode, ``requires_grad=False``) to score reference log-probs with.

    With LoRA prefer :func:`llmrl.models.lora.adapters_disabled` on the policy itself (no copy).
    """
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref

@contextmanager
def eval_mode(*models: torch.nn.Module) -> Iterator[None]:
    """Put ``models`` in eval mode (no dropout) for the block; each gets its own train/eval mode back after."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
