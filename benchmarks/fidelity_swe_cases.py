"""Random and adversarial cases for benchmarks/fidelity_swe.py (search/replace and unified-diff SWE-RL
rewards): Python-like files, oracle fixes of any size, predictions that match, nearly match, miss or break
the format, and git diffs of them (clean or corrupted in the ways models and tools get diffs wrong)."""

from __future__ import annotations

import difflib
import random
from typing import Any

NAMES = (
    "value items result config index count path data node parser token buffer offset limit cache key record "
    "total width height name state queue batch score label source target window"
).split()


# ---- random Python-like files and edits ---------------------------------------------------------------
def _ident(rng: random.Random) -> str:
    return rng.choice(NAMES) + rng.choice(["", "", "_" + rng.choice(NAMES), str(rng.randrange(10))])


def _expr(rng: random.Random, depth: int = 0) -> str:
    kind = rng.randrange(7 if depth < 2 else 3)
    if kind == 0:
        return _ident(rng)
    if kind == 1:
        return str(rng.choice([0, 1, 2, 10, 255, rng.randrange(10**6)]))
    if kind == 2:
        return repr(" ".join(rng.choice(NAMES) for _ in range(rng.randrange(1, 4))))
    if kind == 3:
        args = ", ".join(_expr(rng, depth + 1) for _ in range(rng.randrange(4)))
        return f"{_ident(rng)}({args})"
    if kind == 4:
        return f"{_expr(rng, depth + 1)} {rng.choice('+-*/%')} {_expr(rng, depth + 1)}"
    if kind == 5:
        return f"self.{_ident(rng)}.{_ident(rng)}"
    return f"{_ident(rng)}[{_expr(rng, depth + 1)}]"


def _body(rng: random.Random, indent: str, size: int) -> list[str]:
    lines = []
    for _ in range(size):
        kind = rng.randrange(6)
        if kind == 0:
            lines += [f"{indent}if {_expr(rng)} {rng.choice(['<', '==', 'is not'])} {_expr(rng)}:"]
            lines += [f"{indent}    {_ident(rng)} = {_expr(rng)}"]
        elif kind == 1:
            lines += [
                f"{indent}for {_ident(rng)} in {_expr(rng)}:",
                f"{indent}    {_ident(rng)}.append({_expr(rng)})",
            ]
        elif kind == 2:
            lines += [f"{indent}# {' '.join(rng.choice(NAMES) for _ in range(rng.randrange(2, 8)))}"]
        elif kind == 3:
            lines += [""]
        else:
            lines += [f"{indent}{_ident(rng)} = {_expr(rng)}"]
    return lines + [f"{indent}return {_expr(rng)}"]


def _function(rng: random.Random, indent: str = "", size: int | None = None) -> list[str]:
    args = ", ".join(_ident(rng) for _ in range(rng.randrange(4)))
    head = [f"{indent}def {_ident(rng)}_{rng.randrange(1000)}({'self, ' if indent else ''}{args}):"]
    doc = [f'{indent}    """{" ".join(rng.choice(NAMES) for _ in range(rng.randrange(3, 10)))}."""']
    return head + doc + _body(rng, indent + "    ", size if size is not None else rng.randrange(1, 9))


def py_file(rng: random.Random, units: int) -> str:
    """A Python-like module of ``units`` functions and classes (about 300 characters per unit)."""
    lines = [f"import {rng.choice(NAMES)}", f"from {rng.choice(NAMES)} import {_ident(rng)}", ""]
    for _ in range(units):
        if rng.random() < 0.2:
            lines += [
                f"class {_ident(rng).title().replace('_', '')}:",
                f"    {_ident(rng)} = {_expr(rng)}",
                "",
            ]
            for _ in range(rng.randrange(1, 4)):
                lines += _function(rng, "    ") + [""]
        else:
            lines += _function(rng) + ["", ""]
    return "\n".join(lines) + rng.choice(["\n", "\n", ""])


