"""``llmrl models import-gguf FILE OUT_DIR``: a GGUF file (llama.cpp's format) as a Hugging Face model directory
(imports stay light until run; the conversion is :mod:`llmrl.models.gguf`)."""

from __future__ import annotations

import argparse

DTYPE_CHOICES = ("float32", "bfloat16", "float16")


def add_import_gguf_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``llmrl models import-gguf``."""
    p.add_argument("file", metavar="FILE", help="the .gguf file (any quantisation transformers dequantises)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the model directory to write (model.safetensors, "
                   "config.json, tokenizer files, chat template)")
    p.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES, help="dtype of the saved weights "
                   "(default float32)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR when it is a non-empty model "
                   "directory (without it, such a directory is refused)")


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    """``llmrl models`` and its subcommands."""
    sub = p.add_subparsers(dest="models_cmd", required=True)
    add_import_gguf_arguments(sub.add_parser(
        "import-gguf", help="convert a GGUF file into a Hugging Face model directory (needs llmrl[gguf])",
        description="Convert a GGUF file (llama, qwen2, mistral, gemma... whatever transformers reads from GGUF) "
                    "into a Hugging Face model directory that llmrl and transformers load. Quantised weights are "
                    "dequantised; nothing is downloaded."))


def run_models(args: argparse.Namespace) -> int:
    if args.models_cmd == "import-gguf":
        from llmrl.models.gguf import convert_gguf

        result = convert_gguf(args.file, args.out_dir, dtype=args.dtype, overwrite=args.overwrite)
        print(result.path)
        print(result.summary())
        return 0
    raise AssertionError(args.models_cmd)


__all__ = ["add_import_gguf_arguments", "add_models_arguments", "run_models"]
