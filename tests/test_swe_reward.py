"""SWE-RL patch-similarity reward: hand-worked values from the swe-rl reference definitions
(``calculate_search_replace_reward`` / ``calculate_reward_unidiff``), a plain transcription of them for
differential testing, exactness of the similarity (vs difflib) and of its work budget, and robustness /
time-bound properties (1 MB completions)."""

from __future__ import annotations

import difflib
import math
import re

import pytest
from conftest import cpu_guard
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrl.rewards.swe import (
    SEARCH_REPLACE_REGEX,
    apply_edits,
    make_patch,
    mean_similarity,
    parse_search_replace,
    parse_unified_diff,
    split_think_solution,
    swe_rl_diff_reward,
    swe_rl_reward,
    swe_rl_reward_fn,
)
from llmrl.rewards.swe_diff import MAX_BINARY_ANDS, MAX_URI_SPLITS, pathological_header

TIME_BOUND_S = 3.0  # documented in llmrl.rewards.swe: 1 MB completions against small oracles
CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b"
FILES = {"calc.py": CALC}
ORACLE = {"calc.py": CALC.replace("def sub(a, b):\n    return a + b", "def sub(a, b):\n    return a - b")}

# The oracle patch, written out by hand: n=3 context around line 6, empty context lines are " ".
ORACLE_PATCH = "\n".join(
    [
        "@@ -3,7 +3,7 @@",
        " ",
        " ",
        " def sub(a, b):",
        "-    return a + b",
        "+    return a - b",
        " ",
        " ",
        " def mul(a, b):",
    ]
)
# Replacing every "    return a + b" also breaks add(): lines 2 and 6 change, one merged hunk 1..9.
NAIVE_PATCH = "\n".join(
    [
        "@@ -1,9 +1,9 @@",
        " def add(a, b):",
        "-    return a + b",
        "+    return a - b",
        " ",
        " ",
        " def sub(a, b):",
        "-    return a + b",
        "+    return a - b",
        " ",
        " ",
        " def mul(a, b):",
    ]
)
# sub() fixed as "return -(b - a)": same hunk as the oracle, different "+" line.
NEG_PATCH = ORACLE_PATCH.replace("+    return a - b", "+    return -(b - a)")


def block(path: str, search: str, replace: str, lang: str = "python") -> str:
    return f"```{lang}\n### {path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```"


def wrap(solution: str, think: str = "sub() adds instead of subtracting") -> str:
    return f"<think>\n{think}\n</think>\n<solution>\n{solution}\n</solution>"


FIX = block("calc.py", "def sub(a, b):\n    return a + b", "def sub(a, b):\n    return a - b")
NAIVE = block("calc.py", "    return a + b", "    return a - b")
NEG = block("calc.py", "def sub(a, b):\n    return a + b", "def sub(a, b):\n    return -(b - a)")
NEW_FILE = block("notes.md", "", "# notes")


def ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def test_hand_written_patches_match_make_patch() -> None:
    assert make_patch(CALC, ORACLE["calc.py"]) == ORACLE_PATCH
    assert make_patch(CALC, CALC.replace("return a + b", "return a - b")) == NAIVE_PATCH
    assert make_patch(CALC, CALC) == ""
    assert make_patch("", "x") == "@@ -0,0 +1 @@\n+x"


