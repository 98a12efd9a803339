"""JSON Lines files for task samples: one JSON object per line, UTF-8.

Reading skips blank lines and raises :class:`DataError` naming the file, the 1-based line number and
what was wrong (invalid JSON, not an object, missing required keys). Writing is atomic: rows go to a
temporary file in the same directory, which then replaces the target with :func:`os.replace`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmrl.core.errors import DataError


def iter_jsonl(path: str | os.PathLike[str], required: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
    """Yield each non-blank line of ``path`` as a dict, checking that it has the ``required`` keys.

    Raises DataError (``"<path>:<line>: <problem>"``) on undecodable UTF-8, invalid JSON, a value that is
    not a JSON object, or missing required keys. A missing file raises FileNotFoundError.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                ) from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [key for key in required if key not in row]
            if missing:
                raise DataError(
                    f"{path}:{lineno}: missing required key(s) {', '.join(repr(k) for k in missing)}; "
                    f"present: {', '.join(repr(k) for k in row) or 'none'}"
                )
            yield row


def read_jsonl(path: str | os.PathLike[str], required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """All rows of a JSON Lines file (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path, required=required))


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """Write ``rows`` as JSON Lines to ``path`` atomically; return the number of rows written.

    Parent directories are created and the file gets mode 0o644. Values JSON cannot represent (objects
    of other types: TypeError; NaN/inf: ValueError) raise and leave ``path`` untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(dict(row), ensure_ascii=False, allow_nan=False))
                f.write("\n")
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return count
