"""``llmrl rm-eval``: pairwise and personalised accuracy (arXiv:2502.19158) of a saved reward model on a pair file.

Prints one JSON object: ``accuracy`` (r_c > r_r, ties ½), ``margin``, ``pairs`` and, when the pairs have user
ids, the metrics of :func:`llmrl.preference.personal.personal_metrics` (per-user accuracy, minority users and
their accuracy). Minority users come from the agreement over the evaluated pairs plus any ``--agreement-pairs``
files (e.g. the training pairs). A user-conditioned model (``reward_model.json``) sees the user ids.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_rm_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="reward-model directory (trainer reward_model's reward_model/)")
    p.add_argument("--pairs", required=True, help="JSONL/parquet with prompt, chosen, rejected (+ user_id)")
    p.add_argument("--agreement-pairs", action="append", default=[], metavar="FILE",
                   help="more labelled pairs (e.g. the training file) for the majority-vote agreement")
    p.add_argument("--user-key", default=None, help="column naming the user (default: the model's, else user_id)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per scoring forward")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--output", default=None, help="also write the JSON here")


def rm_eval(model: str, pairs_file: str, agreement_files: list[str], user_key: str | None = None,
            batch_size: int = 32, dtype: str = "float32") -> dict[str, Any]:
    """The metrics ``llmrl rm-eval`` prints (see the module docstring)."""
    from llmrl.preference.personal import pair_accuracy, personal_metrics, user_agreement, user_of
    from llmrl.rewards.reward_model import reward_model_reward
    from llmrl.tasks.preference import read_preference_pairs

    reward = reward_model_reward(model, dtype=dtype, batch_size=batch_size)
    key = user_key or reward.user_key or "user_id"
    if user_key is not None and reward.user_key is not None:
        reward.user_key = user_key
    pairs = read_preference_pairs(pairs_file)
    samples = [{"prompt": p.prompt, key: user_of(p, key)} for p in pairs]
    rc = reward.score_batch([p.chosen for p in pairs], samples)
    rr = reward.score_batch([p.rejected for p in pairs], samples)
    acc = pair_accuracy(rc, rr)
    out: dict[str, Any] = {"model": str(model), "pairs_file": str(pairs_file), "pairs": len(pairs),
                           "accuracy": sum(acc) / len(acc) if acc else None,
                           "margin": sum(c - r for c, r in zip(rc, rr)) / len(rc) if rc else None}
    if any(user_of(p, key) is not None for p in pairs):
        extra = [q for f in agreement_files for q in read_preference_pairs(f)]
        out["personal"] = personal_metrics(pairs, acc, user_agreement(pairs + extra, key), key)
    return out


def run_rm_eval(args: argparse.Namespace) -> int:
    out = rm_eval(args.model, args.pairs, args.agreement_pairs, args.user_key, args.batch_size, args.dtype)
    text = json.dumps(out, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text, file=sys.stdout)
    return 0


__all__ = ["add_rm_eval_arguments", "rm_eval", "run_rm_eval"]
