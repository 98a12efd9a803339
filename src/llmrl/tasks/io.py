"""JSON Lines files for task samples: one JSON object per line, UTF-8.

Reading skips blank lines and raises :class:`DataError` naming the file, the 1-based line number and
what was wrong (invalid JSON, not an object, missing required keys). Each row is a :class:`Row`: a plain
dict to every consumer that also remembers where it came from (``origin``, ``"FILE:LINE"``, an attribute,
never a key). Writing is atomic: rows go to a temporary file in the same directory, which then replaces
the target with :func:`os.replace`.

:func:`iter_sample_rows` reads any source of samples: JSON Lines here (no ``datasets`` import), or, for a
directory or a ``.parquet`` / ``.pq`` / ``.csv`` file, through Hugging Face ``datasets``
(:mod:`llmrl.tasks.hf_data`; rows remember ``"PATH:row N"``, N 1-based). A column mapping (``{field:
column}``, :func:`map_columns`) renames columns to the fields llmrl reads before any check; a mapped row
remembers it (``Row.columns``), so that messages name the column (:func:`key_label`).

:func:`read_samples` reads a file of task samples and checks every row when it is read, before any
training work: the prompt (:func:`prompt_problem`) and the fields the task declares
(:meth:`llmrl.tasks.base.Task.sample_fields`, checked by :func:`sample_problem`). Its errors are one line,
``"FILE:LINE: what is wrong (key 'NAME')"``.
"""

from __future__ import annotations

import json
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmrl.core.errors import ConfigError, DataError

ROLES = ("system", "user", "assistant", "tool")
"""Chat-message roles a prompt may use: those every common chat template renders (Qwen2's silently drops
other roles, Mistral's raises on them)."""

FieldsFn = Callable[[Mapping[str, Any]], tuple[Mapping[str, Any], Mapping[str, Any]]]
"""``row -> (required fields, optional fields)``, each ``name -> type spec`` (see :func:`conforms`)."""


class Row(dict[str, Any]):
    """A JSON object read from a file: a plain dict to every consumer, plus ``origin`` (``"FILE:LINE"``),
    where it came from. ``origin`` is an attribute, not a key, so it never reaches prompts, JSON output,
    hashes or checkpoints; ``dict(row)`` drops it. ``columns``: the column mapping (``{field: column}``) the
    row was read with, if any, so that messages name the dataset's column (:func:`key_label`)."""

    __slots__ = ("columns", "origin")

    def __init__(self, data: Mapping[str, Any] | None = None, origin: str | None = None,
                 columns: Mapping[str, str] | None = None) -> None:
        super().__init__(data or {})
        self.origin = origin
        self.columns = dict(columns) if columns else None


def origin_of(obj: Any) -> str | None:
    """``"FILE:LINE"`` of a row read by :func:`iter_jsonl` (or anything with an ``origin``), else None."""
    origin = getattr(obj, "origin", None)
    return origin if isinstance(origin, str) else None


def key_label(row: Any, name: str) -> str:
    """How messages name field ``name`` of ``row``: ``column 'question', mapped to 'prompt'`` when the row was
    read with a column mapping that renames it (:attr:`Row.columns`), else ``key 'prompt'``."""
    columns = getattr(row, "columns", None)
    column = columns.get(name) if isinstance(columns, dict) else None
    return f"column {column!r}, mapped to {name!r}" if column is not None and column != name else f"key {name!r}"


def check_columns(columns: Mapping[str, Any] | None, key: str = "columns") -> dict[str, str]:
    """A column mapping ``{llmrl field: dataset column}`` checked: both non-empty strings (ConfigError naming
    ``KEY.FIELD`` otherwise). None or empty: no mapping."""
    out: dict[str, str] = {}
    for field_name, column in (columns or {}).items():
        if not isinstance(field_name, str) or not field_name:
            raise ConfigError(f"{key}: field names must be non-empty strings, got {field_name!r}")
        if not isinstance(column, str) or not column:
            raise ConfigError(f"{key}.{field_name}: expected a column name (a non-empty string), got {column!r}")
        out[field_name] = column
    return out


