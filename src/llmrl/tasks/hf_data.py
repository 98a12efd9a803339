"""Samples and pairs from Hugging Face ``datasets`` sources, offline: a directory written by ``save_to_disk``
(a ``Dataset``, or a ``DatasetDict`` whose split is picked by name), or a parquet (``.parquet`` / ``.pq``) or
CSV (``.csv``) file read with ``load_dataset(KIND, data_files=PATH, streaming=True)``.

``datasets`` is imported only here, and only when such a source is read (it takes seconds to import); without
it the read is a one-line ConfigError naming the pip extra (``pip install 'llmrl[hf]'``). Nothing is fetched
from the Hub (local paths only) and nothing is written: a directory is memory-mapped by ``load_from_disk``,
and parquet/CSV files are streamed with a throw-away cache directory, so no copy lands in
``~/.cache/huggingface``.

Rows remember where they came from as ``"PATH:row N"`` (N 1-based, like JSONL lines: row N is ``ds[N - 1]``);
PATH is the split's own directory for a DatasetDict (``data/gsm8k/test``, which ``save_to_disk`` writes as a
``Dataset`` directory of its own). A column mapping (``{llmrl field: column}``) is checked against the
dataset's columns before the first row (``"PATH: no column 'question' (task.columns.prompt); columns: ..."``)
and applied to each row by :func:`llmrl.tasks.io.map_columns` (a null in a mapped column or in the prompt's is
an error naming the column and row; other nulls mean the field is absent). Values arrive as ``datasets``
gives them in Python: strings, numbers, lists, dicts, so a column of chat messages (a list of ``{role,
content}`` structs) is a chat prompt. CSV columns are scalars typed by pandas' inference (an integer column
with an empty cell reads as floats).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmrl.core.errors import ConfigError, DataError
from llmrl.tasks.io import Row, map_columns

EXTRA = "pip install 'llmrl[hf]'"
FILE_KINDS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
"""Suffix -> the ``datasets`` packaged builder that reads it."""


def _one_line(exc: BaseException, width: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


def import_datasets(path: str | os.PathLike[str]) -> Any:
    """The ``datasets`` module, or a ConfigError naming ``path`` and the pip extra that installs it."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"{path}: reading a Hugging Face datasets directory, parquet or CSV file needs the "
                          f"'datasets' package: {EXTRA}") from None
    return datasets


def dataset_splits(path: str | os.PathLike[str]) -> list[str] | None:
    """The split names of a DatasetDict directory (its ``dataset_dict.json``), None for anything else."""
    index = Path(path) / "dataset_dict.json"
    if not index.is_file():
        return None
    try:
        splits = json.loads(index.read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{index}: not a readable DatasetDict index: {_one_line(exc)}") from None
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise DataError(f"{index}: 'splits' must be a list of names, got {splits!r:.80}")
    return splits


def _split_dir(p: Path, split: str | None, split_key: str | None) -> Path:
    """The directory of one ``Dataset``: ``p`` itself, or the split of the DatasetDict at ``p``."""
    splits = dataset_splits(p)
    if splits is not None:
        if split is None:
            if len(splits) != 1:
                raise DataError(f"{p}: a DatasetDict with splits {', '.join(splits)}; point at one split's "
                                f"directory instead (e.g. {p / splits[0]})")
            split = splits[0]
        if split not in splits:
            key = f" ({split_key})" if split_key else ""
            raise DataError(f"{p}: no split {split!r}{key}; splits: {', '.join(splits) or 'none'}")
        p = p / split
    if not (p / "state.json").is_file():
        raise DataError(f"{p}: a directory, but not a Hugging Face datasets directory (no dataset_dict.json or "
                        "state.json: write it with Dataset.save_to_disk / DatasetDict.save_to_disk)")
    return p


@contextmanager
def open_dataset(path: str | os.PathLike[str], split: str | None = "train",
                 split_key: str | None = None) -> Iterator[tuple[Any, str]]:
    """``(dataset, name)`` for a ``save_to_disk`` directory or a parquet / CSV file (module docstring);
    ``name`` is the path messages use (the split's directory for a DatasetDict). ``split`` picks a
    DatasetDict's split (None: its only one), ``split_key`` names that setting in messages. A missing file
    raises FileNotFoundError; anything ``datasets`` cannot read, DataError."""
    p = Path(path)
    if p.is_dir():
        p = _split_dir(p, split, split_key)
        datasets = import_datasets(p)
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as exc:  # corrupt arrow files, a state.json of another version, ...
            raise DataError(f"{p}: not a readable datasets directory: {_one_line(exc)}") from None
        yield ds, str(p)
        return
    kind = FILE_KINDS.get(p.suffix.lower())
    if kind is None:
        raise DataError(f"{p}: not read through datasets (expected a directory or a "
                        f"{', '.join(FILE_KINDS)} file)")
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    datasets = import_datasets(p)
    with tempfile.TemporaryDirectory(prefix="llmrl-datasets-") as cache:
        try:
            ds = datasets.load_dataset(kind, data_files=str(p.resolve()), split="train", streaming=True,
                                       cache_dir=cache)
        except Exception as exc:
            raise DataError(f"{p}: not a readable {kind} file: {_one_line(exc)}") from None
        yield ds, str(p)


def _records(ds: Any, name: str) -> Iterator[dict[str, Any]]:
    """The rows of ``ds`` as dicts; a failure while reading them (a corrupt file) is a DataError."""
    it = iter(ds)
    while True:
        try:
            record = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise DataError(f"{name}: unreadable: {_one_line(exc)}") from None
        yield record


def iter_records(path: str | os.PathLike[str], split: str | None = None,
                 split_key: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("PATH:row N", record)`` for every row of a datasets source (:func:`open_dataset`), as ``datasets``
    gives it (no mapping, nulls kept)."""
    with open_dataset(path, split, split_key) as (ds, name):
        for i, record in enumerate(_records(ds, name), start=1):
            yield f"{name}:row {i}", record


def _check_mapped(names: Sequence[str], columns: Mapping[str, str], name: str, key: str) -> None:
    for field_name, column in columns.items():
        if column not in names:
            raise DataError(f"{name}: no column {column!r} ({key}.{field_name}); columns: "
                            f"{', '.join(names) or 'none'}")


def iter_dataset_rows(path: str | os.PathLike[str], *, split: str | None = "train", split_key: str | None = None,
                      columns: Mapping[str, str] | None = None, columns_key: str = "columns") -> Iterator[Row]:
    """Every row of a datasets source as a :class:`Row` (origin ``"PATH:row N"``), ``columns`` applied
    (:func:`llmrl.tasks.io.map_columns`, ``columnar``); a mapped column the dataset lacks raises DataError
    before any row (``"PATH: no column 'C' (COLUMNS_KEY.FIELD); columns: ..."``)."""
    mapping = dict(columns or {})
    with open_dataset(path, split, split_key) as (ds, name):
        names = ds.column_names  # None for a streamed CSV: known from its first row
        if names is not None:
            _check_mapped(list(names), mapping, name, columns_key)
        for i, record in enumerate(_records(ds, name), start=1):
            if names is None:
                names = list(record)
                _check_mapped(names, mapping, name, columns_key)
            yield map_columns(record, mapping, f"{name}:row {i}", columns_key, columnar=True)


__all__ = ["EXTRA", "FILE_KINDS", "dataset_splits", "import_datasets", "iter_dataset_rows", "iter_records",
           "open_dataset"]
