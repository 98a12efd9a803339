"""SWE-RL patch-similarity reward (Wei et al., 2025, arXiv:2502.18449), search/replace and unified-diff forms.

The definitions are those of facebookresearch/swe-rl ``src/swerl/core/reward.py``
(``calculate_search_replace_reward`` and ``calculate_reward_unidiff``); results are equal to its results
(``==``; benchmarks/fidelity_swe.py counts disagreements) except where a bound below applies.

Search/replace reward (:func:`swe_rl_reward`):

1. format gate (:func:`split_think_solution`): ``<think>``, ``</think>``, ``<solution>``,
   ``</solution>`` each occur exactly once, in ANY order; the thought is the text after ``<think>`` up to
   the first ``</think>`` after it (to the end of the completion if there is none after it), the solution
   likewise between ``<solution>`` and ``</solution>``, both stripped; the thought must be non-empty.
   ``require_order=True`` also requires the four tags in that order (a stricter, non-reference gate);
2. edits = every match of :data:`SEARCH_REPLACE_REGEX` in the solution, grouped by path in order; none →
   format error;
3. per path: content = "\\n" + file (missing file → ""); for each (search, replace): search == replace
   or "\\n"+search not in content → format error; else replace ALL occurrences of "\\n"+search by
   "\\n"+replace; drop the leading "\\n";
4. patch(old, new) = "\\n".join(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="",
   n=3)) without its 2 header lines; empty patches are dropped (predicted and oracle alike);
5. per path p in pred ∪ oracle: s_p = ``SequenceMatcher(None, pred_p, oracle_p, autojunk=False).ratio()``,
   0 when either side has no (or an empty) patch for p;
6. reward = Σ_p s_p / |paths| ∈ [0, 1], summed in the reference's order (the iteration order of
   ``set(oracle.keys()).union(set(pred.keys()))``, which CPython fixes per process and hash seed), so the
   float is the reference's to the last bit; 1.0 when both patch sets are empty; −1.0 on a format error.

Unified-diff reward (:func:`swe_rl_diff_reward`): the predicted diff is the solution (gate as in step 1;
−1.0 if it fails) or, with ``require_format=False``, the whole completion -- then the reward is exactly
the reference's ``calculate_reward_unidiff([oracle_patch], [completion])``. Each diff is split into per-file
change texts by :func:`~llmrl.rewards.swe_diff.parse_unified_diff` (the ``unidiff`` library, as the
reference); an unparsable diff counts as one with no files (so it scores 0 against a non-empty oracle --
the reference's rule); ``strict=True`` scores an unparsable or file-less prediction −1.0 instead. A file
with an empty change text (e.g. a mode change) still counts as a path (scoring 0). Steps 5–6 as above.
Note the gate strips the solution, so a diff whose last hunk line is an empty context line loses it and
fails to parse -- a reference quirk, kept.

Bounds (deviations only for input far outside real patches; each is a keyword argument):

* parsing is linear in the completion length (the regex of step 2 is evaluated by an equivalent scanner
  with memoised ``str.find`` calls; ``re.findall`` can go quadratic on adversarial text); unidiff is linear
  except on crafted header lines, refused as unparsable (see :mod:`llmrl.rewards.swe_diff`), but costs up
  to ~4 µs per line, so a predicted diff of ``max_diff_lines`` (default 100,000) lines or more is treated
  as unparsable (≤ ~0.4 s; a 50 KB patch has ~1,500 lines);
* applying edits reads at most ``max_edit_chars`` (default 2**24) characters in total -- Σ over edits
  of the current file length -- and no edited file may exceed it; otherwise the output counts as a
  format error (−1). Real edits use a few hundred KB at most; this stops replace-all blow-ups;
* similarity: ``SequenceMatcher`` (``cydifflib``'s C port, equal to ``difflib``'s to the bit and ~25x
  faster; ``difflib`` if it is missing) is exact up to a work budget, ``max_similarity_work`` per reward
  call (None: no budget, always exact). See :func:`bounded_similarity`: the matcher's recursion is run
  node by node on sliced sub-problems, each node's work counted exactly before it runs (``W`` = Σ_c
  count_a[c]·count_b[c] over the node's two slices, the number of inner-loop steps of
  ``find_longest_match``, plus per-character costs of the slices); a node that does not fit in what is
  left of the budget is skipped with everything below it, so the score is then 2·M'/(|a|+|b|) with M'
  the characters of the reference's own matching blocks that were found: never above the exact value,
  1.0 for identical patches, in [0, 1].

Measurements behind the budget (2-core AMD EPYC VM shared with other jobs, CPython 3.11, cydifflib 1.2):
one unit of work costs 4-9 ns (load-dependent). ``W`` of the first node alone is not a bound: on
``"+a\\n"`` vs ``"+b\\n"`` repeated N times every match is 2 characters long, the recursion has ~2N
nodes and the total work is ~2N³/3 against W = 2N² (N = 3,000: 1.8e10 units; 80 s here, 95 s for
cydifflib's own ``ratio()``). Slicing is also 1.3-1.8x faster than ``ratio()`` on real patches (a 57 KB /
52 KB pair: 4.6 s vs 8.2 s). Realistic pairs (benchmarks/fidelity_swe_cases.py ``patch_pair``: most
functions of a module rewritten, the prediction differing in a third of them) need: 15 KB each 4e7 units
(0.25 s), 38 KB 2.0-2.5e8 (1.7-2.1 s), 49 KB 3.3e8 (2.5 s), 59/55 KB 5.4e8. Hence ``MAX_SIMILARITY_WORK``
= 4e8: exact for realistic patches up to ~50 KB each, at most ~2-3.5 s of matching on any input.

Time bound: tests/test_swe_reward.py asserts that 1 MB completions against small oracles score in under
3 s. Worst whole calls in a run of benchmarks/fidelity_swe.py (1 MB adversarial completions, long and
low-diversity patches, any oracle): 2.6 s for a search/replace edit that spends the whole budget on many
small nodes, 2.7 s for a low-diversity diff padded with empty lines to just under the line limit, 2.1 s
for a realistic ~50 KB pair, and 4.0 s (1.7-1.9 s alone) for an edit replacing every line start up to the
``max_edit_chars`` cap: the line diff of the 16 MB file it makes, unchanged from before. The previous
5,000-character prefix rule (documented as ≤ 1.5 s) took 316-333 s on the low-diversity patches.
"""