def map_columns(record: Mapping[str, Any], columns: Mapping[str, str], where: str, key: str = "columns", *,
                columnar: bool = False, prompt_field: str = "prompt") -> Row:
    """``record`` with its columns renamed to llmrl fields: field ``F`` of the result is column
    ``columns[F]``; mapped columns are dropped under their own name and a column named like a mapped field is
    replaced; the other columns stay. A mapped column the record lacks raises DataError ``"WHERE: no column
    'C' (KEY.F); present: ..."``. ``columnar`` (a table, where an absent value is a null): a null in a mapped
    column or in the prompt's is an error naming the column, other nulls are dropped (the field is absent),
    and keys whose value is null are dropped from chat messages."""
    for field_name, column in columns.items():
        if column not in record:
            raise DataError(f"{where}: no column {column!r} ({key}.{field_name}); present: "
                            f"{', '.join(map(repr, record)) or 'none'}")
    out: dict[str, Any] = {field_name: record[column] for field_name, column in columns.items()}
    mapped = set(columns.values())
    out.update((k, v) for k, v in record.items() if k not in mapped and k not in columns)
    if columnar:
        for field_name in {*columns, prompt_field}:
            if field_name in out and out[field_name] is None:
                column = columns.get(field_name, field_name)
                how = f" (mapped to {field_name!r})" if column != field_name else ""
                raise DataError(f"{where}: column {column!r}{how} is null")
        out = {k: v for k, v in out.items() if v is not None}
        prompt = out.get(prompt_field)
        if isinstance(prompt, list):
            out[prompt_field] = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m
                                 for m in prompt]
    return Row(out, where, columns=columns)


DATASET_SUFFIXES = (".parquet", ".pq", ".csv")
"""File suffixes read through Hugging Face ``datasets`` (:mod:`llmrl.tasks.hf_data`); a directory is read as
one written by ``save_to_disk``. Anything else is JSON Lines."""


def is_dataset_source(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is read through ``datasets``: a directory, or a parquet / CSV file (by suffix)."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in DATASET_SUFFIXES


def iter_jsonl(path: str | os.PathLike[str], required: Sequence[str] = ()) -> Iterator[Row]:
    """Yield each non-blank line of ``path`` as a :class:`Row` (a dict whose ``origin`` is ``"PATH:LINE"``),
    checking that it has the ``required`` keys.

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
            yield Row(row, f"{path}:{lineno}")


def read_jsonl(path: str | os.PathLike[str], required: Sequence[str] = ()) -> list[Row]:
    """All rows of a JSON Lines file (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path, required=required))


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages: null, a boolean, a number, a string, a list, an object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def conforms(value: Any, spec: Any) -> bool:
    """Whether a JSON ``value`` has the type ``spec``: a class (``int`` and ``float`` never accept a boolean;
    ``float`` accepts any number), ``None``, ``Any``, a union (``str | None``), ``list[X]``, ``dict[K, V]`` or
    ``Literal[...]`` (one of the values)."""
    origin = typing.get_origin(spec)
    args = typing.get_args(spec)
    if spec is Any:
        return True
    if spec is None or spec is type(None):
        return value is None
    if origin in (types.UnionType, typing.Union):
        return any(conforms(value, s) for s in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is list:
        return isinstance(value, list) and (not args or all(conforms(x, args[0]) for x in value))
    if origin is dict:
        return isinstance(value, dict) and (not args or all(conforms(k, args[0]) and conforms(v, args[1])
                                                            for k, v in value.items()))
    if spec is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if spec is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, spec)


def describe(spec: Any) -> str:
    """``spec`` (see :func:`conforms`) as a message fragment: ``str | int``, ``list[int]``, ``one of 'a', 'b'``."""
    origin = typing.get_origin(spec)
    if spec is None or spec is type(None):
        return "null"
    if origin in (types.UnionType, typing.Union):
        return " | ".join(describe(s) for s in typing.get_args(spec))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(spec))
    if origin is not None:
        return str(spec).replace("typing.", "")
    return getattr(spec, "__name__", str(spec))


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def message_problem(message: Any, index: int) -> str | None:
    """What is wrong with chat message ``index`` of a prompt, or None: it must be an object with a string
    ``role`` in :data:`ROLES` and a string ``content``."""
    if not isinstance(message, Mapping):
        return f"message {index} must be an object with 'role' and 'content', got {json_type(message)}"
    if "role" not in message:
        return f"message {index} has no 'role'"
    role = message["role"]
    if not isinstance(role, str):
        return f"message {index}: 'role' must be a string, got {json_type(role)}"
    if role not in ROLES:
        return f"message {index} has role {_short(role)}; expected one of {', '.join(map(repr, ROLES))}"
    if "content" not in message:
        return f"message {index} (role {role!r}) has no 'content'"
    if not isinstance(message["content"], str):
        return f"message {index} (role {role!r}): 'content' must be a string, got {json_type(message['content'])}"
    return None


def prompt_problem(prompt: Any) -> str | None:
    """What is wrong with a sample's prompt, or None: it must be a string with non-whitespace text, or a
    non-empty list of chat messages (:func:`message_problem`) with non-whitespace text in some ``content``."""
    if isinstance(prompt, str):
        return None if prompt.strip() else ("the prompt is empty" if not prompt else "the prompt is whitespace only")
    if isinstance(prompt, list):
        if not prompt:
            return "the prompt is an empty list of messages"
        for i, m in enumerate(prompt):
            problem = message_problem(m, i)
            if problem is not None:
                return problem
        if not any(m["content"].strip() for m in prompt):
            return "every message of the prompt has empty (or whitespace-only) content"
        return None
    return f"the prompt must be a string or a list of chat messages, got {json_type(prompt)}"


