"""``llmrl mix``: generate from the log-linear mixture of K policies, and/or compute max–min weights.

    llmrl mix --policy A --policy B --weights 0.5,0.5 --prompt "12+34=" [--input p.jsonl --output out.jsonl]
    llmrl mix --policy A --policy B --maxmin --ref REF --task arithmetic [--option digits=2] [--prompt ...]

Generation uses :class:`llmrl.rollout.mixture.MixtureSampler` (token-level geometric mixture). Without
``--output`` the generations are printed as JSON lines on stdout (the weights go to stderr); with it, a
JSON summary is printed instead. Imports stay light until the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def add_mix_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``llmrl mix``."""
    p.add_argument("--policy", action="append", required=True, metavar="DIR",
                   help="local model directory of one policy (repeat once per policy; all share one tokenizer)")
    w = p.add_argument_group("mixing weights (one of)")
    w.add_argument("--weights", default=None, metavar="W1,W2,...", help="fixed weights, one per --policy, >= 0")
    w.add_argument("--maxmin", action="store_true", help="max-min weights by stochastic mirror descent (needs --ref)")
    w.add_argument("--ref", default=None, metavar="DIR", help="--maxmin: the reference model the policies came from")
    w.add_argument("--task", default=None, help="--maxmin: prompts from this task's training split "
                                                "(default: the --prompt / --input prompts)")
    w.add_argument("--option", action="append", default=[], metavar="key=value", help="task option")
    w.add_argument("--md-steps", type=int, default=50, help="mirror-descent steps T")
    w.add_argument("--md-samples", type=int, default=8, help="responses of the reference per prompt (m)")
    w.add_argument("--md-prompts", type=int, default=4, help="prompts per mirror-descent step")
    w.add_argument("--md-lr-c", type=float, default=1.0, help="step size constant c (eta = c / sqrt(T))")
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    g.add_argument("--input", default=None, help="JSONL with a 'prompt' per line (string or chat messages)")
    g.add_argument("--output", default=None, help="JSONL: each input row + completion, logprob, sample index")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--n", type=int, default=1, help="samples per prompt")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-chat-template", action="store_true", help="use prompts as raw text")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")


def parse_weights(text: str, k: int) -> list[float]:
    """``"0.5,0.5"`` -> [0.5, 0.5]: one finite number >= 0 per policy, not all 0 (ConfigError otherwise)."""
    from llmrl.core.config import ConfigError

    parts = [x.strip() for x in text.split(",")]
    try:
        weights = [float(x) for x in parts]
    except ValueError:
        raise ConfigError(f"--weights: expected comma-separated numbers, got {text!r}") from None
    if len(weights) != k:
        raise ConfigError(f"--weights: {len(weights)} weight(s) for {k} --policy director{'y' if k == 1 else 'ies'}")
    bad = [x for x in weights if not math.isfinite(x) or x < 0]
    if bad:
        raise ConfigError(f"--weights: every weight must be a finite number >= 0, got {bad}")
    if sum(weights) <= 0:
        raise ConfigError("--weights: the weights must not all be 0")
    return weights


def run_mix(args: argparse.Namespace) -> int:
    """``llmrl mix``: see the module docstring."""
    import torch

    from llmrl.core.config import ConfigError
    from llmrl.models.loading import encode_prompt, render_prompt
    from llmrl.preference.mpo import estimate_maxmin, load_policies, mixture_sampler
    from llmrl.rollout.base import SamplingParams
    from llmrl.tasks.io import read_jsonl, write_jsonl

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    k = len(args.policy)
    if min(args.md_steps, args.md_samples, args.md_prompts) < 1 or not args.md_lr_c > 0:
        raise ConfigError("--md-steps, --md-samples and --md-prompts must be >= 1 and --md-lr-c > 0")
    try:
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                                top_k=args.top_k, n=args.n, stop=list(args.stop), seed=args.seed)
    except ValueError as exc:
        raise ConfigError(f"generation options: {exc}") from None
    if (args.weights is None) == (not args.maxmin):
        raise ConfigError("give either --weights W1,W2,... or --maxmin (with --ref)")
    weights = parse_weights(args.weights, k) if args.weights is not None else None
    if args.maxmin and args.ref is None:
        raise ConfigError("--maxmin needs --ref DIR (the reference model the policies were trained from)")
    rows: list[dict[str, Any]] = [{"prompt": p} for p in args.prompt]
    if args.input:
        rows += read_jsonl(args.input, required=("prompt",))
    if not rows and not args.maxmin:
        raise ConfigError("nothing to generate: give --prompt TEXT or --input FILE")
    chat = False if args.no_chat_template else None
    ref_tok = None
    if args.maxmin:
        from llmrl.models.loading import load_model, load_tokenizer

        ref_tok, ref = load_tokenizer(args.ref), load_model(args.ref, dtype=args.dtype)
    names = [str(p) for p in args.policy]
    models, tok = load_policies(args.policy, names, args.dtype, ref_tok)
    summary: dict[str, Any] = {"policies": names}
    if args.maxmin:
        prompts = rows
        if args.task is not None:
            from llmrl.core.config import apply_overrides
            from llmrl.tasks import get_task

            try:
                task = get_task(args.task, **apply_overrides({}, args.option))
                prompts = task.samples(min(args.md_steps * args.md_prompts, 512), "train", args.seed)
            except (KeyError, ValueError, TypeError, RuntimeError) as exc:
                raise ConfigError(f"--task {args.task}: {str(exc).strip(chr(34) + chr(39))}") from None
        elif not prompts:
            raise ConfigError("--maxmin needs prompts: --task NAME, --prompt TEXT or --input FILE")
        res = estimate_maxmin(ref, models, tok, prompts, steps=args.md_steps, samples_per_prompt=args.md_samples,
                              prompts_per_step=args.md_prompts, lr_c=args.md_lr_c,
                              max_new_tokens=args.max_new_tokens, temperature=args.temperature or 1.0,
                              seed=args.seed, chat_template=chat, stop=args.stop)
        weights = [float(w) for w in res.weights]
        summary.update(weights_source="maxmin", md_objective_first=res.objective[0],
                       md_objective_last=res.objective[-1])
    assert weights is not None
    summary["weights"] = weights
    if not rows:
        print(json.dumps(summary, indent=2))
        return 0
    ids = [encode_prompt(tok, render_prompt(tok, r, chat)) for r in rows]
    gens = mixture_sampler(models, tok, weights).generate(ids, params)
    out = [{**r, "completion": g.text, "sample": i, "logprob": sum(g.logprobs), "num_tokens": len(g.token_ids),
            "finish_reason": g.finish_reason, "weights": weights}
           for r, group in zip(rows, gens) for i, g in enumerate(group)]
    if args.output:
        summary.update(output=args.output, generations=write_jsonl(args.output, out))
        print(json.dumps(summary, indent=2))
    else:
        print(json.dumps(summary), file=sys.stderr)
        for row in out:
            print(json.dumps(row, ensure_ascii=False))
    return 0


__all__ = ["add_mix_arguments", "parse_weights", "run_mix"]