from __future__ import annotations

import difflib
import warnings
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple

from llmrl.rewards.format import tags_in_order
from llmrl.rewards.swe_diff import parse_unified_diff

try:
    from cydifflib import SequenceMatcher

    _SLOWDOWN = 1
except ImportError:  # pragma: no cover - cydifflib is a core dependency; difflib gives equal results
    from difflib import SequenceMatcher

    _SLOWDOWN = 25  # pure-Python difflib: the same budget in seconds covers 1/25 of the work

FORMAT_ERROR = -1.0
MAX_EDIT_CHARS = 1 << 24
MAX_SIMILARITY_WORK = 400_000_000
MAX_DIFF_LINES = 100_000
A_CHAR_WORK = 24  # work units per character of a node's first slice (Counter + scan)
B_CHAR_WORK = 96  # ... and of its second slice (Counter + the matcher's index of it)
SEARCH_REPLACE_REGEX = (
    r"```.*?\n### (.*)\n<<<<<<< SEARCH\n([\s\S]*?)\n=======\n([\s\S]*?)\n>>>>>>> REPLACE\n```"
)
_TAGS = ("<think>", "</think>", "<solution>", "</solution>")
_SEARCH = "<<<<<<< SEARCH\n"
_DIVIDER = "\n=======\n"
_END = "\n>>>>>>> REPLACE\n```"

Edits = dict[str, list[tuple[str, str]]]


def _between(text: str, start_tag: str, end_tag: str) -> str:
    """Text after the (single) ``start_tag`` up to the first ``end_tag`` after it, or to the end."""
    start = text.find(start_tag) + len(start_tag)
    end = text.find(end_tag, start)
    return text[start : end if end >= 0 else len(text)].strip()


def split_think_solution(completion: str, *, require_order: bool = False) -> tuple[str, str] | None:
    """(thought, solution), both stripped, if each of the four tags occurs exactly once (in order, with
    ``require_order``) and the thought is non-empty; else None (format error). See the module docstring."""
    if not isinstance(completion, str):
        return None
    if require_order:
        if not tags_in_order(completion, _TAGS):
            return None
    elif any(completion.count(tag) != 1 for tag in _TAGS):
        return None
    thought = _between(completion, "<think>", "</think>")
    return (thought, _between(completion, "<solution>", "</solution>")) if thought else None


