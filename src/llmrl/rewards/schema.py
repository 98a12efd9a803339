r"""Schema RL fine-grained validator reward (Lu et al., 2025, arXiv:2502.18878) and exact tool-call reward.

:func:`schema_reward` scores a completion against a JSON Schema in [0, 1]:

1. **Extract** (:func:`extract_json_text`; only the first :data:`MAX_CHARS` characters (1 MiB) of the
   completion are considered, so a longer one is scored on its truncated prefix):

   * Lines are split at ``"\n"``. A **fence line** is optional spaces/tabs (any amount, so fences inside
     indented list items count), a run of 3 or more backticks or 3 or more tildes, then an info string
     (the rest of the line; after a backtick run it must contain no backtick, so a one-line
     ```` ```json {"a": 1}``` ```` is not a fence). Fenced blocks pair up as in CommonMark, scanning
     top to bottom: a fence line opens a block; the block closes at the next fence line made of the same
     character, at least as long a run and an empty info string (spaces, tabs and ``"\r"`` only);
     fence-looking lines in between are body text. A block still open at the end runs to the end of text.
   * The body taken is that of the **last block whose info string's first word is** ``json``
     **(case-insensitive, optionally followed by letters/digits: ``json5``, ``jsonc``)**; if there is
     none, the last block with an **empty info string**; blocks tagged with another language (``python``,
     ``text``, ...) are ignored. With no such block, the **whole text** is taken. The body (or whole text)
     is whitespace-stripped and all positions below are indices into this stripped text.
   * A strict JSON text never contains a fence line (outside strings, a JSON line never starts with a
     backtick or a tilde, and strings cannot hold a raw newline), so a bare JSON document is always taken
     whole, even when its strings contain ```` ```json ````. Prose around a fenced block is ignored;
     prose around a bare document is part of the text decoded in step 2, so it never scores 1.0 (text
     after the value is a recovered error, text before it usually a hard failure; comments are free).
2. **Decode leniently** (:func:`lenient_loads`, a small JSON5-style parser): ``//`` and ``/* */``
   comments are free; trailing commas, single-quoted strings, unquoted keys, JSON5 numbers (``+1``,
   ``.5``, ``0x1F``, ``Infinity``, ``NaN``, leading zeros), raw control characters inside strings and
   trailing text after the value are recovered from and each records its position. Anything else is a
   hard failure: reward 0.0, as are (to bound the work on 1 MiB inputs) nesting deeper than
   :data:`MAX_DEPTH`, more than :data:`MAX_NODES` values (object keys not counted) and integers beyond
   Python's int/str conversion limit (``sys.get_int_max_str_digits()``, 4,300 digits by default, the
   limit at which ``json.loads`` refuses them too; a hex literal counts by its decimal digits). Floats
   out of range are infinite (``1e999999``), as with ``json.loads``. With recovered errors,
   ``fine = first error position / len(text)``; without, ``fine = 1``.
3. **Validate** with the ``jsonschema`` validator the schema's ``$schema`` names (default Draft 2020-12),
   so ``$ref`` and ``allOf``/``anyOf``/``oneOf``/``not`` behave exactly as in ``jsonschema`` (as in its
   default, ``format`` is an annotation, not checked). The class is derived from it by
   :mod:`llmrl.rewards.schema_validator`, which changes no verdict, only the cost: ``uniqueItems`` is an
   O(n log n) check (``jsonschema``'s own is quadratic on arrays of objects: tens of seconds for 4,000
   objects), arrays and objects are validated as copies whose ``repr`` is short (error messages would
   print each failing subtree again at every nesting level), and validation needing more than
   :data:`MAX_KEYWORD_CALLS` keyword evaluations stops with reward 0.0 (a count, not a timeout, so the
   reward stays deterministic; at up to ~25 us a keyword on a busy 2-core machine it bounds validation to
   about 4 s; a document at the :data:`MAX_NODES` cap fits with about 1.5 keywords per value). Any
   exception inside ``jsonschema`` (e.g. ``RecursionError`` on a document nested close to
   :data:`MAX_DEPTH` under a recursive schema, where plain ``jsonschema`` raises too) also scores 0.0.
   If any of the first :data:`MAX_ERRORS` errors sits at the root (empty path, e.g. a root type mismatch
   or a missing top-level required key) the reward is 0.0. Otherwise, among those errors, the one whose
   value comes *earliest in the re-encoded text* is chosen: its value is replaced by :data:`SENTINEL`,
   the document is re-encoded with ``json.dumps`` (default settings) into ``text`` and
   ``fine *= (text.index(SENTINEL) - 1) / (len(text) - len(SENTINEL))`` (the fraction of the output
   before the first schema error; the ``- 1`` steps back over the sentinel's opening quote).
4. ``fine == 1`` → 1.0, else ``0.3 * fine``.

:func:`tool_call_reward` is 1.0 iff the leniently decoded object equals the expected one exactly (JSON
equality: ``true`` never equals ``1``; ``1`` equals ``1.0``), else 0.0.

Neither function ever raises: any exception (a bad schema, an unresolvable remote ``$ref``, …) scores
0.0. ``jsonschema`` is imported lazily, on the first :func:`schema_reward` call.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from json.decoder import scanstring
from typing import Any

from llmrl.rewards.base import RewardFn
from llmrl.rewards.schema_validator import (
    WorkBudgetExceeded,
    keyword_budget,
    short_repr_copy,
    validator_class_for,
)

MAX_CHARS = 1 << 20  # completions are truncated to their first 1 MiB characters
MAX_DEPTH = 200  # deeper nesting is a hard decode failure
MAX_NODES = 100_000  # documents with more values are a hard decode failure (bounds validation time)
MAX_ERRORS = 32  # schema errors examined (root check and earliest-position choice)
MAX_KEYWORD_CALLS = 150_000  # validation needing more keyword evaluations scores 0.0 (bounds its time)
PARTIAL_FACTOR = 0.3  # multiplier applied when fine < 1
SENTINEL = "__llmrl_schema_error_sentinel_7f3a9c__"

_FENCE_LINE = re.compile(r"^[ \t]*(?P<run>`{3,}|~{3,})(?P<info>[^\n]*)$", re.M)
_JSON_INFO = re.compile(r"json[a-z0-9]*", re.I)
_WS = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)*", re.S)
_STRICT_NUM = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_LENIENT_NUM = re.compile(r"[+-]?(?:Infinity|NaN|0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_SQ_STRING = re.compile(r"'([^'\\]*(?:\\.[^'\\]*)*)'", re.S)
_SQ_ESCAPE = re.compile(r"\\.|\"", re.S)
_CONTROL = re.compile(r"[\x00-\x1f]")
_LITERALS = {"true": True, "false": False, "null": None}


class DecodeFailure(ValueError):
    """The text cannot be decoded into a value, even leniently."""


class _Parser:
    """Recursive-descent JSON5-ish parser recording the position of each recovered error."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.errors: list[int] = []
        self.nodes = 0

    def _ws(self, pos: int) -> int:
        return _WS.match(self.s, pos).end()  # type: ignore[union-attr]  # always matches (may be empty)

    def parse(self) -> Any:
        pos = self._ws(0)
        value, pos = self._value(pos, 0)
        pos = self._ws(pos)
        if pos < len(self.s):
            self.errors.append(pos)  # trailing text after the value
        return value

    def _value(self, pos: int, depth: int) -> tuple[Any, int]:
        s = self.s
        if pos >= len(s):
            raise DecodeFailure(f"unexpected end at {pos}")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise DecodeFailure(f"over {MAX_NODES} values at {pos}")
        ch = s[pos]
        if ch == "{" or ch == "[":
            if depth >= MAX_DEPTH:
                raise DecodeFailure(f"nesting deeper than {MAX_DEPTH} at {pos}")
            return self._object(pos, depth + 1) if ch == "{" else self._array(pos, depth + 1)
        if ch == '"' or ch == "'":
            return self._string(pos)
        for word, lit in _LITERALS.items():
            if s.startswith(word, pos):
                return lit, pos + len(word)
        m = _LENIENT_NUM.match(s, pos)
        if m is None:
            raise DecodeFailure(f"unexpected {ch!r} at {pos}")
        return self._number(m.group(), pos), m.end()

    def _number(self, tok: str, pos: int) -> int | float:
        strict = _STRICT_NUM.fullmatch(tok)
        if strict is None:
            self.errors.append(pos)
        body = tok.lstrip("+-")
        sign = -1 if tok.startswith("-") else 1
        if body in ("Infinity", "NaN"):
            return sign * float(body.lower().replace("infinity", "inf"))
        if body[:2] in ("0x", "0X"):
            value = int(body, 16)  # base 16 has no digit limit: bound it by its decimal digits
            limit = sys.get_int_max_str_digits()
            if limit and value.bit_length() > 3 * limit and value >= 10**limit:  # str(value) would raise
                raise DecodeFailure(f"integer over {limit} decimal digits at {pos}")
            return sign * value
        if any(c in body for c in ".eE"):
            return sign * float(body)
        try:
            return sign * int(body)
        except ValueError:  # over sys.get_int_max_str_digits() digits (json.loads refuses them too)
            raise DecodeFailure(f"integer over the int/str digit limit at {pos}") from None

    def _string(self, pos: int) -> tuple[str, int]:
        s = self.s
        if s[pos] == "'":
            self.errors.append(pos)
            m = _SQ_STRING.match(s, pos)
            if m is None:
                raise DecodeFailure(f"unterminated string at {pos}")
            body = _SQ_ESCAPE.sub(lambda e: {"\\'": "'", '"': '\\"'}.get(e.group(), e.group()), m.group(1))
            try:
                value, _ = scanstring('"' + body + '"', 1, False)
            except ValueError as exc:
                raise DecodeFailure(f"bad string at {pos}: {exc}") from None
            return value, m.end()
        try:
            return scanstring(s, pos + 1, True)
        except ValueError:
            pass
        try:
            value, end = scanstring(s, pos + 1, False)
        except ValueError as exc:
            raise DecodeFailure(f"bad string at {pos}: {exc}") from None
        ctl = _CONTROL.search(s, pos, end)
        self.errors.append(ctl.start() if ctl else pos)
        return value, end

    def _key(self, pos: int) -> tuple[str, int]:
        if pos < len(self.s) and self.s[pos] in "\"'":
            return self._string(pos)
        m = _IDENT.match(self.s, pos)
        if m is None:
            raise DecodeFailure(f"expected a key at {pos}")
        self.errors.append(pos)
        return m.group(), m.end()

    def _object(self, pos: int, depth: int) -> tuple[dict[str, Any], int]:
        s, out = self.s, {}
        pos = self._ws(pos + 1)
        if s.startswith("}", pos):
            return out, pos + 1
        while True:
            key, pos = self._key(pos)
            pos = self._ws(pos)
            if not s.startswith(":", pos):
                raise DecodeFailure(f"expected ':' at {pos}")
            out[key], pos = self._value(self._ws(pos + 1), depth)
            closed, pos = self._after_item(pos, "}")
            if closed:
                return out, pos

    def _after_item(self, pos: int, close: str) -> tuple[bool, int]:
        """After a member/element: (container closed?, next position). A comma directly followed by the
        closing bracket is a trailing comma: recorded as an error at the comma, then the container closes."""
        s = self.s
        pos = self._ws(pos)
        if s.startswith(close, pos):
            return True, pos + 1
        if not s.startswith(",", pos):
            raise DecodeFailure(f"expected ',' or '{close}' at {pos}")
        comma, pos = pos, self._ws(pos + 1)
        if s.startswith(close, pos):
            self.errors.append(comma)  # trailing comma
            return True, pos + 1
        return False, pos

    def _array(self, pos: int, depth: int) -> tuple[list[Any], int]:
        s, out = self.s, []
        pos = self._ws(pos + 1)
        if s.startswith("]", pos):
            return out, pos + 1
        while True:
            value, pos = self._value(pos, depth)
            out.append(value)
            closed, pos = self._after_item(pos, "]")
            if closed:
                return out, pos


