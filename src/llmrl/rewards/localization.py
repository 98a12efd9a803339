"""SoRFT localisation rewards (Ma et al., 2025, arXiv:2502.20127) and the F_β set score.

SoRFT's rule-based PPO stage scores a localisation answer (files, functions or lines that a fix must
touch) by F_β of the predicted set against the gold set taken from the PR patch:

    P = |pred ∩ gold| / |pred|,   R = |pred ∩ gold| / |gold|,   F_β = (1 + β²)·P·R / (β²·P + R)

with β = 3 (recall weighs β² = 9 times as much as precision). F_β = 0 when either set is empty or they
do not overlap. The reward is 0 for empty/unparsable output and whenever ANY predicted target is absent
from the input (a hallucinated file, function or line), which also stops "list everything" hacking from
paying off through made-up names.

Answer extraction (:func:`answer_items`): the content of the LAST ``<answer>…</answer>`` if there is one,
else the whole completion; inside that, the LAST fenced block (```` ``` ````…```` ``` ````, info string
dropped) if there is one. One item per line; blank lines are skipped; list markers (``-``, ``*``, ``+``,
``•``, ``1.``, ``1)``) and surrounding backticks/quotes are removed.

Item formats (a "path" is a repository-relative file path; a leading ``./`` is dropped):

* files: ``path``;
* functions: ``[function|class|method:] [path:|path::]Name`` where Name is ``foo``, ``Class`` or
  ``Class.method`` (a trailing ``()`` is allowed);
* lines: ``[line:|lines:|line ] [path:]N`` with N a decimal line number; ``function:``/``class:``/
  ``method:`` lines are ignored by the line reward (Agentless answers mix them in).

Agentless-style header lines -- a bare path such as ``pkg/mod.py`` (contains ``/`` or ends in a source
file extension) with no ``kind:`` prefix and no ``:`` -- qualify the function/line items that follow
(a header-looking line that is itself a known function name, e.g. ``Response.json``, is a target).
Targets are keys ``(path | None, name_or_line)``. Gold and known/valid entries take the same string forms,
or ``(path, name_or_line)`` tuples (ints for unqualified lines). A predicted or gold key is resolved
against the known/valid set: a qualified key matches itself, or the unqualified entry of that name; an
unqualified key matches every known entry of that name (in any file). A predicted key that matches
nothing is a hallucination → reward 0.

An answer listing more than ``MAX_ITEMS`` (1000) items scores 0.

Cost: linear in the completion length (every regex is anchored, with no nested quantifiers), plus
O(|gold| + |candidates|): ≈ 0.15 s per MB of completion on the 2-core reference CPU;
tests/test_localization_reward.py asserts that 1 MB completions score (all five variants) in < 2 s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from llmrl.rewards.logic import extract_last_answer

DEFAULT_BETA = 3.0

Key = tuple[str | None, Any]  # (path or None, function name or line number)

_MARKER_RE = re.compile(r"(?:[-*+•]|\d{1,6}[.)])\s+")
_QUOTES = "`'\""
_FUNC_KIND_RE = re.compile(r"(function|func|def|class|method)\s*:\s*", re.IGNORECASE)
_LINE_KIND_RE = re.compile(r"lines?(?:\s*:\s*|\s+)", re.IGNORECASE)
_NAME_RE = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")
_NUM_RE = re.compile(r"\d{1,12}")
_SOURCE_EXT_RE = re.compile(
    r"[\w.-]*\.(?:py|pyi|pyx|pxd|js|jsx|ts|tsx|java|go|rs|c|cc|cpp|cxx|h|hh|hpp|rb|php|cs|kt|scala|swift"
    r"|m|mm|sh|rst|md|txt|toml|cfg|ini|yaml|yml|json)",
    re.IGNORECASE,
)


MAX_ITEMS = 1000
"""Answers listing more items than this score 0.0: localisation answers are short, and a huge candidate
list only games recall. It also bounds the work per call (parsing stops at the count check)."""

def f_beta(predicted: Iterable[Any], gold: Iterable[Any], beta: float = DEFAULT_BETA) -> float:
    """F_β of two sets: ``(1 + β²)·P·R / (β²·P + R)`` with P = |pred ∩ gold|/|pred|,
    R = |pred ∩ gold|/|gold|; 0.0 if either set is empty or there is no overlap. ``beta`` must be a
    finite number ≥ 0 (β = 0 gives precision, β → ∞ recall). Result in [0, 1]."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    pred, ref = set(predicted), set(gold)
    if not pred or not ref:
        return 0.0
    hits = len(pred & ref)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(pred), hits / len(ref)
    b2 = float(beta) * float(beta)
    return (1.0 + b2) * precision * recall / (b2 * precision + recall)


