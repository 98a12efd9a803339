"""Every paper reward against its oracle, before and after the reward-fidelity fixes, in one command.

Runs the per-family scripts one after another, each on ``--n`` fresh random + adversarial cases from
``--seed``, and prints their tables (disagreements before = the rewards at commit
``fidelity_common.BEFORE``, after = this tree; worst seconds on 1 MB adversarial inputs):

* ``fidelity_kk.py``           Knights & Knaves vs Logic-RL's ``kk.py``      (``--logic-rl PATH``)
* ``fidelity_swe.py``          SWE-RL vs facebookresearch/swe-rl's reward    (``--swe-rl PATH``)
* ``fidelity_math.py``         ``math_equal`` vs math-verify (accepted-disagreement list in tests/data)
* ``fidelity_translation.py``  chrF / BLEU vs sacreBLEU
* ``fidelity_schema.py``       ``schema_reward`` == 1.0 vs jsonschema's verdict

The two paper references are read from checkouts the user supplies (nothing of them is copied into
llmrl); a family whose reference is not given is skipped with a note.

Run: ``python benchmarks/reward_fidelity.py --logic-rl PATH --swe-rl PATH [--n 2000] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logic-rl", help="Logic-RL checkout root, or its verl/utils/reward_score/kk.py")
    ap.add_argument("--swe-rl", help="swe-rl checkout root, or its src/swerl/core/reward.py")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    common = ["--n", str(args.n), "--seed", str(args.seed)]
    runs = [
        ("kk", ["fidelity_kk.py", "--logic-rl", args.logic_rl] if args.logic_rl else None),
        ("swe", ["fidelity_swe.py", "--swe-rl", args.swe_rl] if args.swe_rl else None),
        ("math", ["fidelity_math.py"]),
        ("translation", ["fidelity_translation.py"]),
        ("schema", ["fidelity_schema.py"]),
    ]
    failed = 0
    for family, cmd in runs:
        print(f"\n=== {family} ===", flush=True)
        if cmd is None:
            print(f"skipped: pass --{'logic-rl' if family == 'kk' else 'swe-rl'} PATH (the paper's reference code)")
            continue
        proc = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:], *common], cwd=HERE)
        failed += proc.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