def _units(text: str) -> list[tuple[int, int]]:
    """(first, end) line spans of the top-level defs/classes of ``text``."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(("def ", "class "))]
    return [(s, e) for s, e in zip(starts, starts[1:] + [len(lines)])]


def _mutate(rng: random.Random, lines: list[str], strength: float) -> list[str]:
    """A modified copy of a unit's lines: tweak, insert, delete or (strength ~1) rewrite."""
    if rng.random() < strength * 0.5:
        return _function(rng, size=rng.randrange(3, 20))
    out = list(lines)
    for _ in range(max(1, int(strength * 4))):
        where = rng.randrange(1, len(out) + 1)
        action = rng.randrange(4)
        if action == 0 and where < len(out):
            out[where] = (
                out[where].replace(" = ", " = not ", 1) if " = " in out[where] else out[where] + "  # fix"
            )
        elif action == 1:
            out.insert(where, f"    {_ident(rng)} = {_expr(rng)}")
        elif action == 2 and len(out) > 2 and where < len(out):
            del out[where]
        else:
            out.insert(where, f"    raise {_ident(rng).title()}Error({_expr(rng)})")
    return out


def _edits_for(
    rng: random.Random, path: str, text: str, count: int, strength: float
) -> list[tuple[str, str, str]]:
    lines = text.split("\n")
    units = _units(text)
    edits = []
    for first, end in rng.sample(units, min(count, len(units))):
        while end > first + 1 and lines[end - 1] == "":
            end -= 1
        search = lines[first:end]
        if rng.random() < 0.5 and len(search) > 3:  # a smaller window inside the unit
            a = rng.randrange(0, len(search) - 2)
            search = search[a : a + rng.randrange(2, min(12, len(search) - a) + 1)]
        replace = _mutate(rng, search, strength)
        if replace != search:
            edits.append((path, "\n".join(search), "\n".join(replace)))
    return edits


def _big_insertion(rng: random.Random, path: str, text: str, chars: int) -> tuple[str, str, str]:
    lines = text.split("\n")
    first, end = rng.choice(_units(text))
    anchor = lines[first]
    new: list[str] = []
    while sum(map(len, new)) < chars:
        new += _function(rng, size=rng.randrange(4, 16)) + ["", ""]
    return (path, anchor, "\n".join(new + [anchor]))


def apply_plain(files: dict[str, str], edits: list[tuple[str, str, str]]) -> dict[str, str]:
    """The oracle's new contents: each edit replaces every line-anchored occurrence (no checks)."""
    out: dict[str, str] = {}
    for path, search, replace in edits:
        content = "\n" + out.get(path, files.get(path, ""))
        out[path] = content.replace("\n" + search, "\n" + replace)[1:]
    return out


# ---- completions ----------------------------------------------------------------------------------------
def sr_block(path: str, search: str, replace: str, lang: str = "python") -> str:
    return f"```{lang}\n### {path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```"


def wrap(rng: random.Random, solution: str) -> tuple[str, str]:
    """(gate variant, completion): the think/solution template, well formed or broken in one way."""
    thought = " ".join(rng.choice(NAMES) for _ in range(rng.randrange(1, 12)))
    variant = rng.choices(
        ["ok", "solution_first", "end_think_first", "dup_think", "dup_end_solution", "no_think", "empty_thought",
         "empty_solution", "no_end_solution", "solution_in_think", "prose"],
        weights=[10, 3, 2, 1, 1, 1, 1, 1, 1, 1, 2],
    )[0]  # fmt: skip
    think, solve = f"<think>\n{thought}\n</think>", f"<solution>\n{solution}\n</solution>"
    text = {
        "ok": f"{think}\n{solve}",
        "solution_first": f"{solve}\n{think}",
        "end_think_first": f"</think>\n{thought}\n<think>\n{solve}",
        "dup_think": f"{think}\n<think>again</think>\n{solve}",
        "dup_end_solution": f"{think}\n{solve}\n</solution>",
        "no_think": solve,
        "empty_thought": f"<think> \n </think>\n{solve}",
        "empty_solution": f"{think}\n<solution>\n</solution>\n{solution}",
        "no_end_solution": f"{think}\n<solution>\n{solution}",
        "solution_in_think": f"<think>\n{thought}\n{solve}\n</think>",
        "prose": f"Let me look.\n{think}\nHere it is:\n{solve}\nDone.",
    }[variant]
    return variant, text