def fenced_blocks(text: str) -> list[str]:
    """Contents of the complete ```` ``` ```` fenced blocks of ``text``, in order (linear time).

    Fences pair up left to right (1st opens, 2nd closes, ...); an unclosed last fence is ignored. The
    opening fence's line (the info string, e.g. ``python``) is dropped when the block spans lines."""
    blocks: list[str] = []
    pos = 0
    while True:
        start = text.find("```", pos)
        if start < 0:
            return blocks
        end = text.find("```", start + 3)
        if end < 0:
            return blocks
        body = text[start + 3 : end]
        newline = body.find("\n")
        blocks.append(body[newline + 1 :] if newline >= 0 else body)
        pos = end + 3


def _clean(line: str) -> str:
    """Strip whitespace, one leading list marker and surrounding backticks/quotes."""
    line = line.strip()
    marker = _MARKER_RE.match(line)
    if marker is not None:
        line = line[marker.end() :]
    return line.strip().strip(_QUOTES).strip()


def answer_items(completion: str) -> list[str]:
    """The non-empty, cleaned lines of the answer region of ``completion`` (see the module docstring);
    ``[]`` for a non-string or empty answer."""
    if not isinstance(completion, str):
        return []
    region = extract_last_answer(completion)
    if region is None:
        region = completion
    blocks = fenced_blocks(region)
    if blocks:
        region = blocks[-1]
    items = (_clean(line) for line in region.split("\n") if line and not line.isspace())  # skip blanks at C speed
    return [item for item in items if item]


def _norm_path(path: str) -> str:
    path = path.strip().strip(_QUOTES).strip()
    i = 0
    while path.startswith("./", i):  # count leading "./" first: slicing in the loop would be quadratic
        i += 2
    return path[i:]


def _is_header(text: str) -> bool:
    """A bare file path line (Agentless style) that qualifies the items after it."""
    if not text or ":" in text or any(ch.isspace() for ch in text):
        return False
    return "/" in text or _SOURCE_EXT_RE.fullmatch(text) is not None


def _split_qualified(body: str) -> tuple[str | None, str]:
    """``path::rest`` / ``path:rest`` → (path, rest); no separator → (None, body)."""
    for sep in ("::", ":"):
        if sep in body:
            path, _, rest = body.rpartition(sep)
            path = _norm_path(path)
            return (path or None), rest.strip().strip(_QUOTES)
    return None, body.strip().strip(_QUOTES)


def _parse_function(item: str) -> tuple[str, Any] | None:
    """``("header", path)`` | ``("target", (path | None, name))`` | None (unparsable)."""
    kind = _FUNC_KIND_RE.match(item)
    body = item[kind.end() :].strip() if kind is not None else item
    if kind is None and _is_header(body):
        return "header", _norm_path(body)
    path, name = _split_qualified(body)
    if name.endswith("()"):
        name = name[:-2]
    if _NAME_RE.fullmatch(name) is None:
        return None
    return "target", (path, name)


def _parse_line(item: str) -> tuple[str, Any] | None:
    """``("header", path)`` | ``("target", (path | None, n))`` | ``("skip", None)`` | None (unparsable)."""
    if _FUNC_KIND_RE.match(item) is not None:
        return "skip", None
    kind = _LINE_KIND_RE.match(item)
    body = item[kind.end() :].strip() if kind is not None else item
    if kind is None and _is_header(body):
        return "header", _norm_path(body)
    path, number = _split_qualified(body)
    if _NUM_RE.fullmatch(number) is None:
        return None
    return "target", (path, int(number))


def _entry_key(entry: Any, parse: Any, coerce: Any) -> Key:
    """Normalise one gold/known entry (string or ``(path, x)`` tuple; ints for lines) into a key."""
    if isinstance(entry, tuple) and len(entry) == 2:
        path = None if entry[0] is None else _norm_path(str(entry[0])) or None
        return path, coerce(entry[1])
    if isinstance(entry, int) and not isinstance(entry, bool):
        return None, coerce(entry)
    parsed = parse(_clean(str(entry)))
    if parsed is None or parsed[0] != "target":
        raise ValueError(f"cannot parse localisation target {entry!r}")
    return parsed[1]