SAMPLE_FIELDS: dict[str, Any] = {"task": str, "assistant_prefix": str, "ref_rewards": list[float]}
"""Optional fields any sample may carry, with their types (checked when present): the task name, text the
completion is sampled after (:func:`llmrl.models.render_prompt` appends it), reference rewards
(:func:`llmrl.rewards.shaping.attach_reference_rewards`)."""


def sample_problem(sample: Mapping[str, Any], required: Mapping[str, Any] = {},  # noqa: B006 - read only
                   optional: Mapping[str, Any] = {}, *, prompt_field: str = "prompt",  # noqa: B006
                   needed_by: str = "") -> str | None:
    """What is wrong with one sample, or None, as ``"what is wrong (key 'NAME')"`` (``(column 'C', mapped to
    'NAME')`` for a row read with a column mapping: :func:`key_label`): its prompt (:func:`prompt_problem`), the
    ``required`` fields (present, of their type: :func:`conforms`), the ``optional`` ones and
    :data:`SAMPLE_FIELDS` (of their type when present). ``needed_by`` (e.g. ``task 'countdown'``) says in the
    message who needs a missing field."""
    if prompt_field not in sample:
        return (f"missing the prompt; present: {', '.join(map(repr, sample)) or 'none'} "
                f"({key_label(sample, prompt_field)})")
    problem = prompt_problem(sample[prompt_field])
    if problem is not None:
        return f"{problem} ({key_label(sample, prompt_field)})"
    for name in required:
        if name not in sample:
            who = f" (needed by {needed_by})" if needed_by else ""
            return f"missing{who}; present: {', '.join(map(repr, sample))} ({key_label(sample, name)})"
    checks = {**SAMPLE_FIELDS, **optional, **required}
    for name, spec in checks.items():
        if name in sample and not conforms(sample[name], spec):
            value = sample[name]
            got = json_type(value) if value is None else f"{json_type(value)} {_short(value)}"
            return f"expected {describe(spec)}, got {got} ({key_label(sample, name)})"
    return None


def iter_sample_rows(path: str | os.PathLike[str], *, columns: Mapping[str, str] | None = None,
                     split: str | None = "train", columns_key: str = "columns",
                     split_key: str | None = None) -> Iterator[Row]:
    """The rows of a source of samples, each a :class:`Row`, ``columns`` (``{field: column}``,
    :func:`map_columns`) applied: JSON Lines (:func:`iter_jsonl`, origin ``"PATH:LINE"``; no ``datasets``
    import), or, when :func:`is_dataset_source`, a ``save_to_disk`` directory or a parquet / CSV file read
    through ``datasets`` (:func:`llmrl.tasks.hf_data.iter_dataset_rows`: ``split`` picks the split of a
    DatasetDict directory, ``split_key`` names its config key in messages; origin ``"PATH:row N"``).
    ``columns_key`` is the mapping's config key, for messages (``task.columns``)."""
    mapping = check_columns(columns, columns_key)
    if is_dataset_source(path):
        from llmrl.tasks.hf_data import iter_dataset_rows

        yield from iter_dataset_rows(path, split=split, split_key=split_key, columns=mapping,
                                     columns_key=columns_key)
        return
    for row in iter_jsonl(path):
        yield map_columns(row, mapping, row.origin or str(path), columns_key) if mapping else row


def read_samples(path: str | os.PathLike[str], fields: FieldsFn | None = None, *,
                 needed_by: str = "", columns: Mapping[str, str] | None = None, split: str | None = "train",
                 columns_key: str = "columns", split_key: str | None = None) -> list[Row]:
    """Every row of a source of samples (:func:`iter_sample_rows`: JSON Lines, a ``datasets`` directory, parquet
    or CSV; ``columns`` renamed first), each checked as it is read (:func:`sample_problem`, with the
    ``(required, optional)`` fields ``fields(row)`` gives; None: none beyond the prompt). The first bad row
    raises DataError ``"PATH:LINE: what is wrong (key 'NAME')"`` (``PATH:row N`` for a dataset, ``column 'C',
    mapped to 'NAME'`` for a mapped field); nothing is read lazily."""
    rows = []
    for row in iter_sample_rows(path, columns=columns, split=split, columns_key=columns_key, split_key=split_key):
        required, optional = fields(row) if fields is not None else ({}, {})
        problem = sample_problem(row, required, optional, needed_by=needed_by)
        if problem is not None:
            raise DataError(f"{row.origin}: {problem}")
        rows.append(row)
    return rows


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
