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
import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llmrl.core.errors import ModelLoadError
from llmrl.models.device import attention_implementation

_DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,  # tests of exact equivalence (llmrl.train.distributed)
    "auto": "auto",
}


SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFE_WEIGHTS, SAFE_INDEX, TORCH_WEIGHTS, TORCH_INDEX)
"""What ``from_pretrained`` reads the weights of a local PyTorch model from, in the order it looks."""

TOKENIZER_HINT = ("tokenizer.json, or a vocabulary such as tokenizer.model (sentencepiece / tiktoken), "
                  "vocab.json + merges.txt, vocab.txt or *.tiktoken")

# bytes per element of the safetensors dtypes
_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
                "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "E8M0": 1}
_MAX_HEADER = 100_000_000  # safetensors itself refuses larger headers


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace collapsed, cut at ``limit`` characters), for the CLI's
    ``llmrl: error: ...``; the exception's class name when it has no message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_dir(path: str | Path, need: str | None) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"model directory {str(p)!r} does not exist (only local paths are supported)")
    if not p.is_dir():
        raise ModelLoadError(f"model path {str(p)!r} is not a directory")
    try:
        empty = not any(p.iterdir())
    except OSError as e:
        raise ModelLoadError(f"model directory {str(p)!r}: cannot list it: {one_line(e)}") from e
    if empty:
        raise ModelLoadError(f"model directory {str(p)!r} is empty (expected a Hugging Face model directory: "
                             "config.json, model.safetensors and tokenizer files)")
    if need is not None and not (p / need).is_file():
        raise ModelLoadError(
            f"model directory {str(p)!r} has no {need} (is it a Hugging Face model directory?)"
        )
    return p


def read_model_json(f: Path) -> Any:
    """A JSON file of a model directory; unreadable or malformed is a one-line ModelLoadError naming the file."""
    try:
        text = f.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{f}: cannot read it: {one_line(e)}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{f}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e


def check_safetensors(f: Path) -> list[str]:
    """Check that ``f`` is a complete safetensors file without reading its tensor data: a header of JSON, every
    tensor's byte range matching its dtype and shape, the data exactly as long as the header says. Returns the
    tensor names; a ModelLoadError naming the file otherwise (corrupted header, truncated data)."""
    bad = f"{f}: corrupted safetensors file"
    try:
        size = f.stat().st_size
        with f.open("rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if n < 0 or n > min(size - 8, _MAX_HEADER):
                what = f"only {size} bytes" if n < 0 else f"header length field {n} but {size} bytes in all"
                raise ModelLoadError(f"{bad} (truncated or overwritten header: {what})")
            raw = fh.read(n)
    except OSError as e:
        raise ModelLoadError(f"{f}: cannot read it: {one_line(e)}") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{bad} (header is not valid JSON: {one_line(e)})") from e
    if not isinstance(header, dict):
        raise ModelLoadError(f"{bad} (header is not a JSON object)")
    data = size - 8 - n
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]
            ok = isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and all(
                isinstance(d, int) and d >= 0 for d in shape)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ModelLoadError(f"{bad} (header entry of tensor {name!r} is malformed)")
        item = _ST_ITEMSIZE.get(str(dtype))
        if item is not None and hi - lo != math.prod(shape) * item:
            raise ModelLoadError(f"{bad} (tensor {name!r}: {hi - lo} bytes for shape {shape} of {dtype})")
        end = max(end, hi)
    if end > data:
        raise ModelLoadError(f"{f}: truncated safetensors file (the header describes {end} bytes of tensor data, "
                             f"the file holds {data})")
    if end < data:
        raise ModelLoadError(f"{bad} ({data - end} bytes after the last tensor's data)")
    return [k for k in header if k != "__metadata__"]


