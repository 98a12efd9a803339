"""The ``llmrl`` command."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from typing import Any


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llmrl", description="RL post-training of language models, CPU-first.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    q = sub.add_parser("quickstart", help="build a tiny model, SFT it on imperfect demos, improve it by GRPO")
    q.add_argument("--output-dir", default="runs/quickstart")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--print-config", action="store_true", help="print the quickstart config and exit")
    q.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
    _add_overrides(q)

    t = sub.add_parser("train", help="training from a YAML recipe (its trainer: rl, dpo, ppo...)")
    t.add_argument("recipe", help="YAML recipe (see recipes/)")
    t.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/latest")
    t.add_argument("--overwrite", action="store_true",
                   help="delete the outputs of an earlier run in output_dir first (without it, such a directory is "
                        "refused)")
    t.add_argument("--force", action="store_true",
                   help="with --resume: resume even if the config differs from the checkpoint's")
    t.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="data-parallel on N local processes: launches torchrun --nproc-per-node N -m llmrl train "
                        "... (gloo on CPU, nccl on CUDA; docs/scaling.md)")
    _add_overrides(t)

    s = sub.add_parser("sft", help="supervised fine-tuning only (the recipe's sft section)")
    s.add_argument("recipe")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier run's outputs in output_dir")
    _add_overrides(s)

    r = sub.add_parser("rft", help="rejection-sampling fine-tuning: sample k, keep verified, SFT, repeat")
    r.add_argument("recipe")
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--k", type=int, default=8, help="samples per prompt")
    r.add_argument("--prompts", type=int, default=256, help="training prompts sampled per round")
    r.add_argument("--overwrite", action="store_true", help="replace an earlier run's outputs in output_dir")
    _add_overrides(r)

    e = sub.add_parser("eval", help="evaluate a model directory on a recipe's held-out prompts")
    e.add_argument("recipe")
    e.add_argument("--model", required=True, help="local Hugging Face model directory")
    _add_overrides(e)

    c = sub.add_parser("config", help="print every config key of a trainer (trainer=NAME, default rl) with its "
                                      "default and help, or a resolved recipe")
    c.add_argument("recipe", nargs="?")
    _add_overrides(c)

    tk = sub.add_parser("tasks", help="list tasks or print samples as JSONL")
    tsub = tk.add_subparsers(dest="tasks_cmd", required=True)
    tsub.add_parser("list")
    ts = tsub.add_parser("sample")
    ts.add_argument("task")
    ts.add_argument("--n", type=int, default=5)
    ts.add_argument("--seed", type=int, default=0)
    ts.add_argument("--split", default="train", choices=["train", "test"])
    ts.add_argument("--option", action="append", default=[], metavar="key=value", help="task option")

    rw = sub.add_parser("reward", help="score a JSONL file of samples + completions with a task's rewards")
    rw.add_argument("task")
    rw.add_argument("--input", required=True, help="JSONL: one sample (prompt, answer, ...) + completion per line")
    rw.add_argument("--output", required=True, help="JSONL: each input line plus reward and reward_components")
    rw.add_argument("--option", action="append", default=[], metavar="key=value", help="task option")
    rw.add_argument("--failure-value", type=float, default=0.0, help="reward when a reward function fails")
    rw.add_argument("--workers", type=int, default=None, help="reward worker processes (default: one per CPU "
                    "core, at most 16; 0 = in this process, no time or memory bound)")
    rw.add_argument("--timeout", type=float, default=None, help="seconds one reward function may take on one "
                    "completion before it scores the failure value (default 5)")

    m = sub.add_parser("make-tiny-model", help="write the offline tiny model + tokenizer as a HF directory")
    m.add_argument("path")
    m.add_argument("--arch", default="llama", choices=["llama", "qwen2"])
    m.add_argument("--seed", type=int, default=0)

    from llmrl.cli.mix import add_mix_arguments

    add_mix_arguments(sub.add_parser("mix", help="generate from a log-linear mixture of K policies (MPO); "
                                                 "fixed or max-min weights"))

    from llmrl.cli.data import add_curate_arguments

    d = sub.add_parser("data", help="data preparation (curate: Big-Math style filtering of a math set)")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    add_curate_arguments(dsub.add_parser("curate", help="dedup, filter and rate a JSONL/parquet math set"))

    from llmrl.cli.rm_eval import add_rm_eval_arguments

    add_rm_eval_arguments(sub.add_parser("rm-eval", help="pairwise and per-user / minority-user accuracy of a "
                                                        "saved reward model on a pair file"))

    from llmrl.cli.plot import add_plot_arguments

    add_plot_arguments(sub.add_parser("plot", help="training curves of runs (their metrics.jsonl) as a PNG, "
                                                   "optionally an HTML page with their final values"))

    from llmrl.cli.models import add_models_arguments

    add_models_arguments(sub.add_parser("models", help="model files (import-gguf: a GGUF file as a Hugging Face "
                                                       "model directory)"))
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also come after options (`llmrl eval r.yaml --model DIR key=value`)
    if extra and (not hasattr(args, "overrides") or any("=" not in x or x.startswith("-") for x in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    from llmrl.core.errors import USER_ERRORS
    from llmrl.core.progress import quiet_library_bars

    quiet_library_bars()  # stderr a file or pipe: before transformers is imported, no redrawn bars from it
    if args.cmd != "train" and all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")):
        print(f"llmrl: error: llmrl {args.cmd}: not supported under torchrun; data-parallel runs are `llmrl train` "
              f"(rl, dpo; the sft section as their warm start)", file=sys.stderr)
        return 2
    if getattr(args, "nproc", None) is not None:  # llmrl train --nproc N: torchrun runs the rest on N ranks
        from llmrl.cli.launch import launch, strip_nproc

        return launch(args.nproc, strip_nproc(sys.argv[1:] if argv is None else argv))
    try:
        return _dispatch(args)
    except USER_ERRORS as exc:
        print(f"llmrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # RunInterrupted: after a checkpoint, which it names
        print(f"llmrl: interrupted{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a read-only file system... while writing outputs
        if exc.errno not in _IO_ERRNOS:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"llmrl: error: {exc.strerror}{where}", file=sys.stderr)
        return 2


_IO_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


def _dispatch(args: argparse.Namespace) -> int:
    # every import is inside its command: `llmrl tasks list` and `--help` start without torch or the config
    if args.cmd == "quickstart":
        from llmrl.cli.quickstart import quickstart, quickstart_config

        if args.print_config:
            import yaml

            from llmrl.core.config import to_dict

            cfg = quickstart_config(args.output_dir, args.seed, args.overrides)
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            return 0
        quickstart(args.output_dir, args.seed, args.overrides, overwrite=args.overwrite)
        return 0
    if args.cmd == "train":
        from llmrl.config import load_config
        from llmrl.train.distributed import is_main, shutdown
        from llmrl.trainers import run_trainer

        try:
            summary = run_trainer(load_config(args.recipe, args.overrides), resume=args.resume,
                                  overwrite=args.overwrite, force=args.force)
            main = is_main()
        finally:
            shutdown()  # under torchrun: leave the process group
        if main:  # under torchrun: rank 0 prints the summary
            _print_summary(summary)
        return 0
    if args.cmd == "sft":
        from llmrl.cli.finetune import sft_command
        from llmrl.config import load_config

        _print_summary(sft_command(load_config(args.recipe, args.overrides), overwrite=args.overwrite))
        return 0
    if args.cmd == "rft":
        from llmrl.cli.finetune import rft_command
        from llmrl.config import load_config

        _print_summary(rft_command(load_config(args.recipe, args.overrides), args.rounds, args.k, args.prompts,
                                   overwrite=args.overwrite))
        return 0
    if args.cmd == "eval":
        from llmrl.cli.finetune import eval_command
        from llmrl.config import load_config

        print(json.dumps(eval_command(load_config(args.recipe, args.overrides), args.model), indent=2))
        return 0
    if args.cmd == "config":
        return _config(args)
    if args.cmd == "tasks":
        return _tasks(args)
    if args.cmd == "reward":
        return _reward(args)
    if args.cmd == "make-tiny-model":
        from llmrl.models.tiny import TinyModelSpec, save_tiny_model

        print(save_tiny_model(args.path, spec=TinyModelSpec(arch=args.arch), seed=args.seed))
        return 0
    if args.cmd == "data":
        from llmrl.cli.data import run_curate

        return run_curate(args)
    if args.cmd == "mix":
        from llmrl.cli.mix import run_mix

        return run_mix(args)
    if args.cmd == "rm-eval":
        from llmrl.cli.rm_eval import run_rm_eval

        return run_rm_eval(args)
    if args.cmd == "plot":
        from llmrl.cli.plot import run_plot

        return run_plot(args)
    if args.cmd == "models":
        from llmrl.cli.models import run_models

        return run_models(args)
    raise AssertionError(args.cmd)


def _config(args: argparse.Namespace) -> int:
    """Without a recipe (and no override but ``trainer=NAME``): every key of that trainer's root (default rl)
    with its default and help; else the resolved config (only the keys of the recipe's trainer)."""
    from pathlib import Path

    from llmrl.config import load_config, root_for
    from llmrl.core.config import apply_overrides, describe, to_dict

    if args.recipe is not None and "=" in args.recipe and not Path(args.recipe).is_file():  # an override, no recipe
        args.recipe, args.overrides = None, [args.recipe, *args.overrides]
    if args.recipe is None and all(o.startswith("trainer=") for o in args.overrides):
        trainer = apply_overrides({}, args.overrides).get("trainer", "rl")
        for key, default, help_ in describe(root_for(trainer)):
            print(f"{key:36s} {default:18s} {help_}")
        return 0
    import yaml

    print(yaml.safe_dump(to_dict(load_config(args.recipe, args.overrides)), sort_keys=False))
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from llmrl.tasks import TASKS

    if args.tasks_cmd == "list":
        for name in TASKS.names():  # the docs of lazy entries: no task module is imported
            print(f"{name:16s} {TASKS.doc(name)}")
        return 0
    for s in _get_task(args.task, args.option).samples(args.n, args.split, args.seed):
        print(json.dumps(s))
    return 0


def _get_task(name: str, option_items: list[str]) -> Any:
    """A task from its name and ``key=value`` options; a bad name or option is a ConfigError (exit 2)."""
    from llmrl.core.config import ConfigError, apply_overrides
    from llmrl.tasks import get_task

    try:
        return get_task(name, **apply_overrides({}, option_items))
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(str(exc).strip("'\"")) from None


def _reward(args: argparse.Namespace) -> int:
    from llmrl.core.config import ConfigError
    from llmrl.rewards.pool import PoolOptions
    from llmrl.tasks.scoring import score_file

    task = _get_task(args.task, args.option)
    try:
        options = PoolOptions.of(workers=args.workers, timeout=args.timeout)
    except ValueError as exc:
        raise ConfigError(f"llmrl reward: {exc}") from None
    summary = score_file(task, args.input, args.output, failure_value=args.failure_value, options=options)
    print(json.dumps(summary.as_dict(), indent=2))
    print(summary.histogram())
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())

