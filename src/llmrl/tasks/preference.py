"""Preference pairs (prompt, chosen, rejected) from JSON Lines, parquet, CSV or Hugging Face datasets.

File format
-----------
One record per line (JSONL: ``.jsonl``, ``.json``, ``.ndjson`` and any other suffix) or per row
(parquet: ``.parquet`` / ``.pq``, read with pyarrow; CSV: ``.csv``, and a directory written by ``datasets``'
``save_to_disk``, both read through ``datasets``, :mod:`llmrl.tasks.hf_data`, ``pip install 'llmrl[hf]'``).
A DatasetDict directory must hold one split, or be given as its split's directory (``pairs/train``).
Columns (names configurable):

``prompt``
    A string with non-whitespace text, or chat messages ``[{"role": ..., "content": ...}, ...]`` (string
    role in :data:`llmrl.tasks.io.ROLES`, string content). Rendered later exactly like RL prompts
    (:func:`llmrl.models.render_prompt`: chat template when the tokenizer has one).
``chosen`` / ``rejected``
    A string (the completion text), or chat messages whose LAST message is the ``assistant`` reply: its
    ``content`` is the completion. Messages before it must equal the prompt's messages (TRL's
    "conversational" layout repeats them); when the prompt column is absent and both completions are
    conversations, the prompt is their common leading messages (TRL's "implicit prompt" layout).
``user_id`` (optional)
    Kept as ``PreferencePair.user_id`` (personalised evaluation); every other column goes to ``meta``
    (``assistant_prefix``, text the completions follow, must be a string).

Errors are :class:`llmrl.tasks.io.DataError` naming ``file:line`` (parquet, CSV, datasets directories:
``path:row N``, 1-based)
and the column, and every record is checked when the file is read. Chosen identical to rejected, or an
empty (whitespace-only) completion, is an error, or, with ``on_error="skip"``, the record is skipped and
counted (a RuntimeWarning gives the counts, and a ``stats`` dict passed by the caller receives them).
Malformed JSON, missing columns, a record that is not an object, and an empty or malformed prompt always
raise. A pair read from a file remembers where (``PreferencePair.origin``, ``"FILE:LINE"``).
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrl.core.errors import ConfigError
from llmrl.core.seed import derive_seed
from llmrl.tasks.io import ROLES, DataError, iter_jsonl, json_type, origin_of, write_jsonl

if TYPE_CHECKING:
    from llmrl.tasks.base import Task

Messages = list[dict[str, str]]
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: ``chosen`` is preferred over ``rejected`` as a reply to ``prompt``."""

    prompt: str | Messages  # plain text, or chat messages [{"role", "content"}, ...]
    chosen: str  # completion text (the assistant message's content when the file gives messages)
    rejected: str
    user_id: str | None = None  # optional `user_id` column (personalised evaluation)
    meta: Mapping[str, Any] = field(default_factory=dict)  # every other column (scores, labels...)
    origin: str | None = field(default=None, compare=False, repr=False)  # "FILE:LINE" when read from a file

    def to_row(self, prompt_key: str = "prompt", chosen_key: str = "chosen",
               rejected_key: str = "rejected") -> dict[str, Any]:
        """The record as written by :func:`write_preference_pairs` (meta columns flattened back)."""
        row: dict[str, Any] = {prompt_key: self.prompt, chosen_key: self.chosen, rejected_key: self.rejected}
        if self.user_id is not None:
            row["user_id"] = self.user_id
        row.update(self.meta)
        return row


def _is_messages(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(m, dict) for m in x)


def _check_messages(msgs: list[Any], where: str, key: str) -> Messages:
    if not msgs:
        raise DataError(f"{where}: column {key!r} is an empty list of messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: column {key!r}, message {i}: expected {{'role': str, 'content': str}}, "
                            f"got {m!r:.80}")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: column {key!r}, message {i} has role {m['role']!r:.40}; expected one of "
                            f"{', '.join(map(repr, ROLES))}")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _completion(value: Any, prompt: str | Messages | None, where: str, key: str) -> str:
    """Completion text of a chosen/rejected value (a string, or a conversation ending in an assistant reply)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise DataError(f"{where}: column {key!r} must be a string or a list of chat messages, "
                        f"got {type(value).__name__}")
    msgs = _check_messages(value, where, key)
    if msgs[-1]["role"] != "assistant":
        raise DataError(f"{where}: column {key!r}: the last message must have role 'assistant', "
                        f"got {msgs[-1]['role']!r}")
    before = msgs[:-1]
    if before and before != (prompt if isinstance(prompt, list) else None):
        raise DataError(f"{where}: column {key!r}: the messages before the assistant reply must equal the prompt "
                        "(or give the completion as a single assistant message)")
    return msgs[-1]["content"]


def _shared_prefix(a: Messages, b: Messages) -> Messages:
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n] == b[n]:
        n += 1
    return a[:n]


def _pair(row: Mapping[str, Any], where: str, keys: tuple[str, str, str]) -> PreferencePair:
    pk, ck, rk = keys
    for k in (ck, rk):
        if k not in row:
            raise DataError(f"{where}: missing column {k!r}; present: {', '.join(map(repr, row)) or 'none'}")
    prompt: Any = row.get(pk)
    if pk not in row:  # implicit prompt: the common leading messages of two conversations
        ch, rj = row[ck], row[rk]
        if not (_is_messages(ch) and _is_messages(rj)):
            raise DataError(f"{where}: missing column {pk!r}; present: {', '.join(map(repr, row))}")
        prompt = _shared_prefix(_check_messages(ch, where, ck), _check_messages(rj, where, rk))
        if not prompt:
            raise DataError(f"{where}: missing column {pk!r} and {ck!r}/{rk!r} share no leading messages")
    elif isinstance(prompt, list):
        prompt = _check_messages(prompt, where, pk)
    elif not isinstance(prompt, str):
        raise DataError(f"{where}: column {pk!r} must be a string or a list of chat messages, "
                        f"got {json_type(prompt)}")
    if not (prompt.strip() if isinstance(prompt, str) else any(m["content"].strip() for m in prompt)):
        raise DataError(f"{where}: column {pk!r}: the prompt is empty (or whitespace only)")
    chosen = _completion(row[ck], prompt, where, ck)
    rejected = _completion(row[rk], prompt, where, rk)
    uid = row.get("user_id")
    meta = {k: v for k, v in row.items() if k not in (pk, ck, rk, "user_id")}
    if not isinstance(meta.get("assistant_prefix", ""), str):
        raise DataError(f"{where}: column 'assistant_prefix' must be a string, got "
                        f"{json_type(meta['assistant_prefix'])}")
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected,
                          user_id=None if uid is None else str(uid), meta=meta, origin=where)


def _problem(pair: PreferencePair, keys: tuple[str, str, str]) -> tuple[str, str] | None:
    """(kind, message) when the pair is unusable, else None."""
    _, ck, rk = keys
    for k, text in ((ck, pair.chosen), (rk, pair.rejected)):
        if not text.strip():
            return "empty", f"column {k!r} is an empty completion"
    if pair.chosen == pair.rejected:
        return "identical", f"columns {ck!r} and {rk!r} are identical (the pair carries no preference)"
    return None


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) for every record of a JSONL, parquet or CSV file or a datasets directory."""
    if path.is_dir() or path.suffix.lower() == ".csv":
        from llmrl.tasks.hf_data import iter_records

        yield from iter_records(path)
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow ships with the dev/trl extras
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError subclasses for corrupt files
            raise DataError(f"{path}: not a readable parquet file: {exc}") from None
        for i, row in enumerate(table.to_pylist(), start=1):
            yield f"{path}:row {i}", row
    else:  # iter_jsonl names file:line for invalid JSON / non-objects, and each row knows its line
        for row in iter_jsonl(path):
            yield origin_of(row) or str(path), row