OUT_OF_ORDER = [
    f"<solution>{FIX}</solution><think>r</think>",  # solution first
    f"</think>r<think><solution>{FIX}</solution>",  # thought = "<solution>...</solution>": non-empty
    f"<think>r<solution>{FIX}</solution></think>",  # solution inside the thought
]
CASES = [
    (wrap(FIX), 1.0),  # the oracle edit
    (wrap("Here is the fix:\n" + FIX + "\nDone."), 1.0),  # prose around the block is fine
    (wrap(FIX.replace("```python", "```")), 1.0),  # any (or no) fence language
    (wrap(NAIVE), ratio(NAIVE_PATCH, ORACLE_PATCH)),  # replace-all hits add() too: partial credit
    (wrap(NEG), ratio(NEG_PATCH, ORACLE_PATCH)),  # different but close fix
    (wrap(FIX + "\n" + NEW_FILE), (1.0 + 0.0) / 2),  # an extra (new) file scores 0 in the mean
    (wrap(block("notes.md", "", "# notes")), 0.0),  # only the wrong file
    # the gate: each tag exactly once, in any order; thought = after <think> up to the next </think>
    *[(completion, 1.0) for completion in OUT_OF_ORDER],
    (f"<think>r</think>\n{FIX}\n<solution>see above</solution>", -1.0),  # edits outside the solution
    (f"<think>r</think></solution>{FIX}<solution>", -1.0),  # solution = after <solution>: empty, no edits
    (f"</think><solution>{FIX}</solution><think>  ", -1.0),  # thought = after <think>: empty
    # format errors: each gate failure
    (FIX, -1.0),  # no tags at all
    (f"<solution>\n{FIX}\n</solution>", -1.0),  # no think
    (f"<think>r</think>\n{FIX}", -1.0),  # no solution tags
    (wrap(FIX, think="  \n "), -1.0),  # empty thought
    (f"<think>a</think><think>b</think><solution>{FIX}</solution>", -1.0),  # <think> twice
    (f"<think>r</think><solution>{FIX}</solution></solution>", -1.0),  # </solution> twice
    (f"<think>r</think></think><solution>{FIX}</solution>", -1.0),  # </think> twice
    (f"<think>r {FIX} </think><solution>see above</solution>", -1.0),  # edits outside the solution
    (wrap("just prose, no edits"), -1.0),  # no edits
    (wrap(FIX.replace("\n>>>>>>> REPLACE", "")), -1.0),  # unterminated block: no edits
    (wrap(block("calc.py", "def div(a, b):", "def div(a, b):\n    pass")), -1.0),  # search not found
    (wrap(block("calc.py", "eturn a + b", "eturn a - b")), -1.0),  # not at a line start
    (wrap(block("calc.py", "def add(a, b):", "def add(a, b):")), -1.0),  # search == replace
    (wrap(FIX + "\n" + block("calc.py", "def nope():", "x")), -1.0),  # one bad edit spoils all
    ("", -1.0),
]


@pytest.mark.parametrize("completion", OUT_OF_ORDER)
def test_require_order_option(completion: str) -> None:
    assert swe_rl_reward(completion, FILES, ORACLE) == 1.0
    assert swe_rl_reward(completion, FILES, ORACLE, require_order=True) == -1.0
    assert swe_rl_reward(wrap(FIX), FILES, ORACLE, require_order=True) == 1.0


@pytest.mark.parametrize(("completion", "expected"), CASES)
def test_swe_rl_reward_table(completion: str, expected: float) -> None:
    assert swe_rl_reward(completion, FILES, ORACLE) == expected


def test_partial_values_are_strictly_between() -> None:
    assert 0.0 < ratio(NAIVE_PATCH, ORACLE_PATCH) < ratio(NEG_PATCH, ORACLE_PATCH) < 1.0


def test_both_sides_empty_scores_one() -> None:
    files = {"x.py": "x = 1\ny = 2"}
    # The edit changes bytes but not str.splitlines(), so its patch is empty; the oracle changes nothing.
    completion = wrap(block("x.py", "x = 1", "x = 1\r"))
    assert apply_edits(files, {"x.py": [("x = 1", "x = 1\r")]}) == {"x.py": "x = 1\r\ny = 2"}
    assert swe_rl_reward(completion, files, {"x.py": files["x.py"]}) == 1.0
    assert swe_rl_reward(wrap(block("x.py", "x = 1", "x = 3")), files, {"x.py": files["x.py"]}) == 0.0
    assert mean_similarity({}, {}) == 1.0
    # a path whose texts are empty still counts (the reference's rule; only search/replace drops empties)
    assert mean_similarity({"a": ""}, {"a": ""}) == 0.0
    assert mean_similarity({"a": "x", "b": ""}, {"a": "x"}) == 0.5