class _Finder:
    """``text.find(needle, pos)`` memoised for non-decreasing ``pos``: linear total time."""

    def __init__(self, text: str, needle: str) -> None:
        self.text, self.needle, self.lo, self.hit = text, needle, 0, -2

    def __call__(self, pos: int) -> int:
        if (self.hit == -1 and pos >= self.lo) or self.lo <= pos <= self.hit:
            return self.hit  # no occurrence in [lo, hit), so the answer for pos is unchanged
        self.lo, self.hit = pos, self.text.find(self.needle, pos)
        return self.hit


def parse_search_replace(text: str) -> Edits | None:
    """``{path: [(search, replace), ...]}`` from the SEARCH/REPLACE blocks in ``text``, or None if none.

    Same result as ``re.findall(SEARCH_REPLACE_REGEX, text)`` grouped by path (tested for equality), in
    linear time: a match starts at a fence, its path is the line after the fence's line (which must
    start with ``### ``), search ends at the first ``\\n=======\\n`` and replace at the first
    ``\\n>>>>>>> REPLACE\\n``` `` after that (a later divider can never help: it leaves fewer ends).
    A failed attempt depends only on the fence's line end, so the scan resumes after it. Every find is
    queried at non-decreasing positions, so each one scans the text once: O(len(text)) in all."""
    if not isinstance(text, str):
        return None
    fence, line_end, path_end = _Finder(text, "```"), _Finder(text, "\n"), _Finder(text, "\n")
    divider, end = _Finder(text, _DIVIDER), _Finder(text, _END)
    edits: Edits = {}
    pos = 0
    while (start := fence(pos)) >= 0:
        newline = line_end(start + 3)  # ``.*?\n``: '.' stops only at "\n"
        if newline < 0:
            break
        # Every later fence before ``newline`` shares this newline, hence this outcome: skip past it.
        pos = newline + 1
        head = newline + 1
        if not text.startswith("### ", head):
            continue
        path_stop = path_end(head + 4)
        if path_stop < 0 or not text.startswith(_SEARCH, path_stop + 1):
            continue
        search_start = path_stop + 1 + len(_SEARCH)
        split = divider(search_start)
        if split < 0:
            continue
        stop = end(split + len(_DIVIDER))
        if stop < 0:
            continue
        path = text[head + 4 : path_stop]
        edits.setdefault(path, []).append((text[search_start:split], text[split + len(_DIVIDER) : stop]))
        pos = stop + len(_END)
    return edits or None


def apply_edits(
    files: Mapping[str, str], edits: Edits, *, max_edit_chars: int = MAX_EDIT_CHARS
) -> dict[str, str] | None:
    """New content of each edited path, or None (format error: search == replace, search not found, or
    the ``max_edit_chars`` work/size budget exceeded). Edits anchor at line starts ("\\n" is prepended
    to the file, the search and the replace) and replace every occurrence; missing files start empty."""
    work = 0
    out: dict[str, str] = {}
    for path, pairs in edits.items():
        content = "\n" + files.get(path, "")
        for search, replace in pairs:
            if search == replace:
                return None
            work += len(content)
            if work > max_edit_chars:
                return None
            old, new = "\n" + search, "\n" + replace
            count = content.count(old)
            if count == 0 or len(content) + count * (len(new) - len(old)) > max_edit_chars:
                return None
            content = content.replace(old, new)
        out[path] = content[1:]
    return out