def _malform(rng: random.Random, block: str) -> tuple[str, str]:
    kind = rng.choice(["no_replace_marker", "no_fence", "no_path", "crlf", "not_found", "same", "indent"])
    if kind == "no_replace_marker":
        return kind, block.replace("\n>>>>>>> REPLACE", "")
    if kind == "no_fence":
        return kind, block.split("\n", 1)[1]
    if kind == "no_path":
        return kind, block.replace("### ", "", 1)
    if kind == "crlf":
        return kind, block.replace("\n", "\r\n")
    if kind == "not_found":
        return kind, block.replace("<<<<<<< SEARCH\n", "<<<<<<< SEARCH\nzzz_missing()\n", 1)
    if kind == "same":
        head, rest = block.split("<<<<<<< SEARCH\n", 1)
        search = rest.split("\n=======\n", 1)[0]
        return kind, head + f"<<<<<<< SEARCH\n{search}\n=======\n{search}\n>>>>>>> REPLACE\n```"
    return kind, block.replace("\n    ", "\n  ")


def sr_case(rng: random.Random) -> dict[str, Any]:
    """One search/replace case."""
    size = rng.choices(["small", "medium", "large"], weights=[14, 4, 1])[0]
    units = {"small": rng.randrange(3, 15), "medium": rng.randrange(15, 60), "large": rng.randrange(40, 120)}[
        size
    ]
    paths = [f"pkg/{rng.choice(NAMES)}_{i}.py" for i in range(rng.choice([1, 1, 1, 2, 3]))]
    files = {p: py_file(rng, units) for p in paths}
    strength = rng.random()
    oracle_edits = [e for p in paths for e in _edits_for(rng, p, files[p], rng.randrange(1, 4), strength)]
    if size == "large":
        oracle_edits = [e for p in paths for e in _edits_for(rng, p, files[p], rng.randrange(5, 30), 1.0)]
        if rng.random() < 0.5:
            oracle_edits.append(_big_insertion(rng, paths[0], files[paths[0]], rng.randrange(5000, 30000)))
    oracle_files = apply_plain(files, oracle_edits)
    kind = rng.choice(["same", "close", "subset", "superset", "other", "new_file", "replace_all", "malformed",
                       "low_diversity"])  # fmt: skip
    pred = list(oracle_edits)
    if kind == "close" and pred:
        i = rng.randrange(len(pred))
        path, search, replace = pred[i]
        pred[i] = (path, search, "\n".join(_mutate(rng, replace.split("\n"), 0.2)))
    elif kind == "subset" and len(pred) > 1:
        pred = rng.sample(pred, rng.randrange(1, len(pred)))
    elif kind == "superset":
        pred += _edits_for(rng, rng.choice(paths), files[rng.choice(paths)], 1, 0.5)
    elif kind == "other":
        pred = _edits_for(rng, paths[-1], files[paths[-1]], rng.randrange(1, 3), strength)
    elif kind == "new_file":
        pred.append((f"pkg/new_{rng.randrange(100)}.py", "", "\n".join(_function(rng))))
    elif kind == "replace_all":
        pred.append((paths[0], "", "# header"))  # "\n" occurs on every line: replaces all of them
    elif kind == "low_diversity":
        path = paths[0]
        anchor = files[path].split("\n", 1)[0]
        pred = [(path, anchor, anchor + "\n" + "a\n" * rng.randrange(10, 1500))]
        oracle_files = {path: files[path].replace(anchor, anchor + "\n" + "b\n" * rng.randrange(10, 1500), 1)}
    blocks = [sr_block(p, s, r, rng.choice(["python", "", "py"])) for p, s, r in pred]
    if kind == "malformed" and blocks:
        i = rng.randrange(len(blocks))
        kind, blocks[i] = _malform(rng, blocks[i])
    gate, completion = wrap(rng, "\n\n".join(blocks))
    return {"variant": "sr", "kind": f"{size}/{kind}", "gate": gate, "completion": completion, "files": files,
            "oracle_files": oracle_files}  # fmt: skip


def git_diff(path: str, old: str | None, new: str | None, *, style: str = "git") -> str:
    """A git-style diff of one file (``None``: the file does not exist on that side)."""
    a_name = "/dev/null" if old is None else f"a/{path}"
    b_name = "/dev/null" if new is None else f"b/{path}"
    old_lines, new_lines = (old or "").splitlines(), (new or "").splitlines()
    body = list(difflib.unified_diff(old_lines, new_lines, a_name, b_name, lineterm="", n=3))
    if not body:
        return ""
    if new is not None and new and not new.endswith("\n") and body[-1].startswith("+"):
        body.append("\\ No newline at end of file")
    head = f"diff --git a/{path} b/{path}\n"
    if old is None:
        head += "new file mode 100644\n"
    elif new is None:
        head += "deleted file mode 100644\n"
    head += (
        "index 1a2b3c4..5d6e7f8 100644\n"
        if old is not None and new is not None
        else "index 0000000..5d6e7f8\n"
    )
    if style == "plain":
        head = ""
    return head + "\n".join(body) + "\n"