def check_model_dir(path: str | Path) -> tuple[Path, dict[str, Path]]:
    """Check a model directory before anything loads it: it exists and is not empty, ``config.json`` is valid
    JSON, a weights file is there (:data:`WEIGHT_FILES`; a sharded index lists only shards that exist) and every
    safetensors file is complete (:func:`check_safetensors`). Returns (directory, tensor name -> the file that
    holds it, for safetensors weights). Any problem is a one-line :class:`ModelLoadError` naming the file."""
    p = _check_dir(path, "config.json")
    if not isinstance(read_model_json(p / "config.json"), dict):
        raise ModelLoadError(f"{p / 'config.json'}: not a JSON object")
    found = next((name for name in WEIGHT_FILES if (p / name).is_file()), None)
    if found is None:
        raise ModelLoadError(f"model directory {str(p)!r} has no weights file (expected {', '.join(WEIGHT_FILES)})")
    if found in (SAFE_INDEX, TORCH_INDEX):
        index = read_model_json(p / found)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{p / found}: no weight_map of tensor names to shard files")
        shards = sorted({str(v) for v in weight_map.values()})
        missing = [s for s in shards if not (p / s).is_file()]
        if missing:
            raise ModelLoadError(f"{p / found}: names shard file(s) that are missing: {', '.join(missing)}")
    else:
        shards = [found]
    where: dict[str, Path] = {}
    for shard in shards:
        if shard.endswith(".safetensors"):
            where.update(dict.fromkeys(check_safetensors(p / shard), p / shard))
        elif not (p / shard).stat().st_size:
            raise ModelLoadError(f"{p / shard}: empty weights file")
    return p, where


def check_tokenizer_files(path: str | Path) -> Path:
    """Check that a directory holds a tokenizer: ``tokenizer.json`` or a vocabulary file. Without one, the
    error says which files are expected (instead of transformers' advice to install sentencepiece)."""
    p = _check_dir(path, None)
    names = [f.name for f in p.iterdir() if f.is_file()]
    if not any(n == "tokenizer.json" or n.endswith((".model", ".tiktoken", ".spm")) or n.startswith("vocab")
               or n == "merges.txt" for n in names):
        raise ModelLoadError(f"model directory {str(p)!r} has no tokenizer files (expected {TOKENIZER_HINT})")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):  # transformers reads them
        if name in names:
            read_model_json(p / name)
    return p


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> tuple[str, int, int] | None:
    """(name, non-finite count, size) of the first floating-point tensor holding a NaN or an infinity, else None.

    One sum per tensor in its own dtype (a NaN or inf makes it non-finite; about 20x faster than a float32 sum of
    bfloat16 and 20x faster than ``isfinite``) and one host sync for all of them; only a flagged tensor is counted
    exactly, so a sum that overflows (float16 beyond 65504) costs time but is never reported."""
    items = [(n, t.detach()) for n, t in tensors if t.is_floating_point() and t.numel() and t.device.type != "meta"]
    if not items:
        return None
    with torch.no_grad():
        sums = torch.stack([t.sum().float().to(items[0][1].device) for _, t in items])
        flagged = (~torch.isfinite(sums)).nonzero().flatten().tolist()
        for i in flagged:
            name, t = items[i]
            count = int((~torch.isfinite(t)).sum())
            if count:
                return name, count, t.numel()
    return None


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar for the block (a local load is quick, and an error
    that follows it is then the only line on stderr); the bar's setting is restored after."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def check_finite(model: torch.nn.Module, p: Path, where: dict[str, Path],
                 locate: Callable[[str], str] | None = None, hint: str = "") -> None:
    """Raise a ModelLoadError naming the file and the first weight of ``model`` with non-finite values, and how
    many. The weights: every parameter and the buffers stored in the checkpoint (computed buffers such as masks
    may hold -inf on purpose). ``where`` maps checkpoint tensor names to files; ``locate`` turns a module name into
    a checkpoint name (default: itself)."""
    loc = locate if locate is not None else (lambda name: name)
    stored = [(n, b) for n, b in model.named_buffers() if loc(n) in where]
    bad = first_non_finite([*model.named_parameters(), *stored])
    if bad is None:
        return
    name, count, total = bad
    key = loc(name)
    if key not in where:  # a base model's parameter is stored under its causal LM's prefix ("model.")
        key = next((k for k in where if k.endswith("." + key)), key)
    origin = str(where[key]) if key in where else f"model directory {str(p)!r}"
    raise ModelLoadError(f"{origin}: tensor {key!r} has {count} non-finite value(s) (NaN/inf) of {total}; "
                         f"the weights are unusable{hint}")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """Map "float32" | "bfloat16" | "float16" | "auto" (or a torch.dtype) to what from_pretrained takes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}") from None


def from_pretrained(auto_class: Any, p: Path, dtype: torch.dtype | str, attn: str) -> Any:
    """``auto_class.from_pretrained`` of a local directory with attention ``attn``; an architecture that does
    not support it gets transformers' default attention instead."""
    with quiet_loading():
        try:
            return auto_class.from_pretrained(p, dtype=dtype, local_files_only=True, attn_implementation=attn)
        except (ValueError, ImportError) as e:
            if not any(w in str(e).lower() for w in ("attention", "attn", "sdpa", "flash")):
                raise
            return auto_class.from_pretrained(p, dtype=dtype, local_files_only=True)