def make_patch(old: str, new: str) -> str:
    """SWE-RL normalised patch: ``difflib.unified_diff(old.splitlines(), new.splitlines(),
    lineterm="", n=3)`` minus its 2 header lines, joined by "\\n" ("" when nothing changed)."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    return "\n".join(list(lines)[2:])


_oracle_patch = lru_cache(maxsize=512)(make_patch)  # oracle contents repeat across rollouts


class Similarity(NamedTuple):
    """A :func:`bounded_similarity` result: the score, the work spent (units of the module docstring),
    and whether the score is exact (else the lower bound described there)."""

    score: float
    work: int
    exact: bool


def bounded_similarity(pred: str, oracle: str, max_work: int | None = MAX_SIMILARITY_WORK) -> Similarity:
    """``SequenceMatcher(None, pred, oracle, autojunk=False).ratio()`` (0.0 if either side is empty)
    computed within ``max_work`` units of work (None: unbounded), else a lower bound of it.

    The reference's ``get_matching_blocks`` recursion, node by node: a node (alo, ahi, blo, bhi) finds the
    longest match of ``pred[alo:ahi]`` in ``oracle[blo:bhi]`` -- run on the two slices, which returns the
    same block as the range query on the whole strings (ties are broken by position, which slicing keeps)
    without the range query's wasted steps over ``oracle[:blo]`` -- and queues the parts left and right of
    it. A node costs ``A_CHAR_WORK``·len(a) + ``B_CHAR_WORK``·len(b) + Σ_c count_a[c]·count_b[c] for its
    slices a, b; that last term is exactly the number of inner-loop steps of ``find_longest_match``. The
    matched characters M sum to the reference's, and ``2.0 * M / (len(pred) + len(oracle))`` is the same
    float as ``ratio()``. A node whose cost exceeds what is left is skipped, with its sub-tree."""
    if not pred or not oracle:
        return Similarity(0.0, 0, True)
    if pred == oracle:
        return Similarity(1.0, 0, True)
    limit = None if max_work is None else max_work // _SLOWDOWN
    matched = spent = 0
    exact = True
    stack = [(0, len(pred), 0, len(oracle))]
    while stack:
        alo, ahi, blo, bhi = stack.pop()
        a, b = pred[alo:ahi], oracle[blo:bhi]
        cost = A_CHAR_WORK * len(a) + B_CHAR_WORK * len(b)
        if limit is not None and spent + cost > limit:
            exact = False
            continue
        spent += cost
        counts_b = Counter(b)
        steps = sum(n * counts_b.get(ch, 0) for ch, n in Counter(a).items())
        if limit is not None and spent + steps > limit:
            exact = False
            continue
        spent += steps
        i, j, k = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
        if k:
            matched += k
            if i and j:
                stack.append((alo, alo + i, blo, blo + j))
            if i + k < len(a) and j + k < len(b):
                stack.append((alo + i + k, ahi, blo + j + k, bhi))
    return Similarity(2.0 * matched / (len(pred) + len(oracle)), spent * _SLOWDOWN, exact)


def patch_similarity(
    pred: str, oracle: str, *, max_similarity_work: int | None = MAX_SIMILARITY_WORK
) -> float:
    """The score of :func:`bounded_similarity`: the reference's ratio, exact within the work budget."""
    return bounded_similarity(pred, oracle, max_similarity_work).score


def mean_similarity(
    pred: Mapping[str, str],
    oracle: Mapping[str, str],
    *,
    max_similarity_work: int | None = MAX_SIMILARITY_WORK,
) -> float:
    """Mean per-path similarity over every path of ``pred`` and ``oracle`` (a missing or empty side
    scores 0), 1.0 if there is none; the mean is summed in the reference's order (module docstring, step
    6). The work budget is shared by the paths, taken in sorted order."""
    paths = set(oracle.keys()).union(set(pred.keys()))
    if not paths:
        return 1.0
    left = max_similarity_work
    scores: dict[str, float] = {}
    for path in sorted(paths):
        result = bounded_similarity(pred.get(path, ""), oracle.get(path, ""), left)
        scores[path] = result.score
        if left is not None:
            left = max(0, left - result.work)
    return sum(scores[path] for path in paths) / len(paths)


def swe_rl_reward(
    completion: str,
    files: Mapping[str, str],
    oracle_files: Mapping[str, str],
    *,
    require_order: bool = False,
    max_edit_chars: int = MAX_EDIT_CHARS,
    max_similarity_work: int | None = MAX_SIMILARITY_WORK,
) -> float:
    """SWE-RL search/replace reward: −1.0 on a format error, else the mean patch similarity in [0, 1].

    ``files``: path → content before the fix (the files shown in the prompt); ``oracle_files``: path →
    content after the oracle fix, for the changed paths. ``require_order``: also require the tags in
    order. Never raises on model output."""
    parts = split_think_solution(completion, require_order=require_order)
    if parts is None:
        return FORMAT_ERROR
    edits = parse_search_replace(parts[1])
    if edits is None:
        return FORMAT_ERROR
    new_files = apply_edits(files, edits, max_edit_chars=max_edit_chars)
    if new_files is None:
        return FORMAT_ERROR
    pred = {path: make_patch(files.get(path, ""), content) for path, content in new_files.items()}
    oracle = {path: _oracle_patch(files.get(path, ""), content) for path, content in oracle_files.items()}
    pred = {path: patch for path, patch in pred.items() if patch}
    oracle = {path: patch for path, patch in oracle.items() if patch}
    return mean_similarity(pred, oracle, max_similarity_work=max_similarity_work)


