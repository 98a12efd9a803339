"""Convert a GGUF file (llama.cpp's format) into a plain Hugging Face model directory.

transformers reads the file (``from_pretrained(dir, gguf_file=name)``, needs the ``gguf`` and ``accelerate``
packages: ``pip install "llmrl[gguf]"``): it dequantises every tensor to float, undoes llama.cpp's Q/K
permutation and builds the tokenizer and chat template from the file's metadata (the special tokens are set
from the file's token ids: transformers 4.x swaps a llama file's BOS and EOS). The model is then re-made as
a plain class from its config (no quantization leftovers) and written in the chosen dtype as
``model.safetensors`` + ``config.json`` + ``generation_config.json``, with the tokenizer files
(``tokenizer.json``, ``tokenizer_config.json``, the chat template) beside it. The directory is written under a
temporary name next to ``out_dir`` and renamed into place at the end, so a failed import leaves nothing behind.
Any architecture transformers' GGUF loader reads as a causal LM works (llama, mistral, qwen2, qwen3, gemma...).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llmrl.core.errors import ConfigError, ModelLoadError
from llmrl.models.loading import SAFE_WEIGHTS, check_model_dir, check_tokenizer_files, one_line, quiet_loading

GGUF_MAGIC = b"GGUF"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INSTALL_HINT = 'pip install "llmrl[gguf]"'
# config keys the GGUF loader sets that do not belong in a plain model's config.json
_LEFTOVER_KEYS = ("quantization_config", "_model_name_or_path")
_SPECIAL_TOKEN_KEYS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                       "pad_token": "padding_token_id"}


@dataclass(frozen=True)
class GGUFImport:
    """What :func:`convert_gguf` wrote."""

    path: Path
    architecture: str  # the GGUF's general.architecture ("llama", "qwen2"...)
    model_class: str  # e.g. "LlamaForCausalLM"
    parameters: int  # stored parameters (tied embeddings once)
    vocab_size: int
    chat_template: bool
    dtype: str

    def summary(self) -> str:
        return (f"{self.architecture} ({self.model_class}), {self.parameters:,} parameters, "
                f"vocab {self.vocab_size}, {self.dtype}, chat template: {'yes' if self.chat_template else 'no'}")


def check_gguf_packages() -> None:
    """ConfigError naming the install command when ``gguf`` or ``accelerate`` (which transformers' GGUF loader
    needs) is missing."""
    missing = []
    for name in ("gguf", "accelerate"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"reading GGUF files needs the {' and '.join(missing)} package"
                          f"{'s' if len(missing) > 1 else ''}: {INSTALL_HINT}")


def check_gguf_file(path: str | Path) -> Path:
    """The GGUF file as a Path; a ConfigError when it is missing or not a file, a ModelLoadError when it does not
    start with the GGUF magic bytes."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"GGUF file {str(p)!r} does not exist")
    if not p.is_file():
        raise ConfigError(f"{str(p)!r} is not a file (expected a .gguf file)")
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise ModelLoadError(f"{p}: cannot read it: {one_line(e)}") from e
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{p}: not a GGUF file (it does not start with the bytes 'GGUF')")
    return p