def test_apply_edits_rules() -> None:
    files = {"f.py": "a = 1\nb = 1\na = 1"}
    assert apply_edits(files, {"f.py": [("a = 1", "a = 2")]}) == {"f.py": "a = 2\nb = 1\na = 2"}  # all
    assert apply_edits(files, {"f.py": [("a = 1", "a = 2"), ("a = 2\nb", "c")]}) == {"f.py": "c = 1\na = 2"}
    assert apply_edits(files, {"new.py": [("", "x")]}) == {"new.py": "x"}  # missing file starts empty
    assert apply_edits(files, {"f.py": [("= 1", "= 2")]}) is None  # anchored at line starts
    assert apply_edits(files, {"f.py": [("a = 1", "a = 1")]}) is None
    assert apply_edits(files, {"f.py": [("zzz", "y")]}) is None
    # replace-all blow-up is stopped by the documented work/size budget
    bomb = {"f.py": [("", "\n")] * 40}
    assert apply_edits({"f.py": "x\n" * 1000}, bomb, max_edit_chars=10**6) is None


def test_parse_search_replace_groups_by_path() -> None:
    text = FIX + "\n" + NEW_FILE + "\n" + NAIVE
    assert parse_search_replace(text) == {
        "calc.py": [
            ("def sub(a, b):\n    return a + b", "def sub(a, b):\n    return a - b"),
            ("    return a + b", "    return a - b"),
        ],
        "notes.md": [("", "# notes")],
    }
    assert parse_search_replace("no blocks") is None
    # regex quirk kept: a deletion needs an empty line before ">>>>>>> REPLACE"
    assert parse_search_replace("```\n### f\n<<<<<<< SEARCH\nx\n=======\n\n>>>>>>> REPLACE\n```") == {
        "f": [("x", "")]
    }
    assert parse_search_replace("```\n### f\n<<<<<<< SEARCH\nx\n=======\n>>>>>>> REPLACE\n```") is None


def test_split_think_solution() -> None:
    assert split_think_solution("<think> a </think> <solution> b </solution>") == ("a", "b")
    assert split_think_solution("<think></think><solution>b</solution>") is None
    assert split_think_solution(None) is None  # type: ignore[arg-type]
    # out of order: the text after each opening tag, up to its closing tag after it (or the end)
    assert split_think_solution("<solution> b </solution><think> a </think>") == ("a", "b")
    assert split_think_solution("</think>x<think> a <solution> b </solution>") == (
        "a <solution> b </solution>",
        "b",
    )
    assert split_think_solution("<think> a </solution> b </think><solution> c") == ("a </solution> b", "c")
    assert split_think_solution("<solution> b </solution><think> a </think>", require_order=True) is None
    assert split_think_solution("<think>a</think><solution>b</solution><think>", require_order=False) is None


# ---- unified-diff variant ------------------------------------------------------------------------
D1 = """diff --git a/foo.txt b/foo.txt
index 83db48f..f73504f 100644
--- a/foo.txt
+++ b/foo.txt
@@ -1,4 +1,4 @@ def top():
-Hello world
+Hello World
 This is a file
-With some lines
+With some changed lines
 End
"""
D1_TEXT = "@@ -1,4 +1,4 @@ def top():\n-Hello world\n+Hello World\n This is a file\n-With some lines\n+With some changed lines\n End"
D2 = D1.replace("changed lines", "changed")
D3 = D2.replace("foo.txt", "bar.txt")
BINARY = "diff --git a/img.png b/img.png\nindex 1..2 100644\nBinary files a/img.png and b/img.png differ\n"
RENAME = "diff --git a/old.py b/new.py\nsimilarity index 100%\nrename from old.py\nrename to new.py\n"
NEW = "diff --git a/n.py b/n.py\nnew file mode 100644\n--- /dev/null\n+++ b/n.py\n@@ -0,0 +1 @@\n+x = 1\n\\ No newline at end of file\n"
MODE = "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n"
# D1 with a last context line that is empty (" "): the gate strips it away, the hunk comes up short
D4 = D1.replace(" End\n", " End\n \n").replace("@@ -1,4 +1,4", "@@ -1,5 +1,5")


def dwrap(diff: str) -> str:
    return wrap(f"```diff\n{diff}```")


