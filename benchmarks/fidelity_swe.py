r"""How often the SWE-RL rewards disagree with facebookresearch/swe-rl's reference, and their worst times.

``cases(n, seed)`` makes at least ``n`` fresh cases from ``random.Random(seed)`` (generators in
benchmarks/fidelity_swe_cases.py): random Python-like files
(functions, classes, docstrings; 1-3 files per case), an oracle fix of random size (one line up to
rewrites of dozens of functions and 5-50 KB insertions) and a completion that applies the same, a close,
a partial, a larger or an unrelated fix -- or a malformed one (no REPLACE marker, no fence, search text
not found, search == replace, CRLF) -- inside a think/solution template that is well formed, out of
order, duplicated, missing a tag, or has an empty thought or solution; plus low-diversity adversarial
edits. Half the cases are unified-diff cases: the oracle and the prediction as git diffs, with renames,
new and deleted files, binary and mode-only entries, wrong hunk counts, prose and fences around, CRLF,
quoted or unprefixed paths, repeated file sections.

``disagreements(module, reference, cases)`` counts the cases where ``module`` and the reference give
different rewards (``!=``, no tolerance): ``swe_rl_reward`` vs ``calculate_search_replace_reward``,
``swe_rl_diff_reward`` vs the reference's gate (``extract_thought_solution``) followed by
``calculate_reward_unidiff([oracle], [solution])``, and ``swe_rl_diff_reward(..., require_format=False)``
vs ``calculate_reward_unidiff([oracle], [completion])``. The reference runs with its ``difflib`` module
swapped for one whose ``SequenceMatcher`` is ``cydifflib``'s (bit-identical results, checked by
tests/test_swe_reward.py; ``--pure-difflib`` keeps difflib, ~25x slower on 5-50 KB patches). A case whose
similarity work exceeds the current module's budget (so our score is a bound, not the exact value) is not
sent to the reference, which could take minutes on it; those are counted as ``skipped``.

``worst_times(module)``: the worst seconds of each reward on 1 MB adversarial completions and on long or
adversarial patches (50-200 KB realistic patch pairs, low-diversity patches, crafted diff header lines).

The reference is a user-supplied file: a checkout's ``src/swerl/core/reward.py`` (or the checkout
directory). From a bare mirror, export it first::

    mkdir -p /tmp/swerl && git --git-dir=/path/to/swe-rl.git show HEAD:src/swerl/core/reward.py \
        > /tmp/swerl/reward.py

It imports ``unidiff`` (installed with llmrl's dev extra). Run::

    python benchmarks/fidelity_swe.py --n 2000 --seed 0 --swe-rl /tmp/swerl/reward.py [--json]
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import time
import types
import warnings
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from fidelity_common import BEFORE, module_at, module_from_path, print_table, seconds, use_source_tree
from fidelity_swe_cases import (
    adversarial_cases,
    diff_case,
    git_diff,
    patch_pair,
    patch_pair_as_diffs,
    py_file,
    sr_block,
    sr_case,
)


def cases(n: int, seed: int) -> list[dict[str, Any]]:
    """At least ``n`` cases: n/2 search/replace, n/2 unified-diff, plus :func:`adversarial_cases`."""
    rng = random.Random(seed)
    out = [sr_case(rng) if i % 2 == 0 else diff_case(rng) for i in range(n)]
    return out + adversarial_cases()


# ---- the reference ----------------------------------------------------------------------------------------
def load_reference(path: str | Path, *, pure_difflib: bool = False) -> ModuleType:
    """The reference ``reward.py`` (a file, or a checkout directory holding src/swerl/core/reward.py)."""
    path = Path(path)
    if path.is_dir():
        path = path / "src" / "swerl" / "core" / "reward.py"
    reference = module_from_path(path, "swerl_reference_reward")
    if not pure_difflib:
        import cydifflib

        reference.difflib = types.SimpleNamespace(  # type: ignore[attr-defined]
            SequenceMatcher=cydifflib.SequenceMatcher, unified_diff=difflib.unified_diff
        )
    return reference


def _reference_rewards(reference: ModuleType, case: dict[str, Any]) -> dict[str, float | str]:
    """The reference's rewards for ``case`` (cached in the case; errors as their class name)."""
    if "_reference" in case:
        return case["_reference"]
    values: dict[str, float | str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if case["variant"] == "sr":
                values["sr"] = reference.calculate_search_replace_reward(
                    case["files"], case["oracle_files"], case["completion"]
                )[0]
            else:
                oracle = case["oracle_patch"]
                try:
                    answer = reference.extract_thought_solution(case["completion"])[1]
                    values["diff_gated"] = reference.calculate_reward_unidiff([oracle], [answer])[0]
                except reference.FormatError:
                    values["diff_gated"] = -1.0
                values["diff_raw"] = reference.calculate_reward_unidiff([oracle], [case["raw"]])[0]
        except Exception as error:  # noqa: BLE001 - recorded as a disagreement
            values = {
                k: type(error).__name__
                for k in (["sr"] if case["variant"] == "sr" else ["diff_gated", "diff_raw"])
            }
    case["_reference"] = values
    return values


def _module_rewards(module: ModuleType, case: dict[str, Any]) -> dict[str, float | str]:
    def run(fn: Any, *args: Any, **kwargs: Any) -> float | str:
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - a reward that raises disagrees
            return type(error).__name__

    if case["variant"] == "sr":
        return {"sr": run(module.swe_rl_reward, case["completion"], case["files"], case["oracle_files"])}
    oracle = case["oracle_patch"]
    return {
        "diff_gated": run(module.swe_rl_diff_reward, case["completion"], oracle),
        "diff_raw": run(module.swe_rl_diff_reward, case["raw"], oracle, require_format=False),
    }


def _current(case: dict[str, Any]) -> tuple[dict[str, float | str], bool]:
    """The current module's rewards for ``case`` and whether any of its similarities went over the
    budget (so the score is a bound, not the reference's value); cached in the case."""
    if "_current" not in case:
        from llmrl.rewards import swe

        inexact: list[bool] = []
        original = swe.bounded_similarity

        def recording(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            inexact.append(not result.exact)
            return result

        swe.bounded_similarity = recording
        try:
            case["_current"] = (_module_rewards(swe, case), any(inexact))
        finally:
            swe.bounded_similarity = original
    return case["_current"]


def disagreements(module: ModuleType, reference: ModuleType, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per reward (``sr``, ``diff_gated``, ``diff_raw``): cases compared, skipped (over the current
    module's similarity budget) and disagreeing (``!=``), with the disagreements by case kind and gate."""
    out: dict[str, Any] = {}
    for key in ("sr", "diff_gated", "diff_raw"):
        out[key] = {"compared": 0, "skipped": 0, "disagree": 0, "by_kind": Counter(), "by_gate": Counter(),
                    "skipped_by_kind": Counter()}  # fmt: skip
    examples: list[dict[str, Any]] = []
    for case in cases:
        keys = ["sr"] if case["variant"] == "sr" else ["diff_gated", "diff_raw"]
        current, over_budget = _current(case)
        if over_budget:
            for key in keys:
                out[key]["skipped"] += 1
                out[key]["skipped_by_kind"][case["kind"]] += 1
            continue
        theirs = _reference_rewards(reference, case)
        ours = current if module.__name__ == "llmrl.rewards.swe" else _module_rewards(module, case)
        for key in keys:
            row = out[key]
            row["compared"] += 1
            if ours[key] != theirs[key]:
                row["disagree"] += 1
                row["by_kind"][case["kind"]] += 1
                row["by_gate"][case["gate"]] += 1
                if len(examples) < 5:
                    examples.append({"reward": key, "kind": case["kind"], "gate": case["gate"], "ours": ours[key],
                                     "reference": theirs[key]})  # fmt: skip
    for key in ("sr", "diff_gated", "diff_raw"):
        out[key]["by_kind"] = dict(out[key]["by_kind"].most_common(8))
        out[key]["by_gate"] = dict(out[key]["by_gate"].most_common(8))
        out[key]["skipped_by_kind"] = dict(out[key]["skipped_by_kind"].most_common(8))
    out["examples"] = examples
    return out


# ---- worst times ------------------------------------------------------------------------------------------
def _worst_inputs() -> dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """name → (reward name, args, kwargs)."""
    rng = random.Random(7)
    files = {"m.py": py_file(rng, 8)}
    first = files["m.py"].split("\n", 1)[0]
    oracle_files = {"m.py": files["m.py"].replace(first, first + "\nimport os", 1)}
    oracle_diff = git_diff("m.py", files["m.py"], oracle_files["m.py"])
    low_oracle = {"m.py": files["m.py"].replace(first, first + "\n" + "b\n" * 3000, 1)}
    mb = 1_000_000
    b_file = files["m.py"].replace(first, first + "\n" + "b\n" * 3333, 1)
    ab_hunk = git_diff("m.py", files["m.py"], b_file.replace("b\n", "a\n"))
    soup = "```\n### m.py\n<<<<<<< SEARCH\n" + first + "\n=======\n<thin></solutio>```"
    toggles = "\n".join(sr_block("m.py", first, first + " #") + "\n" + sr_block("m.py", first + " #", first)
                        for _ in range(2500))  # fmt: skip

    def gate(body: str) -> str:
        return f"<think>x</think><solution>{body}</solution>"

    inputs: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
        "sr 1MB token soup": ("swe_rl_reward", (gate(soup * (mb // len(soup))), files, oracle_files), {}),
        "sr 1MB toggling edits": ("swe_rl_reward", (gate(toggles), files, oracle_files), {}),
        "sr 1MB 'a' lines vs 6KB 'b' lines": (
            "swe_rl_reward",
            (gate(sr_block("m.py", first, first + "\n" + "a\n" * (mb // 2))), files, low_oracle),
            {},
        ),
        "sr 1MB many new files": (
            "swe_rl_reward",
            (gate("".join(sr_block(f"n{i}.py", "", "z") for i in range(mb // 60))), files, oracle_files),
            {},
        ),  # fmt: skip
        "diff 1MB empty lines": ("swe_rl_diff_reward", (gate("x" + "\n" * mb + "x"), oracle_diff), {}),
        "diff 1MB: 10KB 'a' vs 'b' hunks, then empty lines": (
            "swe_rl_diff_reward",
            (gate(ab_hunk + "\n" * mb + "x"), git_diff("m.py", files["m.py"], b_file)),
            {},
        ),
        "diff 1MB: the same under the line limit": (
            "swe_rl_diff_reward",
            (gate(ab_hunk + "\n" * 96_000 + "x" * (mb - 106_000)), git_diff("m.py", files["m.py"], b_file)),
            {},
        ),
        "diff 1MB prose lines": ("swe_rl_diff_reward", (gate("x\n" * (mb // 2)), oracle_diff), {}),
        "diff 1MB one hunk of '+a'": (
            "swe_rl_diff_reward",
            (
                gate(f"--- a/m.py\n+++ b/m.py\n@@ -0,0 +1,{mb // 3} @@\n" + "+a\n" * (mb // 3)),
                git_diff("m.py", files["m.py"], low_oracle["m.py"]),
            ),
            {},
        ),  # fmt: skip
        "diff 1MB tiny files": (
            "swe_rl_diff_reward",
            (gate("--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-\n+\n" * (mb // 32)), oracle_diff),
            {},
        ),  # fmt: skip
        "diff 1MB URI header lines at the guard": (
            "swe_rl_diff_reward",
            (gate(("diff --git ://x" + " " * 60 + "\n") * (mb // 76)), oracle_diff),
            {},
        ),
        "diff 1MB one URI header line": (
            "swe_rl_diff_reward",
            (gate("diff --git ://" + " " * mb), oracle_diff),
            {},
        ),
        "diff 1MB Binary lines at the guard": (
            "swe_rl_diff_reward",
            (gate(("Binary files " + " and " * 8 + "\n") * (mb // 54)), oracle_diff),
            {},
        ),
        "diff 1MB one Binary line": (
            "swe_rl_diff_reward",
            (gate("Binary files " + " and " * (mb // 5)), oracle_diff),
            {},
        ),
        "diff raw 1MB empty lines": (
            "swe_rl_diff_reward",
            ("\n" * mb, oracle_diff),
            {"require_format": False},
        ),
    }
    grid = {"big.py": "\n".join(f"x{i} = {i}" for i in range(3000))}
    inputs["sr replace-all up to the edit cap (16 MB file)"] = (
        "swe_rl_reward",
        (gate(sr_block("big.py", "", "y" + "\ny" * 2700)), grid, {"big.py": "x = 0"}),
        {},
    )
    distinct = "".join(map(chr, range(0x4E00, 0x4E00 + 3000)))
    spread = {"m.py": files["m.py"].replace(first, first + "\n" + "x".join(distinct), 1)}
    inputs["sr 3000 distinct chars vs the same spread out"] = (
        "swe_rl_reward",
        (gate(sr_block("m.py", first, first + "\n" + distinct)), files, spread),
        {},
    )
    for chars in (50_000, 200_000):
        pair = patch_pair(chars, chars)
        inputs[f"sr ~{chars // 1000}KB realistic patches"] = (
            "swe_rl_reward",
            (pair[2], pair[0], pair[1]),
            {},
        )
        inputs[f"diff ~{chars // 1000}KB realistic patches"] = (
            "swe_rl_diff_reward",
            patch_pair_as_diffs(*pair),
            {},
        )
    for chars in (10_000, 100_000):
        a_lines = sr_block("m.py", first, first + "\n" + "a\n" * (chars // 2))
        b_oracle = {"m.py": files["m.py"].replace(first, first + "\n" + "b\n" * (chars // 2), 1)}
        inputs[f"sr {chars // 1000}KB 'a' vs 'b' lines"] = (
            "swe_rl_reward",
            (gate(a_lines), files, b_oracle),
            {},
        )
    return inputs


def worst_times(module: ModuleType) -> dict[str, float]:
    """Seconds of one call of each reward on each input of :func:`_worst_inputs` (1 MB adversarial
    completions; long and low-diversity patches), plus ``worst sr`` / ``worst diff``."""
    times: dict[str, float] = {}
    for name, (reward, args, kwargs) in _worst_inputs().items():
        times[name] = seconds(getattr(module, reward), *args, **kwargs)
    times["worst sr"] = max(v for k, v in times.items() if k.startswith("sr "))
    times["worst diff"] = max(v for k, v in times.items() if k.startswith("diff "))
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--swe-rl", required=True, help="the reference reward.py, or a swe-rl checkout")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--before", default=BEFORE, help="git revision for the 'before' column ('' to skip)")
    ap.add_argument("--pure-difflib", action="store_true", help="run the reference with difflib (slow)")
    ap.add_argument("--no-times", action="store_true", help="skip the worst-time table")
    args = ap.parse_args(argv)
    use_source_tree()
    from llmrl.rewards import swe

    reference = load_reference(args.swe_rl, pure_difflib=args.pure_difflib)
    all_cases = cases(args.n, args.seed)
    start = time.perf_counter()
    result: dict[str, Any] = {"cases": len(all_cases), "after": disagreements(swe, reference, all_cases)}
    result["seconds"] = time.perf_counter() - start
    before = module_at(args.before, "src/llmrl/rewards/swe.py") if args.before else None
    if before is not None:
        result["before"] = disagreements(before, reference, all_cases)
    if not args.no_times:
        result["worst_seconds"] = {"after": worst_times(swe)}
        if before is not None:
            result["worst_seconds"]["before"] = worst_times(before)
    if args.json:
        print(json.dumps(result, default=str))
        return result
    print(f"{result['cases']} cases (seed {args.seed}); reference {args.swe_rl}; {result['seconds']:.0f} s")
    rows = []
    for key in ("sr", "diff_gated", "diff_raw"):
        row = {"reward": key, "compared": result["after"][key]["compared"], "skipped": result["after"][key]["skipped"],
               "after": result["after"][key]["disagree"]}  # fmt: skip
        if before is not None:
            row["before"] = result["before"][key]["disagree"]
        rows.append(row)
    print_table(rows, ["reward", "compared", "skipped", "before", "after"])
    for key in ("sr", "diff_gated", "diff_raw"):
        if result["after"][key]["disagree"]:
            print(f"  after, {key}: by kind {result['after'][key]['by_kind']}")
        if result["after"][key]["skipped"]:
            print(f"  skipped (over budget), {key}: {result['after'][key]['skipped_by_kind']}")
    for example in result["after"]["examples"]:
        print(f"  example: {example}")
    if "worst_seconds" in result:
        times = result["worst_seconds"]
        names = list(times["after"])
        print_table(
            [{"input": n, **{col: t[n] for col, t in times.items()}} for n in names],
            ["input", "before", "after"],
        )
    return result


if __name__ == "__main__":
    main()