def _raise_constant(name: str) -> Any:
    raise ValueError(name)  # NaN/Infinity are JSON5 leniencies: let the lenient parser record them


def _too_big(value: Any) -> bool:
    """True when ``value`` nests deeper than :data:`MAX_DEPTH` or holds over :data:`MAX_NODES` values."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    nodes = 1
    while stack:
        node, depth = stack.pop()
        nodes += len(node)
        if depth > MAX_DEPTH or nodes > MAX_NODES:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def lenient_loads(text: str) -> tuple[Any, list[int]]:
    """Decode ``text`` leniently; return ``(value, recovered error positions)`` (comments are free).

    Strict JSON takes a fast path through :func:`json.loads`. Raises :class:`DecodeFailure` when no value
    can be produced, or when it nests deeper than :data:`MAX_DEPTH` or holds over :data:`MAX_NODES`."""
    try:
        value = json.loads(text, parse_constant=_raise_constant)
    except (ValueError, RecursionError):
        pass
    else:
        if not _too_big(value):
            return value, []
        raise DecodeFailure(f"deeper than {MAX_DEPTH} or over {MAX_NODES} values")
    parser = _Parser(text)
    return parser.parse(), parser.errors


def _fenced_blocks(text: str) -> list[tuple[str, int, int]]:
    """``(info string, body start, body end)`` of each fenced block of ``text`` (module doc, step 1)."""
    blocks: list[tuple[str, int, int]] = []
    opener: tuple[str, str, int] | None = None  # (fence run, info, body start)
    for m in _FENCE_LINE.finditer(text):
        run, info = m.group("run"), m.group("info")
        if opener is None:
            if not (run[0] == "`" and "`" in info):
                opener = (run, info.strip(), m.end() + 1)
        elif run[0] == opener[0][0] and len(run) >= len(opener[0]) and not info.strip():
            blocks.append((opener[1], opener[2], m.start()))
            opener = None
    if opener is not None:
        blocks.append((opener[1], opener[2], len(text)))
    return blocks


def extract_json_text(completion: str) -> str:
    """The text :func:`schema_reward` decodes (module doc, step 1): within the first :data:`MAX_CHARS`
    characters, the body of the last fenced block tagged ``json`` (or ``json5``, ``jsonc``, ...), else of
    the last untagged fenced block, else the whole text; whitespace-stripped."""
    text = completion[:MAX_CHARS]
    blocks = _fenced_blocks(text)
    json_blocks = [b for b in blocks if b[0] and _JSON_INFO.fullmatch(b[0].split()[0])]
    plain_blocks = [b for b in blocks if not b[0]]
    chosen = json_blocks or plain_blocks
    if not chosen:
        return text.strip()
    _, start, end = chosen[-1]
    return text[start:end].strip()


def _replace_at(doc: Any, path: list[Any], value: Any) -> Any:
    """Copy of ``doc`` with the node at ``path`` replaced (only the containers on the path are copied)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    new = dict(doc) if isinstance(doc, dict) else list(doc)
    new[head] = _replace_at(doc[head], rest, value)
    return new