def load_model(
    path: str | Path, *, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM from a local Hugging Face directory (``config.json`` + weights), in eval mode, on
    ``device``.

    Attention: ``attn_implementation`` (None = :func:`llmrl.models.device.attention_implementation`:
    ``flash_attention_2`` for a half-precision model on CUDA with ``flash_attn`` installed, else ``sdpa``); an
    architecture without it falls back to transformers' default. The directory is checked first
    (:func:`check_model_dir`) and the loaded weights after (:func:`check_finite`): a problem is a one-line
    :class:`ModelLoadError` naming the file (and tensor)."""
    torch_dtype = resolve_dtype(dtype)
    p, where = check_model_dir(path)
    attn = attn_implementation or attention_implementation(device, torch_dtype)
    try:
        model = from_pretrained(AutoModelForCausalLM, p, torch_dtype, attn)
    except Exception as e:  # unknown architecture, unreadable or mismatched weights...: one line, no traceback
        raise ModelLoadError(f"could not load a causal LM from {str(p)!r}: {one_line(e)}") from e
    check_finite(model, p, where, hint=_cast_hint(torch_dtype))
    return model.to(device).eval()


def _cast_hint(dtype: torch.dtype | str) -> str:
    return (" (or they overflow float16: load them as bfloat16 or float32, e.g. model.dtype=bfloat16)"
            if dtype == torch.float16 else "")


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
    p = check_tokenizer_files(path)
    try:
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except Exception as e:  # a malformed vocabulary, a missing converter...: one line, no traceback
        raise ModelLoadError(f"could not load a tokenizer from {str(p)!r}: {one_line(e)}") from e
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


def reference_model(model: PreTrainedModel, device: str | torch.device | None = None) -> PreTrainedModel:
    """A frozen deep copy (eval mode, ``requires_grad=False``) to score reference log-probs with, on ``device``
    (None: the model's). The weights are copied straight to ``device``: a copy for the CPU never takes a
    second model's worth of GPU memory.

    With LoRA prefer :func:`llmrl.models.lora.adapters_disabled` on the policy itself (no copy).
    """
    memo: dict[int, Any] = {}
    if device is not None:  # deepcopy takes these (tied weights stay tied: one entry per tensor)
        for t in (*model.parameters(), *model.buffers()):
            if id(t) not in memo:
                moved = t.detach().to(device, copy=True)
                is_param = isinstance(t, torch.nn.Parameter)
                memo[id(t)] = torch.nn.Parameter(moved, t.requires_grad) if is_param else moved
    ref = copy.deepcopy(model, memo).eval()
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