def _corrupt_diff(rng: random.Random, diff: str) -> tuple[str, str]:
    kind = rng.choice(["hunk_count", "drop_line", "no_plus_header", "crlf", "prose_inside", "no_context_space",
                       "strip_trailing", "no_prefix", "quoted", "duplicate", "binary", "mode_only", "fence",
                       "rename"])  # fmt: skip
    lines = diff.split("\n")
    hunk_rows = [i for i, line in enumerate(lines) if line.startswith("@@")]
    if kind == "hunk_count" and hunk_rows:
        i = rng.choice(hunk_rows)
        lines[i] = lines[i].replace(" @@", "9 @@", 1)
    elif kind == "drop_line" and len(lines) > 8:
        del lines[rng.randrange(len(lines) - 4, len(lines) - 1)]
    elif kind == "no_plus_header":
        lines = [line for line in lines if not line.startswith("+++ ")]
    elif kind == "crlf":
        return kind, diff.replace("\n", "\r\n")
    elif kind == "prose_inside" and hunk_rows:
        lines.insert(rng.choice(hunk_rows) + 2, "I changed this line.")
    elif kind == "no_context_space":
        lines = ["" if line == " " else line for line in lines]
    elif kind == "strip_trailing":
        return kind, diff.rstrip() + "\n"
    elif kind == "no_prefix":
        return kind, diff.replace(" a/", " ").replace(" b/", " ")
    elif kind == "quoted":
        return kind, diff.replace("a/pkg/", '"a/pkg/').replace(".py\n", '.py"\n', 2)
    elif kind == "duplicate":
        return kind, diff + diff
    elif kind == "binary":
        return (
            kind,
            diff
            + "diff --git a/img.png b/img.png\nindex 1..2 100644\nBinary files a/img.png and b/img.png differ\n",
        )
    elif kind == "mode_only":
        return kind, diff + "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n"
    elif kind == "fence":
        return kind, f"Here is the patch:\n```diff\n{diff}```\nIt fixes the bug."
    elif kind == "rename":
        first = diff.split("\n", 1)[0]
        if first.startswith("diff --git a/"):
            old = first.split(" ")[2][2:]
            new = old.replace(".py", "_new.py")
            return kind, diff.replace(f"b/{old}", f"b/{new}").replace(
                f"diff --git a/{old} b/{new}\n",
                f"diff --git a/{old} b/{new}\nsimilarity index 90%\nrename from {old}\nrename to {new}\n",
                1,
            )
    return kind, "\n".join(lines)


def diff_case(rng: random.Random) -> dict[str, Any]:
    """One unified-diff case (the oracle and prediction derived like :func:`sr_case`'s)."""
    base = sr_case(rng)
    files, oracle_files = base["files"], base["oracle_files"]
    oracle_patch = "".join(git_diff(p, files.get(p), oracle_files[p]) for p in oracle_files)
    if rng.random() < 0.1:
        oracle_patch += git_diff("pkg/removed.py", "x = 1\n", None)
    pred_edits = list(oracle_files.items())
    kind = rng.choice(
        ["same", "close", "other", "new_file", "deleted", "corrupt", "corrupt", "empty", "plain"]
    )
    if kind == "close":
        path, new = rng.choice(pred_edits)
        lines = new.split("\n")
        at = rng.randrange(len(lines))
        lines.insert(at, "    pass  # ours")
        pred_edits = [(p, "\n".join(lines) if p == path else c) for p, c in pred_edits]
    elif kind == "other":
        path = rng.choice(list(files))
        pred_edits = [(path, files[path].replace("return ", "return not ", 1))]
    pred = "".join(
        git_diff(p, files.get(p), c, style="plain" if kind == "plain" else "git") for p, c in pred_edits
    )
    if kind == "new_file":
        pred += git_diff(f"pkg/new_{rng.randrange(9)}.py", None, "\n".join(_function(rng)) + "\n")
    elif kind == "deleted":
        pred += git_diff("pkg/removed.py", "x = 1\n", None)
    elif kind == "corrupt":
        kind, pred = _corrupt_diff(rng, pred)
    elif kind == "empty":
        pred = rng.choice(["", "No changes are needed.", "```diff\n```"])
    gate, completion = wrap(rng, pred)
    return {"variant": "diff", "kind": f"{base['kind'].split('/')[0]}/{kind}", "gate": gate,
            "completion": completion, "raw": pred, "oracle_patch": oracle_patch}  # fmt: skip