def _sentinel_fraction(doc: Any, path: list[Any]) -> tuple[float, int]:
    """(fraction of the re-encoded text before the sentinel placed at ``path``, sentinel index)."""
    text = json.dumps(_replace_at(doc, path, SENTINEL))
    index = text.find(SENTINEL)
    return (index - 1) / (len(text) - len(SENTINEL)), index


def _schema_fraction(doc: Any, schema: Mapping[str, Any]) -> float:
    """1.0 if ``doc`` is valid; 0.0 on a root error; else the fraction before the earliest error."""
    validator = validator_class_for(schema)(schema)  # jsonschema is imported lazily in there
    paths: list[list[Any]] = []
    try:
        with keyword_budget(MAX_KEYWORD_CALLS):
            for error in validator.iter_errors(short_repr_copy(doc)):  # same value, O(1) error reprs
                path = list(error.absolute_path)
                if not path:
                    return 0.0
                paths.append(path)
                if len(paths) >= MAX_ERRORS:
                    break
    except WorkBudgetExceeded:
        return 0.0
    if not paths:
        return 1.0
    best = min((_sentinel_fraction(doc, p) for p in paths), key=lambda fi: fi[1])
    return min(max(best[0], 0.0), 1.0)


def _score_schema(completion: str, schema: Mapping[str, Any]) -> float:
    text = extract_json_text(completion)
    try:
        doc, errors = lenient_loads(text)
    except DecodeFailure:
        return 0.0
    fine = min(errors) / len(text) if errors else 1.0
    fine *= _schema_fraction(doc, schema)
    return 1.0 if fine >= 1.0 else PARTIAL_FACTOR * max(fine, 0.0)