def read_preference_pairs(path: str | Path, *, prompt_key: str = "prompt", chosen_key: str = "chosen",
                          rejected_key: str = "rejected", on_error: str = "raise",
                          stats: dict[str, int] | None = None) -> list[PreferencePair]:
    """All pairs of a JSONL, parquet or CSV file or a datasets directory (see the module docstring for the
    format and errors).

    ``on_error``: ``"raise"`` (default) or ``"skip"``: skip pairs with identical or empty completions.
    ``stats`` (optional, filled in place): ``read``, ``kept``, ``skipped_identical``, ``skipped_empty``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"preference data file not found: {p}")
    keys = (prompt_key, chosen_key, rejected_key)
    counts = {"read": 0, "kept": 0, "skipped_identical": 0, "skipped_empty": 0}
    out: list[PreferencePair] = []
    for where, row in _rows(p):
        counts["read"] += 1
        pair = _pair(row, where, keys)
        bad = _problem(pair, keys)
        if bad is not None:
            if on_error == "raise":
                raise DataError(f"{where}: {bad[1]}; fix the data or read with on_error='skip'")
            counts[f"skipped_{bad[0]}"] += 1
            continue
        out.append(pair)
    counts["kept"] = len(out)
    if stats is not None:
        stats.update(counts)
    skipped = counts["skipped_identical"] + counts["skipped_empty"]
    if skipped:
        warnings.warn(f"{p}: skipped {skipped} of {counts['read']} pairs ({counts['skipped_identical']} with "
                      f"identical completions, {counts['skipped_empty']} with an empty one)", RuntimeWarning,
                      stacklevel=2)
    return out


def write_preference_pairs(path: str | os.PathLike[str], pairs: Iterable[PreferencePair]) -> int:
    """Write pairs as JSONL (atomic, see :func:`llmrl.tasks.io.write_jsonl`) or, for a ``.parquet`` /
    ``.pq`` path, as parquet. Returns the number of pairs written; reads back with
    :func:`read_preference_pairs`."""
    p = Path(path)
    rows = [pair.to_row() for pair in pairs]
    if p.suffix.lower() not in PARQUET_SUFFIXES:
        return write_jsonl(p, rows)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover
        raise ImportError(f"writing {p} needs pyarrow: pip install pyarrow") from None
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, p)
    return len(rows)


def check_pairs(pairs: Sequence[PreferencePair]) -> None:
    """Raise DataError on the first unusable pair of an in-memory list (same rules as reading a file)."""
    keys = ("prompt", "chosen", "rejected")
    for i, pair in enumerate(pairs):
        bad = _problem(pair, keys)
        if bad is not None:
            raise DataError(f"pair {i}: {bad[1]}")


def task_pairs(task: Task, samples: list[dict[str, Any]], seed: int) -> list[PreferencePair]:
    """chosen = the task's demonstration, rejected = its ``wrong_demonstration`` (pairs whose wrong
    demonstration is in fact correct are skipped)."""
    wrong = getattr(task, "wrong_demonstration", None)
    if wrong is None:
        raise ConfigError(f"rm.source=task: task {task.name!r} has no wrong_demonstration; use rm.source=file or "
                          "distill")
    rng = random.Random(derive_seed(seed, "rm_pairs"))
    out = []
    for s in samples:
        bad = wrong(s, rng)
        good = task.demonstration(s)
        if bad != good and not task.is_correct(bad, s):
            out.append(PreferencePair(prompt=s["prompt"], chosen=good, rejected=bad))
    return out


__all__ = ["PreferencePair", "check_pairs", "read_preference_pairs", "task_pairs", "write_preference_pairs"]