def test_parse_unified_diff_normalises_files() -> None:
    assert parse_unified_diff(D1) == {"foo.txt": D1_TEXT}
    assert parse_unified_diff(BINARY) == {}
    assert parse_unified_diff(RENAME) == {"old.py": "rename from old.py to new.py"}
    assert parse_unified_diff(NEW) == {"n.py": "@@ -0,0 +1,1 @@\n+x = 1\n\\ No newline at end of file"}
    plain = "--- a/p.py\t2024-01-01\n+++ b/p.py\n@@ -2 +2 @@\n-a\n+b\n"
    assert parse_unified_diff(plain) == {"p.py": "@@ -2,1 +2,1 @@\n-a\n+b"}
    # names differing after their first two characters make a rename, "rename from" lines or not
    moved = "--- a/x.py\n+++ b/y.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert parse_unified_diff(moved) == {"x.py": "rename from x.py to y.py\n@@ -1,1 +1,1 @@\n-a\n+b"}
    assert parse_unified_diff(D1 + MODE) == {"foo.txt": D1_TEXT, "run.sh": ""}  # mode change: empty text
    assert parse_unified_diff(D1 + D3) == {"foo.txt": D1_TEXT, "bar.txt": parse_unified_diff(D3)["bar.txt"]}
    assert parse_unified_diff(D1 + D2) == {"foo.txt": parse_unified_diff(D2)["foo.txt"]}  # the last one wins
    assert parse_unified_diff("prose only") == parse_unified_diff("") == {}  # no files, no error
    assert parse_unified_diff("@@ -1 +1 @@\n-a\n+b") is None  # hunk outside a file
    assert parse_unified_diff(D1.replace("@@ -1,4 +1,4", "@@ -1,5 +1,4")) is None  # body too short
    assert parse_unified_diff(D1.replace(" End", "?End")) is None  # bad line prefix
    assert parse_unified_diff(D4.rstrip()) is None and parse_unified_diff(D4) is not None


def test_header_guard() -> None:
    """Lines on which unidiff's regexes would backtrack super-linearly are refused, real ones pass."""
    uri = "diff --git http://h/a http://h/b\n--- http://h/a\n+++ http://h/b\n@@ -1 +1 @@\n-a\n+b\n"
    assert not pathological_header(uri) and parse_unified_diff(uri) is not None
    assert not pathological_header(D1 + BINARY)
    spaces = MAX_URI_SPLITS // 2 - 2  # one "://" twice: 2 * (spaces + 2) == MAX_URI_SPLITS
    line = "diff --git ://a" + " " * (spaces - 2) + "://b\n"
    assert line.count(" ") == spaces and not pathological_header(line)
    assert pathological_header(line.replace("://b", " ://b")) and parse_unified_diff(line + "x ") is not None
    assert parse_unified_diff(D1 + line.replace("://b", " ://b")) is None
    ands = "Binary files a" + " and b" * MAX_BINARY_ANDS + " differ\n"
    assert not pathological_header(ands) and pathological_header(ands.replace(" differ", " and c differ"))
    assert parse_unified_diff("Binary file " + " and " * 10_000) is None  # refused at once


DIFF_CASES = [
    (dwrap(D1), D1, 1.0),
    (dwrap(D2), D1, ratio(parse_unified_diff(D2)["foo.txt"], D1_TEXT)),
    (dwrap(D3), D1, 0.0),  # wrong file
    (dwrap(D1 + D3), D1, 0.5),  # extra file scores 0
    (dwrap(D1 + BINARY), D1, 1.0),  # binary files are skipped
    (dwrap(D1 + MODE), D1, 0.5),  # a mode-only file is a path with an empty text: scores 0
    (dwrap(RENAME), RENAME, 1.0),
    (
        dwrap(RENAME.replace("new.py", "other.py")),
        RENAME,
        ratio("rename from old.py to other.py", "rename from old.py to new.py"),
    ),
    (dwrap(BINARY), "", 1.0),  # both sides empty
    (dwrap("prose, no diff"), "", 1.0),  # both sides empty
    (wrap(D1), D1, 1.0),  # no fence needed
    (f"<solution>\n{D1}</solution>\n<think>x</think>", D1, 1.0),  # tags out of order
    (D1, D1, -1.0),  # format gate
    (dwrap("no diff here\n"), D1, 0.0),  # no files: the empty patch
    (dwrap(D1.replace("@@ -1,4 +1,4", "@@ -1,9 +1,4")), D1, 0.0),  # unparsable: the empty patch
    (wrap(D4), D4, 0.0),  # the stripped solution loses D4's last (empty) context line: unparsable
]


