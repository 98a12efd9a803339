"""``llmrl data curate``: the command-line flags and their dispatch (imports stay light until run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmrl.data.filters import FILTERS

FILTER_NAMES = tuple(FILTERS)  # in the order the pipeline applies them


def _edges(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_curate_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``llmrl data curate`` (see :mod:`llmrl.data.curate`)."""
    io = p.add_argument_group("files")
    io.add_argument("--input", required=True, help="JSONL or parquet file of math problems")
    io.add_argument("--output", required=True, help="curated rows (JSONL; .parquet writes parquet)")
    io.add_argument("--report", default=None, help="report JSON (default: OUTPUT with .report.json)")
    io.add_argument("--rejected", default=None, help="also write the removed rows with 'removed_by' (JSONL)")
    io.add_argument("--question-key", default=None, help="question column (default: prompt, problem, question)")
    io.add_argument("--answer-key", default=None, help="answer column (default: answer, else \\boxed{} of solution)")
    io.add_argument("--instruction", default="boxed", choices=["boxed", "tagged", "none"],
                    help="answer instruction appended to the question in the output 'prompt'")
    io.add_argument("--work-dir", default=None,
                    help="where the dedup data is spilled while curating (a temporary directory is made there and "
                         "removed; default: the system's temporary directory; needs about 1 KB per row, about the "
                         "input's size)")
    f = p.add_argument_group("filters and deduplication")
    f.add_argument("--skip-filter", action="append", default=[], choices=FILTER_NAMES, metavar="NAME",
                   help=f"do not apply this filter (repeatable): {', '.join(FILTER_NAMES)}")
    f.add_argument("--max-non-ascii-ratio", type=float, default=0.2,
                   help="language filter: remove questions whose prose letters are more non-ASCII than this")
    f.add_argument("--no-exact-dup", action="store_true", help="keep exact duplicates")
    f.add_argument("--no-near-dup", action="store_true", help="keep near duplicates")
    f.add_argument("--near-dup-threshold", type=float, default=0.7,
                   help="shingle Jaccard at or above which two questions are near duplicates (default 0.7)")
    f.add_argument("--near-dup-text-only", action="store_true",
                   help="near duplicates by question text alone (default: the gold answer and the numbers in "
                        "the question must also agree)")
    f.add_argument("--shingle-size", type=int, default=5, help="characters per shingle")
    s = p.add_argument_group("solvability (model rollouts)")
    s.add_argument("--model", default=None, help="local Hugging Face model directory that samples the rollouts")
    s.add_argument("--no-solvability", action="store_true", help="skip rollouts (no solve_rate/difficulty)")
    s.add_argument("--rollouts", type=int, default=64, help="samples per problem (k)")
    s.add_argument("--min-correct", type=int, default=1, help="remove problems with fewer correct rollouts")
    s.add_argument("--max-new-tokens", type=int, default=1024, help="longest rollout")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--batch-size", type=int, default=64, help="sequences per generation call")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    s.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda, cuda:1...)")
    s.add_argument("--chat-template", default="auto", choices=["auto", "on", "off"],
                   help="render prompts with the tokenizer's chat template (auto: when it has one)")
    s.add_argument("--difficulty-edges", type=_edges, default=None, metavar="E1,E2,...",
                   help="fixed solve-rate bucket edges (default: quintiles of the kept solve rates)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-progress", action="store_true", help="no progress bar during rollouts")


def run_curate(args: argparse.Namespace) -> int:
    from llmrl.core.config import ConfigError
    from llmrl.data.curate import CurateOptions, curate_file, format_report

    opts = CurateOptions(
        question_key=args.question_key, answer_key=args.answer_key, skip_filters=tuple(args.skip_filter),
        max_non_ascii_ratio=args.max_non_ascii_ratio, exact_dedup=not args.no_exact_dup,
        near_dedup=not args.no_near_dup, near_dup_threshold=args.near_dup_threshold,
        near_dup_text_only=args.near_dup_text_only, shingle_size=args.shingle_size,
        instruction=args.instruction, rollouts=args.rollouts, min_correct=args.min_correct,
        difficulty_edges=args.difficulty_edges, seed=args.seed,
    ).check()
    if not Path(args.input).is_file():  # before loading a model
        raise FileNotFoundError(f"input file not found: {args.input}")
    if args.work_dir is not None and not Path(args.work_dir).is_dir():
        raise ConfigError(f"--work-dir {args.work_dir}: not a directory")
    generate, sampling = None, None
    if not args.no_solvability:
        if args.model is None:
            raise ConfigError("solvability needs --model DIR (a local model directory), or pass --no-solvability")
        if args.max_new_tokens < 1 or args.batch_size < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
            raise ConfigError("--max-new-tokens and --batch-size must be >= 1, --temperature >= 0, --top-p in (0, 1]")
        import torch

        from llmrl.data.solvability import model_generator

        try:
            device = torch.device(args.device)
        except RuntimeError as exc:
            raise ConfigError(f"--device: {exc}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
        sampling = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                    "seed": args.seed, "dtype": args.dtype, "device": args.device, "batch_size": args.batch_size,
                    "chat_template": {"auto": None, "on": True, "off": False}[args.chat_template]}
        generate = model_generator(args.model, **sampling)
    report = curate_file(args.input, args.output, opts, generate=generate, report_path=args.report,
                         rejected_path=args.rejected, model=None if generate is None else args.model,
                         sampling=sampling, progress=not args.no_progress, work_dir=args.work_dir)
    print(format_report(report))
    print(f"wrote {report['rows_kept']} rows to {report['output']}; report: {report['report']}")
    return 0
