"""``llmrl train --nproc N``: the same command on N local ranks, launched by ``torch.distributed.run`` (torchrun)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N`` (what each rank runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m llmrl ARGV`` on ``nproc`` local ranks through torchrun (standalone rendezvous on this
    host); the exit status of the first rank that failed, else 0."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if nproc < 1:
        print(f"llmrl: error: --nproc: {nproc}; give at least 1", file=sys.stderr)
        return 2
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "llmrl", *argv])
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        print(f"llmrl: error: rank {rank} of {nproc} exited with status {failure.exitcode} (its error is above)",
              file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0