def read_gguf_header(path: Path) -> tuple[str, dict[str, int]]:
    """The file's ``general.architecture`` and its special token ids (``{"eos_token": 2, ...}``), read with the
    ``gguf`` package; a ModelLoadError when the file is truncated or malformed, or when transformers cannot read
    that architecture from GGUF."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(str(path)).fields
        field = fields.get("general.architecture")
        arch = bytes(field.parts[field.data[0]]).decode("utf-8") if field is not None else None
        special = {}
        for name, key in _SPECIAL_TOKEN_KEYS.items():
            f = fields.get(f"tokenizer.ggml.{key}")
            if f is not None and f.data:
                special[name] = int(f.parts[f.data[0]][0])
    except Exception as e:  # a truncated file, a bad header or tensor table...
        raise ModelLoadError(f"{path}: corrupted or truncated GGUF file ({one_line(e)})") from e
    if not arch:
        raise ModelLoadError(f"{path}: the GGUF file names no architecture (general.architecture)")
    supported = supported_architectures()
    names = {arch, arch.replace("-", "_"), arch.replace("moe", "_moe"), arch.removesuffix("encoder")}
    if supported and not names & set(supported):
        raise ModelLoadError(f"{path}: architecture {arch!r} cannot be read from GGUF by transformers "
                             f"(it reads: {', '.join(sorted(supported))})")
    return arch, special


def supported_architectures() -> list[str]:
    """The GGUF architectures the installed transformers reads (empty when it does not say)."""
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:  # pragma: no cover - another transformers layout
        return []
    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]


def _check_out_dir(out_dir: str | Path, overwrite: bool, source: Path) -> Path:
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output directory {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"output directory {str(out)!r} exists and is not empty (--overwrite replaces it)")
        if source.resolve().is_relative_to(out):
            raise ConfigError(f"output directory {str(out)!r} holds the GGUF file itself; choose another")
        if not (out / "config.json").is_file():
            raise ConfigError(f"refusing to replace {str(out)!r}: it is not a model directory (no config.json)")
    return out


@contextmanager
def _bars_only_on_a_terminal() -> Iterator[None]:
    """Outside a terminal (a log file, a pipe, CI) no progress bars from transformers: its loading and saving
    bars, and the GGUF loader's own tqdm bar, which no setting reaches (its module's ``tqdm`` is swapped)."""
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):
        terminal = False
    if terminal:
        yield
        return
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - another transformers layout
        gguf_utils = None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        with quiet_loading():
            yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar


def _dequantize() -> dict[str, Any]:
    """``from_pretrained`` arguments that unpack every weight to float: transformers 5 may otherwise keep some
    architectures' weights packed in GGUF blocks (when a matmul kernel is at hand); older versions always
    dequantise."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _load(src: Path, dtype: torch.dtype,
          special: dict[str, int]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer as transformers reads them from the GGUF file; the tokenizer's special tokens
    are those the file names (``special``: :func:`read_gguf_header`)."""
    kw: dict[str, Any] = {"gguf_file": src.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.parent, **kw)
    except Exception as e:
        raise ModelLoadError(f"{src}: could not build a tokenizer from the GGUF metadata: {one_line(e)}") from e
    for name, token_id in special.items():  # transformers 4.x swaps a llama GGUF's BOS and EOS
        token = tokenizer.convert_ids_to_tokens(token_id) if 0 <= token_id < len(tokenizer) else None
        if token is not None and getattr(tokenizer, name) != token:
            setattr(tokenizer, name, token)
    try:
        model = AutoModelForCausalLM.from_pretrained(src.parent, dtype=dtype, **_dequantize(), **kw)
    except Exception as e:  # an architecture that is no causal LM (t5), missing tensors...
        raise ModelLoadError(f"{src}: could not read a causal LM from the GGUF file: {one_line(e)}") from e
    return model, tokenizer


def plain_model(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """The same weights in a freshly made model of the same class: its config without quantization leftovers,
    cast to ``dtype``, tied embeddings tied again. The tensors are moved, not copied (params start on the meta
    device; buffers such as rotary frequencies are computed as usual)."""
    from accelerate import init_empty_weights

    config = copy.deepcopy(model.config)
    for key in _LEFTOVER_KEYS:
        if hasattr(config, key):
            delattr(config, key)
    with init_empty_weights(include_buffers=False):
        plain = type(model)(config)
    state = model.state_dict()
    plain.load_state_dict(state, strict=True, assign=True)
    plain.to(dtype)
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    meta = [n for n, t in [*plain.named_parameters(), *plain.named_buffers()] if t.device.type == "meta"]
    if meta:
        raise ModelLoadError(f"the GGUF file has no values for {', '.join(meta[:5])}")
    if model.generation_config is not None:
        plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def _write(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, d: Path, dtype_name: str) -> None:
    model.save_pretrained(d, safe_serialization=True)
    tokenizer.save_pretrained(d)
    cfg_file = d / "config.json"
    cfg = json.loads(cfg_file.read_text())
    for key in _LEFTOVER_KEYS:
        cfg.pop(key, None)
    cfg["torch_dtype"] = dtype_name  # what older readers look for; transformers 5 also writes "dtype"
    if "dtype" in cfg:
        cfg["dtype"] = dtype_name
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tok_file = d / "tokenizer_config.json"
    if tok_file.is_file():  # how it was loaded here, not a property of the tokenizer
        tok_cfg = json.loads(tok_file.read_text())
        if [tok_cfg.pop(key) for key in ("is_local", "local_files_only") if key in tok_cfg]:
            tok_file.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")
    if not (d / SAFE_WEIGHTS).is_file():
        names = sorted(f.name for f in d.iterdir())
        raise ModelLoadError(f"transformers wrote no {SAFE_WEIGHTS} (files: {', '.join(names)})")
    check_model_dir(d)  # what llmrl's loader checks first: complete safetensors, valid JSON
    check_tokenizer_files(d)


def _sibling(out: Path, tag: str) -> Path:
    """A new, unused (hidden) path next to ``out``, on the same file system so that renames are atomic."""
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is set aside first, removed once the rename worked."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        return
    old = _sibling(out, "old")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def convert_gguf(path: str | Path, out_dir: str | Path, dtype: str = "float32",
                 overwrite: bool = False) -> GGUFImport:
    """Convert the GGUF file ``path`` into a Hugging Face model directory ``out_dir`` (see the module doc).

    ``dtype``: float32 | bfloat16 | float16, the dtype of the saved weights. An existing non-empty ``out_dir``
    is refused unless ``overwrite`` (and then only when it is a model directory). Every problem is a one-line
    ConfigError or ModelLoadError; nothing is left half-written."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    src = check_gguf_file(path)
    check_gguf_packages()
    out = _check_out_dir(out_dir, overwrite, src)
    arch, special = read_gguf_header(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "import")
    tmp.mkdir()
    try:
        with _bars_only_on_a_terminal():
            model, tokenizer = _load(src, DTYPES[dtype], special)
            model = plain_model(model, DTYPES[dtype])
            _write(model, tokenizer, tmp, dtype)
        result = GGUFImport(
            path=out, architecture=arch, model_class=type(model).__name__,
            parameters=sum(p.numel() for p in model.parameters()),  # parameters() yields a tied weight once
            vocab_size=int(model.config.vocab_size), chat_template=bool(getattr(tokenizer, "chat_template", None)),
            dtype=dtype)
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def import_gguf(path: str | Path, out_dir: str | Path, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Convert a GGUF file into a Hugging Face model directory (:func:`convert_gguf`); returns ``out_dir``."""
    return convert_gguf(path, out_dir, dtype=dtype, overwrite=overwrite).path


__all__ = ["DTYPES", "GGUFImport", "INSTALL_HINT", "check_gguf_file", "check_gguf_packages", "convert_gguf",
           "import_gguf", "read_gguf_header", "plain_model", "supported_architectures"]
