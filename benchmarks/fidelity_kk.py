"""How often ``kk_reward`` disagrees with Logic-RL's reference ``compute_score`` (Knights & Knaves).

``cases(n, seed)`` makes ``n`` fresh (completion, solution) cases from ``random.Random(seed)``: puzzles of
2–8 people, completions assembled from well-formed and broken pieces (tags missing, doubled or out of
order; answers right, wrong, incomplete, with extra mentions, role suffixes such as ``knights`` /
``knightly`` / ``knave_``, name prefixes and suffixes, ``was a``, odd case and whitespace, several answer
blocks), plus a fixed list of adversarial ones. ``disagreements(kk_reward_fn, reference, cases)`` scores
every case both ways and compares exactly (``==``).

The reference is Logic-RL's ``verl/utils/reward_score/kk.py``, loaded from a checkout the user supplies
(nothing of it is copied here): ``--logic-rl PATH`` with PATH the repository root or the file itself. For
a bare git mirror, export the file first, e.g. ``git --git-dir=MIRROR show HEAD:verl/utils/reward_score/kk.py
> /tmp/kk.py``. Its ground truth is the puzzle's ``solution_text_format`` ("(1) Name is a knight" lines),
and it scores the text after an ``Assistant:`` header, so the completion is passed as ``"Assistant:" +
text``; its progress prints are discarded.

Run: ``python benchmarks/fidelity_kk.py --logic-rl PATH [--n 2000] [--seed 0] [--json]``: prints the counts
before (``kk_reward`` at commit ``fidelity_common.BEFORE``) and after (this tree), and the worst time of
``kk_reward`` on 1 MB adversarial completions.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from fidelity_common import BEFORE, module_at, module_from_path, print_table, seconds, use_source_tree

NAMES = ["Zoey", "Oliver", "Mia", "Liam", "Ava", "Noah", "Emma", "Lucas", "Sofia", "Jack", "Ella", "Leo"]
Case = tuple[str, dict[str, str]]


def _answer(rng: random.Random, sol: dict[str, str]) -> str:
    """One answer text: right, wrong or broken in one of the ways a policy finds."""
    names = list(sol)
    roles = dict(sol)
    kind = rng.randrange(12)
    if kind == 1:  # one role flipped
        flip = rng.choice(names)
        roles[flip] = "knave" if roles[flip] == "knight" else "knight"
    lines = []
    for i, name in enumerate(names):
        role = roles[name]
        if kind == 2 and rng.random() < 0.5:
            role = role + rng.choice(["s", "ly", "_", "hood", "é", "1"])
        if kind == 3 and rng.random() < 0.5:
            role = role.upper() if rng.random() < 0.5 else role.capitalize()
        shown = name
        if kind == 4 and rng.random() < 0.4:
            shown = rng.choice([name + "X", "X" + name, name.lower(), name.upper(), name[:-1], name + "_"])
        verb = "is a"
        if kind == 5 and rng.random() < 0.4:
            verb = rng.choice(["was a", "is an", "is  a", "is\ta", "is\na", "is\u00a0a", "isa", "is a a"])
        prefix = rng.choice([f"({i + 1}) ", f"{i + 1}. ", "", "- "])
        lines.append(f"{prefix}{shown} {verb} {role}{rng.choice(['', '.', ',', ';', '!', ' '])}")
    if kind == 6:  # extra or missing mentions
        if rng.random() < 0.5:
            lines.append(rng.choice(["(no knight here)", "knave", "Knights and knaves.", "a knightmare"]))
        else:
            lines.pop(rng.randrange(len(lines)))
    if kind == 7:
        rng.shuffle(lines)
    sep = rng.choice(["\n", " ", ", ", "; ", "\n\n"])
    return sep.join(lines)


def _completion(rng: random.Random, sol: dict[str, str]) -> str:
    think = rng.choice(["Let me reason step by step.", "", " ", "knight knave", "x" * rng.randint(1, 50)])
    answer = _answer(rng, sol)
    kind = rng.randrange(10)
    if kind == 0:
        return f"<answer> {answer} </answer> <think> {think} </think>"  # out of order
    if kind == 1:
        return f"<think> {think} <answer> {answer} </answer>"  # missing </think>
    if kind == 2:
        return f"<think> {think} </think> <think> x </think> <answer> {answer} </answer>"
    if kind == 3:
        return f"<think> {think} </think> <answer> {_answer(rng, sol)} </answer> <answer> {answer} </answer>"
    if kind == 4:
        return f"</think> {think} <think> <answer> {answer} </answer>"
    if kind == 5:
        return f"<think> {think} </think> </answer> {answer} <answer>"
    if kind == 6:
        return f"<think>{think}</think><answer>{rng.choice(['', ' ', chr(10)])}</answer>"
    return f"<think> {think} </think>\n<answer> {answer} </answer>{rng.choice(['', ' trailing', chr(10)])}"


def adversarial() -> list[Case]:
    sol = {"Zoey": "knight", "Oliver": "knave"}
    answers = [
        "Zoey is a knights; Oliver is a knave",
        "Zoey is a knightly person; Oliver is a knave",
        "Zoey is a knight; Oliver is a knave_",
        "Zoey is a knight; Oliver is a knave1",
        "Zoey is a knightX Oliver is a knave",
        "Zoey is a Knight, OLIVER is a KNAVE",
        "Zoey is a knight.Oliver is a knave.",
        "Zoey\u00a0is\u2003a knight; Oliver is a knave",
        "Zoey is a knighté; Oliver is a knave",
        "ZoeyOliver is a knight; Oliver is a knave",
        "Zoey is a knight knave; Oliver",
        "Zoey-is a knight; Oliver is a knave",
    ]
    return [(f"<think> r </think><answer> {a} </answer>", sol) for a in answers]


def cases(n: int, seed: int) -> list[Case]:
    """``n`` random cases (after the fixed adversarial ones, which are not counted in ``n``)."""
    rng = random.Random(seed)
    out = adversarial()
    for _ in range(n):
        names = rng.sample(NAMES, rng.randint(2, 8))
        sol = {name: rng.choice(["knight", "knave"]) for name in names}
        out.append((_completion(rng, sol), sol))
    return out


def reference_score(reference: ModuleType) -> Callable[[str, dict[str, str]], float]:
    def score(text: str, sol: dict[str, str]) -> float:
        truth = {
            "solution_text_format": "\n".join(
                f"({i + 1}) {k} is a {v}" for i, (k, v) in enumerate(sol.items())
            )
        }
        with contextlib.redirect_stdout(io.StringIO()):
            return float(reference.compute_score("Assistant:" + text, truth))

    return score


def disagreements(
    kk_reward_fn: Callable[[str, dict[str, str]], float],
    reference_fn: Callable[[str, dict[str, str]], float],
    all_cases: list[Case],
) -> dict[str, Any]:
    bad = [
        (t, s, kk_reward_fn(t, s), r) for t, s in all_cases if kk_reward_fn(t, s) != (r := reference_fn(t, s))
    ]
    return {"cases": len(all_cases), "disagreements": len(bad), "examples": [b[0][:120] for b in bad[:5]]}


def worst_times(kk_reward_fn: Callable[[str, dict[str, str]], float]) -> dict[str, float]:
    sol = {name: "knight" for name in NAMES[:8]}
    mb = 1 << 20
    texts = {
        "answer_tags": "<answer>" * (mb // 8),
        "answer_pairs": "<answer></answer>" * (mb // 17),
        "long_name_runs": "<think>r</think><answer>" + "Zoey is " * (mb // 8) + "</answer>",
        "whitespace_runs": "<think>r</think><answer>Zoey is" + " " * mb + "a</answer>",
        "many_roles": "<think>r</think><answer>" + "Zoey is a knight " * (mb // 17) + "</answer>",
        "names_no_role": "<think>r</think><answer>" + "ZoeyZoey " * (mb // 9) + "knight" * 8 + "</answer>",
        "is_a_runs": "<think>r</think><answer>" + "Zoey is a " * (mb // 10) + "knight " * 8 + "</answer>",
        "spaces_in_pattern": "<think>r</think><answer>Zoey" + " is" * (mb // 3) + " knight" * 8 + "</answer>",
    }
    return {f"kk_reward/1MB_{name}": seconds(kk_reward_fn, text, sol) for name, text in texts.items()}


def _load_reference(path: str) -> ModuleType:
    p = Path(path)
    if p.is_dir():
        p = p / "verl" / "utils" / "reward_score" / "kk.py"
    return module_from_path(p, "logic_rl_kk_reference")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logic-rl", required=True, help="Logic-RL checkout root, or its kk.py")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    use_source_tree()
    from llmrl.rewards.logic import kk_reward

    before = module_at(BEFORE, "src/llmrl/rewards/logic.py").kk_reward
    reference = reference_score(_load_reference(args.logic_rl))
    all_cases = cases(args.n, args.seed)
    result = {
        "family": "kk",
        "before": disagreements(before, reference, all_cases),
        "after": disagreements(kk_reward, reference, all_cases),
        "worst_seconds": worst_times(kk_reward),
    }
    if args.json:
        print(json.dumps(result))
        return result
    rows = [
        {"version": v, "cases": result[v]["cases"], "disagreements": result[v]["disagreements"]}
        for v in ("before", "after")
    ]
    print_table(rows, ["version", "cases", "disagreements"])
    for v in ("before", "after"):
        for example in result[v]["examples"]:
            print(f"  {v}: {example!r}")
    print_table(
        [{"input": k, "seconds": v} for k, v in result["worst_seconds"].items()], ["input", "seconds"]
    )
    return result


if __name__ == "__main__":
    main()