def swe_rl_diff_reward(
    completion: str,
    oracle_patch: str,
    *,
    require_format: bool = True,
    require_order: bool = False,
    strict: bool = False,
    max_diff_lines: int | None = MAX_DIFF_LINES,
    max_similarity_work: int | None = MAX_SIMILARITY_WORK,
) -> float:
    """SWE-RL unified-diff reward: −1.0 if the format gate fails (with ``require_format``), else the mean
    per-file similarity of the predicted and oracle diffs in [0, 1] (1.0 if both have no files). An
    unparsable prediction -- or one of ``max_diff_lines`` lines or more (None: no limit) -- has no files,
    or scores −1.0 with ``strict`` (as does one without files); an unparsable oracle has no files (with a
    warning). ``require_order``: the gate also requires the tags in order. Never raises on model output."""
    if require_format:
        parts = split_think_solution(completion, require_order=require_order)
        if parts is None:
            return FORMAT_ERROR
        diff = parts[1]
    elif isinstance(completion, str):
        diff = completion
    else:
        return FORMAT_ERROR
    too_long = max_diff_lines is not None and diff.count("\n") >= max_diff_lines
    pred = None if too_long else parse_unified_diff(diff)
    if strict and not pred:
        return FORMAT_ERROR
    return mean_similarity(pred or {}, _oracle_diff(oracle_patch), max_similarity_work=max_similarity_work)


@lru_cache(maxsize=256)
def _oracle_diff(oracle_patch: str) -> dict[str, str]:
    parsed = parse_unified_diff(oracle_patch)
    if parsed is None:
        warnings.warn("unparsable oracle patch: scored as a patch with no files", stacklevel=3)
        return {}
    return parsed


def swe_rl_reward_fn(completion: str, sample: Mapping[str, Any]) -> float | None:
    """Reward-function-contract adapter: the diff variant if ``sample["oracle_patch"]`` is set, else the
    search/replace variant with ``sample["files"]`` and ``sample["oracle_files"]``; None if neither."""
    if sample.get("oracle_patch") is not None:
        return swe_rl_diff_reward(completion, str(sample["oracle_patch"]))
    if "files" in sample and "oracle_files" in sample:
        return swe_rl_reward(completion, sample["files"], sample["oracle_files"])
    return None


SWE_RL_SYSTEM = (
    "A user will ask you to solve a task. First think the problem through step by step, like working on "
    "scratch paper, for as long as you need; then give the final solution.\n"
    "Your response must follow this template:\n"
    "<think>\nyour reasoning\n</think>\n<solution>\nthe final solution for the user\n</solution>"
)

_EDIT_INSTRUCTIONS = """Please first localize the bug from the issue statement, then write *SEARCH/REPLACE* edits that fix it.

Every *SEARCH/REPLACE* edit must use this format:
1. The file path
2. The start of the search block: <<<<<<< SEARCH
3. A contiguous chunk of lines to search for in the existing source code
4. The dividing line: =======
5. The lines to put in its place
6. The end of the replace block: >>>>>>> REPLACE

Example:

```python
### mathweb/flask/app.py
<<<<<<< SEARCH
from flask import Flask
=======
import math
from flask import Flask
>>>>>>> REPLACE
```

The *SEARCH/REPLACE* edit REQUIRES PROPER INDENTATION: to add the line '        print(x)' you must write out all the spaces before the code.
Wrap each *SEARCH/REPLACE* edit in its own code block as shown above."""


def swe_rl_prompt(issue: str, files: Mapping[str, str]) -> list[dict[str, str]]:
    """SWE-RL chat prompt: the think/solution system message, and a user message with the issue between
    ``--- BEGIN ISSUE ---``/``--- END ISSUE ---``, each file between ``--- BEGIN FILE ---``/
    ``--- END FILE ---`` (a ``### path`` line, then the content), and the SEARCH/REPLACE instructions."""
    blocks = [
        f"--- BEGIN FILE ---\n```\n### {path}\n{content}\n```\n--- END FILE ---"
        for path, content in files.items()
    ]
    user = (
        "We are currently solving the following issue within our repository. Here is the issue text:\n"
        f"--- BEGIN ISSUE ---\n{issue}\n--- END ISSUE ---\n\n"
        "Below are some code segments, each from a relevant file. One or more of these files may contain bugs.\n\n"
        + "\n\n".join(blocks)
        + "\n\n"
        + _EDIT_INSTRUCTIONS
    )
    return [{"role": "system", "content": SWE_RL_SYSTEM}, {"role": "user", "content": user}]