@pytest.mark.parametrize(("completion", "oracle", "expected"), DIFF_CASES)
def test_swe_rl_diff_reward_table(completion: str, oracle: str, expected: float) -> None:
    assert swe_rl_diff_reward(completion, oracle) == expected


def test_diff_reward_options_and_adapter() -> None:
    assert swe_rl_diff_reward(D2, D1, require_format=False) == ratio(
        parse_unified_diff(D2)["foo.txt"], D1_TEXT
    )
    assert swe_rl_diff_reward(D4, D4, require_format=False) == 1.0  # unstripped: parses
    assert swe_rl_diff_reward(D1 + D3, D1, require_format=False) == 0.5
    # strict: an unparsable or file-less prediction is a format error
    assert swe_rl_diff_reward(dwrap("no diff here\n"), D1, strict=True) == -1.0
    assert swe_rl_diff_reward(dwrap(D1.replace(" End", "?End")), D1, strict=True) == -1.0
    assert swe_rl_diff_reward(dwrap(D1), D1, strict=True) == 1.0
    # require_order threads through to the gate
    out_of_order = f"<solution>\n{D1}</solution>\n<think>x</think>"
    assert swe_rl_diff_reward(out_of_order, D1, require_order=True) == -1.0
    # line limit: a longer prediction is treated as unparsable
    assert swe_rl_diff_reward(D1, D1, require_format=False, max_diff_lines=12) == 1.0
    assert swe_rl_diff_reward(D1, D1, require_format=False, max_diff_lines=11) == 0.0
    assert swe_rl_diff_reward(D1, D1, require_format=False, max_diff_lines=11, strict=True) == -1.0
    # an unparsable oracle counts as one without files, with a warning
    with pytest.warns(UserWarning, match="unparsable oracle"):
        assert swe_rl_diff_reward(dwrap(D1), "@@ -1 +1 @@\n-a\n+c\n") == 0.0
    assert swe_rl_diff_reward(None, D1, require_format=False) == -1.0  # type: ignore[arg-type]
    assert swe_rl_reward_fn(dwrap(D1), {"oracle_patch": D1}) == 1.0
    assert swe_rl_reward_fn(wrap(FIX), {"files": FILES, "oracle_files": ORACLE}) == 1.0
    assert swe_rl_reward_fn(wrap(FIX), {}) is None


# ---- differential + robustness properties --------------------------------------------------------
def reference_reward(completion: str, files: dict[str, str], oracle: dict[str, str]) -> float:
    """The reference's search/replace reward transcribed plainly (re.findall, no bounds)."""
    if any(completion.count(t) != 1 for t in ["<think>", "</think>", "<solution>", "</solution>"]):
        return -1.0
    if not completion.split("<think>")[1].split("</think>")[0].strip():
        return -1.0
    answer = completion.split("<solution>")[1].split("</solution>")[0].strip()
    edits: dict[str, list[tuple[str, str]]] = {}
    for path, search, replace in re.findall(SEARCH_REPLACE_REGEX, answer):
        edits.setdefault(path, []).append((search, replace))
    if not edits:
        return -1.0
    new = {}
    for path, pairs in edits.items():
        content = "\n" + files.get(path, "")
        for search, replace in pairs:
            if search == replace or "\n" + search not in content:
                return -1.0
            content = content.replace("\n" + search, "\n" + replace)
        new[path] = content[1:]
    pred = {p: make_patch(files.get(p, ""), c) for p, c in new.items()}
    gold = {p: make_patch(files.get(p, ""), c) for p, c in oracle.items()}
    pred, gold = {p: v for p, v in pred.items() if v}, {p: v for p, v in gold.items() if v}
    paths = set(gold.keys()).union(set(pred.keys()))
    if not paths:
        return 1.0
    return sum(ratio(pred[p], gold[p]) if p in pred and p in gold else 0.0 for p in paths) / len(paths)