def _index(keys: Iterable[Key]) -> dict[Any, set[Key]]:
    index: dict[Any, set[Key]] = {}
    for key in keys:
        index.setdefault(key[1], set()).add(key)
    return index


def _resolve(key: Key, index: Mapping[Any, set[Key]]) -> set[Key]:
    """Known keys that ``key`` names (empty set = not present in the input)."""
    candidates = index.get(key[1])
    if not candidates:
        return set()
    if key[0] is None:
        return set(candidates)
    for option in (key, (None, key[1])):
        if option in candidates:
            return {option}
    return set()


def _targets_reward(
    completion: str, gold: Iterable[Any], known: Iterable[Any], beta: float, parse: Any, coerce: Any
) -> float:
    items = answer_items(completion)
    if len(items) > MAX_ITEMS:
        return 0.0  # a list this long is not a localisation (and would only game recall)
    index = _index(_entry_key(entry, parse, coerce) for entry in known)
    predicted: set[Key] = set()
    header: str | None = None
    for item in items:
        parsed = parse(item)
        if parsed is None:
            return 0.0  # unparsable item
        kind, value = parsed
        if kind == "header" and value not in index:  # a bare "Response.json" that is a known name is a target
            header = value
            continue
        if kind == "header":
            kind, value = "target", (None, value)
        if kind == "skip":
            continue
        path, target = value
        resolved = _resolve((path if path is not None else header, target), index)
        if not resolved:
            return 0.0  # hallucinated target
        predicted |= resolved
    gold_keys: set[Key] = set()
    for entry in gold:
        key = _entry_key(entry, parse, coerce)
        gold_keys |= _resolve(key, index) or {key}
    return f_beta(predicted, gold_keys, beta)


def file_localization_reward(
    completion: str, gold_files: Iterable[str], repo_files: Iterable[str], beta: float = DEFAULT_BETA
) -> float:
    """SoRFT file-localisation reward in [0, 1]: F_β(predicted paths, gold paths), or 0.0 if the answer
    has no items or names any path not in ``repo_files`` (paths compared after dropping ``./``)."""
    items = answer_items(completion)
    repo = {_norm_path(str(path)) for path in repo_files}
    predicted: set[str] = set()
    for item in items:
        path = _norm_path(item)
        if path not in repo:
            return 0.0
        predicted.add(path)
    return f_beta(predicted, {_norm_path(str(path)) for path in gold_files}, beta)


def function_localization_reward(
    completion: str, gold_functions: Iterable[Any], known_functions: Iterable[Any], beta: float = DEFAULT_BETA
) -> float:
    """SoRFT function-localisation reward in [0, 1]: F_β over resolved ``(path | None, name)`` keys, or
    0.0 for no items, an unparsable item, or a target absent from ``known_functions`` (the functions and
    classes shown in the prompt's skeletons). Item format: see the module docstring."""
    return _targets_reward(completion, gold_functions, known_functions, beta, _parse_function, str)


def line_localization_reward(
    completion: str, gold_lines: Iterable[Any], valid_lines: Iterable[Any], beta: float = DEFAULT_BETA
) -> float:
    """SoRFT line-localisation reward in [0, 1]: F_β over resolved ``(path | None, line)`` keys, or 0.0
    for no line items, an unparsable item, or a line absent from ``valid_lines`` (the line numbers shown
    in the prompt). Entries: ``12``, ``"12"``, ``"path.py:12"`` or ``("path.py", 12)``."""
    return _targets_reward(completion, gold_lines, valid_lines, beta, _parse_line, int)


_LEVELS = {
    "file": file_localization_reward,
    "function": function_localization_reward,
    "line": line_localization_reward,
}


def localization_reward_fn(completion: str, sample: Mapping[str, Any]) -> float | None:
    """Reward-function-contract adapter: ``sample["level"]`` in {"file", "function", "line"},
    ``sample["gold"]`` and ``sample["candidates"]`` (repo files / known functions / valid lines),
    optional ``sample["beta"]`` (default 3). None (no opinion) when the sample has no such level."""
    fn = _LEVELS.get(str(sample.get("level", "")))
    if fn is None or "gold" not in sample or "candidates" not in sample:
        return None
    return fn(completion, sample["gold"], sample["candidates"], float(sample.get("beta", DEFAULT_BETA)))