def adversarial_cases() -> list[dict[str, Any]]:
    """A fixed list: tag orders, duplicates, regex quirks, unidiff quirks."""
    rng = random.Random(12345)
    files = {"m.py": py_file(rng, 6)}
    first = files["m.py"].split("\n", 1)[0]
    fix = sr_block("m.py", first, first + "\nimport os")
    oracle_files = {"m.py": files["m.py"].replace(first, first + "\nimport os", 1)}
    sr = [
        f"<solution>{fix}</solution><think>x</think>",
        f"</think>x<think><solution>{fix}</solution>",
        f"<think>x</think><solution>{fix}</solution></think>",
        f"<think>x<solution>{fix}</solution></think>",
        f"<think>x</think></solution>{fix}<solution>",
        f"<think>\n\n</think><solution>{fix}</solution>",
        f"<think>x</think><solution>{fix}</solution><solution>",
        f"<think>x</think><solution>{fix.replace('```python', '```')}</solution>",
        f"<think>x</think><solution>{fix}\n{fix}</solution>",
        f"<think>x</think><solution>{fix.replace(first, first + chr(13))}</solution>",
    ]
    out = [{"variant": "sr", "kind": "adversarial", "gate": "fixed", "completion": c, "files": files,
            "oracle_files": oracle_files} for c in sr]  # fmt: skip
    oracle = git_diff("m.py", files["m.py"], oracle_files["m.py"])
    diffs = [
        oracle,
        oracle.rstrip("\n"),
        oracle + "\n\n\n",
        oracle.replace("diff --git a/m.py b/m.py\n", ""),
        oracle.replace("a/m.py", "a/x.py"),
        "--- a/m.py\n+++ b/m.py\n",
        "diff --git a/m.py b/m.py\n",
        oracle.replace("@@ -1,", "@@ -1,1000000,"),
        "@@ -1 +1 @@\n-a\n+b\n",
        "diff --git http://h/a http://h/b\n--- http://h/a\n+++ http://h/b\n@@ -1 +1 @@\n-a\n+b\n",
        "Binary files a/m.py and b/m.py differ\n",
        oracle + "\\ No newline at end of file\n",
        oracle.replace("+import os", "+import os\n+import sys"),
    ]
    for d in diffs:
        for wrapped in (
            f"<think>x</think><solution>{d}</solution>",
            f"<solution>\n{d}\n</solution><think>y</think>",
        ):
            out.append({"variant": "diff", "kind": "adversarial", "gate": "fixed", "completion": wrapped, "raw": d,
                        "oracle_patch": oracle})  # fmt: skip
    return out


def patch_pair(chars: int, seed: int) -> tuple[dict[str, str], dict[str, str], str]:
    """(files, oracle_files, completion) with realistic predicted and oracle patches of about ``chars``
    characters each: most functions of a module rewritten, the prediction differing in a third of them."""
    rng = random.Random(seed)
    old = py_file(rng, max(8, chars // 600))
    lines = old.split("\n")
    oracle, pred = list(lines[:3]), list(lines[:3])
    for first, end in _units(old):
        unit = lines[first:end]
        new = _mutate(rng, unit, 0.7) if rng.random() < 0.9 else unit
        oracle += new
        pred += _mutate(rng, new, 0.3) if rng.random() < 0.3 else new
    completion = f"<think>rewrite</think><solution>{sr_block('big.py', old, chr(10).join(pred))}</solution>"
    return {"big.py": old}, {"big.py": "\n".join(oracle)}, completion


def patch_pair_as_diffs(
    files: dict[str, str], oracle_files: dict[str, str], completion: str
) -> tuple[str, str]:
    """The same pair as unified diffs: (completion with the predicted diff, oracle diff)."""
    new = completion.split("\n=======\n", 1)[1].split("\n>>>>>>> REPLACE\n", 1)[0]
    pred = git_diff("big.py", files["big.py"], new)
    return f"<think>diff</think><solution>{pred}</solution>", git_diff(
        "big.py", files["big.py"], oracle_files["big.py"]
    )