TOKENS = [
    "```",
    "```python",
    "\n",
    "### ",
    "calc.py",
    "notes.md",
    "<<<<<<< SEARCH",
    "=======",
    ">>>>>>> REPLACE",
    "def sub(a, b):",
    "    return a + b",
    "    return a - b",
    "<think>",
    "</think>",
    "<solution>",
    "</solution>",
    "x",
    " ",
    "`",
    "#",
    "\n\n",
]
LINES = ["def sub(a, b):", "    return a + b", "    return a - b", "", "def add(a, b):", "x", "\r"]
snippet = st.lists(st.sampled_from(LINES), min_size=0, max_size=3).map("\n".join)
blocks = st.builds(
    block, st.sampled_from(["calc.py", "notes.md"]), snippet, snippet, st.sampled_from(["", "python"])
)
token_text = st.lists(st.one_of(st.sampled_from(TOKENS), blocks), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(token_text)
def test_parser_equals_regex_findall(text: str) -> None:
    expected: dict[str, list[tuple[str, str]]] = {}
    for path, search, replace in re.findall(SEARCH_REPLACE_REGEX, text):
        expected.setdefault(path, []).append((search, replace))
    assert parse_search_replace(text) == (expected or None)


@settings(max_examples=200, deadline=None)
@given(token_text, st.booleans())
def test_reward_equals_reference(body: str, wrapped: bool) -> None:
    completion = wrap(body) if wrapped else body
    assert swe_rl_reward(completion, FILES, ORACLE) == reference_reward(completion, FILES, ORACLE)


def in_range(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and (value == -1.0 or 0.0 <= value <= 1.0)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400), st.text(max_size=200))
def test_arbitrary_text_never_raises(completion: str, diff: str) -> None:
    assert in_range(swe_rl_reward(completion, FILES, ORACLE))
    assert in_range(swe_rl_reward(wrap(completion), FILES, ORACLE))
    assert in_range(swe_rl_diff_reward(completion, D1))
    assert in_range(swe_rl_diff_reward(wrap(diff), D1))
    assert in_range(swe_rl_diff_reward(diff, D1, require_format=False))


def timed(fn, *args, **kwargs) -> float:
    with cpu_guard(TIME_BOUND_S, getattr(fn, "__name__", "reward")):
        value = fn(*args, **kwargs)
    assert in_range(value)
    return value


@settings(max_examples=6, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=30).map("".join), st.booleans())
def test_one_megabyte_adversarial_within_bound(seed: str, wrapped: bool) -> None:
    body = seed * (1_000_000 // len(seed) + 1)
    completion = wrap(body) if wrapped else body
    timed(swe_rl_reward, completion, FILES, ORACLE)
    timed(swe_rl_diff_reward, completion, D1)
    timed(swe_rl_diff_reward, body, D1, require_format=False)


BIG_FILES = {"big.py": "\n".join(f"x{i} = {i}" for i in range(3000))}
BIG_ORACLE = {"big.py": BIG_FILES["big.py"].replace("x7 = 7\n", "x7 = 70\n")}


@pytest.mark.parametrize(
    "body",
    [
        # ~1 MB of valid edits that toggle lines back and forth (so every search is found)
        "\n".join(
            block("big.py", f"x{i} = {i}", f"x{i} = {i}#")
            + "\n"
            + block("big.py", f"x{i} = {i}#", f"x{i} = {i}")
            for i in range(3000)
        )
        * 4,
        block("big.py", "x7 = 7", "\n".join(f"y{i} = {i}" for i in range(90000))),  # one huge insertion
        "".join(block(f"n{i}.py", "", "z") for i in range(18000)),  # ~18k new files
        "\n".join(f"+ y{i}\n- x{i}" for i in range(100000)),  # diff-looking noise
        D1 + "\n" * 1_000_000 + "x",  # a million empty lines after a hunk (over the line limit)
        D1 + "\n" * 99_980 + "x" * 900_000,  # just under the line limit: unidiff parses it all
    ],
    ids=[
        "toggling-edits",
        "huge-insertion",
        "many-new-files",
        "diff-noise",
        "empty-lines",
        "under-line-limit",
    ],
)
def test_one_megabyte_valid_looking_within_bound(body: str) -> None:
    assert len(body) >= 900_000
    timed(swe_rl_reward, wrap(body), BIG_FILES, BIG_ORACLE)
    timed(swe_rl_diff_reward, wrap(body), D1)