def schema_reward(completion: str, schema: dict) -> float:
    """Fine-grained validator reward of ``completion`` against JSON Schema ``schema``, in [0, 1]
    (rules in the module docstring). Never raises: any failure scores 0.0."""
    try:
        if not isinstance(completion, str) or not isinstance(schema, Mapping | bool):
            return 0.0
        return float(_score_schema(completion, schema))  # type: ignore[arg-type]
    except Exception:  # model output (or a broken schema) must never crash a run
        return 0.0


def _json_equal(a: Any, b: Any) -> bool:
    """Structural JSON equality: bools never equal numbers; ints equal floats of the same value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def tool_call_reward(completion: str, expected: dict) -> float:
    """1.0 iff the leniently decoded (extracted) object equals ``expected`` exactly, else 0.0."""
    try:
        if not isinstance(completion, str):
            return 0.0
        doc, _ = lenient_loads(extract_json_text(completion))
        return 1.0 if _json_equal(doc, expected) else 0.0
    except Exception:  # DecodeFailure, RecursionError on absurd `expected`, ...
        return 0.0


def make_schema_reward(schema_key: str = "schema") -> RewardFn:
    """Reward callable ``fn(completion, sample)`` scoring against ``sample[schema_key]`` (None if absent)."""

    def fn(completion: str, sample: Mapping[str, Any]) -> float | None:
        schema = sample.get(schema_key) if isinstance(sample, Mapping) else None
        return None if schema is None else schema_reward(completion, schema)

    return fn


def make_tool_call_reward(expected_key: str = "expected") -> RewardFn:
    """Reward callable ``fn(completion, sample)`` comparing with ``sample[expected_key]`` (None if absent)."""

    def fn(completion: str, sample: Mapping[str, Any]) -> float | None:
        expected = sample.get(expected_key) if isinstance(sample, Mapping) else None
        return None if expected is None else tool_call_reward(completion, expected)

    return fn
