r"""The bounded-memory parts of ``llmrl data curate``: deduplication spilled to disk, parquet in batches.

:class:`SpilledDedup` finds the same exact and near duplicates as :func:`llmrl.data.curate.curate_records`
(``seen`` set + :class:`~llmrl.data.dedup.NearDuplicateIndex`, first occurrence wins) without holding the
rows, their shingle sets or the LSH buckets in memory. The rows that pass the filters are handed to
:meth:`SpilledDedup.add` in input order; it appends their :func:`~llmrl.data.dedup.near_form` and gold
:func:`~llmrl.data.dedup.answer_key` to a file in a temporary directory and keeps 24 bytes per row in
memory (file offset, input line, a 64-bit hash of the exact key). :meth:`SpilledDedup.run` then makes passes:

1. exact: the key hashes are sorted; rows whose hash occurs more than once have their keys read back and
   compared exactly (a hash collision never merges two different questions), in input order.
2. signatures: the other rows are read back in input order ``batch_rows`` at a time; their shingle ids
   (:func:`~llmrl.data.dedup.shingle_arrays`, written to ``ids.bin``) and MinHash signatures
   (:meth:`~llmrl.data.dedup.NearDuplicateIndex.signatures`) are computed in batches, and each LSH bucket key
   (answer/numbers group + the band's values) is reduced to a 64-bit hash, written band by band.
3. buckets: per band, the hashes are sorted (``M`` × 8 bytes in memory at a time for ``M`` rows); hashes held
   by one row only can never make a candidate and are dropped, the others become bucket ids, written as
   ``(row, bucket)`` pairs sorted by row.
4. resolve: the rows are walked in input order, merging the bands' pair files. A row in no shared bucket is
   kept without any comparison. Otherwise its candidates are the kept rows in its buckets (bucket → first
   kept row in a numpy array, further kept rows in a dict); in ascending order, the first candidate with
   exact Jaccard ≥ threshold (ids read back from ``ids.bin``) whose signature and group really share a
   bucket key (recomputed from the stored ids, so a hash collision cannot add a candidate) is the row's
   near duplicate; else the row is kept and entered in its buckets.

This is the in-memory algorithm's result, row for row (``tests/test_curate_streaming.py`` checks it, also
with the hashes cut to a few bits so that collisions happen all the time). Memory: about 60 bytes per row
that reaches deduplication, 8 bytes per shared bucket and kept row in it (few on ordinary data; with
``text_only`` on templated data up to ``bands`` per kept row) and one batch's arrays; disk, per such row: its
question's text once, 4 bytes per shingle and 8 bytes per band (~1 KB for Big-Math-like rows: 64 MiB for a
51 MiB input in ``benchmarks/curate_memory.py``'s data).

:func:`iter_parquet_rows` reads parquet a batch at a time with the values ``pandas.read_parquet`` would give
for the whole file; :func:`write_parquet_rows` writes rows to parquet a batch at a time with the column
types ``pandas.DataFrame(rows).to_parquet`` would infer. :class:`DiskStrings` is a list of strings on disk,
:class:`AtomicLines` a JSONL file written atomically, row by row.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, overload

import numpy as np

from llmrl.data.dedup import NearDuplicateIndex, answer_key, near_form, shingle_arrays

HASH_BITS = 64  # bits kept of the exact-key and bucket-key hashes (tests lower it to force collisions)
PAIR = np.dtype([("m", "<i8"), ("b", "<i8")])  # (row, bucket id) of a row in a shared bucket
_U64 = np.uint64
_SALT = np.uint64(0x9E3779B97F4A7C15)


def _mask() -> np.uint64:
    return _U64((1 << HASH_BITS) - 1)


def hash64(data: bytes) -> int:
    """A 64-bit hash of ``data`` (cut to :data:`HASH_BITS`)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & ((1 << HASH_BITS) - 1)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place (uint64 arithmetic wraps)."""
    h ^= h >> _U64(30)
    h *= _U64(0xBF58476D1CE4E5B9)
    h ^= h >> _U64(27)
    h *= _U64(0x94D049BB133111EB)
    h ^= h >> _U64(31)
    return h


def band_hashes(sigs: np.ndarray, groups: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[n, bands] 64-bit hashes of the LSH bucket keys (group hash + the band's ``rows`` signature values)."""
    h = groups.astype(_U64)[:, None] ^ (np.arange(1, bands + 1, dtype=_U64) * _SALT)[None, :]
    values = sigs.reshape(len(sigs), bands, rows)
    for k in range(rows):
        h = _mix(h ^ values[:, :, k])
    return h & _mask()


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # JSON allows lone surrogates; this keeps them, reversibly


@dataclass
class DedupResult:
    """Per row given to :meth:`SpilledDedup.add` (``F`` rows): exact duplicate or not; per row after exact
    dedup (``M`` rows, ``m_to_f`` maps them back): the index of its kept near duplicate (-1: kept) and the
    Jaccard with it."""

    lines: array  # input line of each of the F rows
    exact: np.ndarray  # [F] bool
    m_to_f: np.ndarray | None  # [M] int64, None without near dedup
    dup_of: np.ndarray | None  # [M] int64
    sim: np.ndarray | None  # [M] float64

    @property
    def exact_count(self) -> int:
        return int(self.exact.sum())

    @property
    def near_count(self) -> int:
        return 0 if self.dup_of is None else int((self.dup_of >= 0).sum())

    def fates(self) -> Iterator[tuple[str | None, dict[str, Any]]]:
        """Per F row in order: (``"exact_duplicate"``/``"near_duplicate"`` with its extra fields, or None)."""
        m, chunk = 0, 1 << 16
        exact, dup_of, sim = self.exact, self.dup_of, self.sim
        for f0 in range(0, len(exact), chunk):
            flags = exact[f0 : f0 + chunk].tolist()
            n = len(flags) - sum(flags)
            dups = dup_of[m : m + n].tolist() if dup_of is not None else [-1] * n
            sims = sim[m : m + n].tolist() if sim is not None else [0.0] * n
            m += n
            k = 0
            for is_exact in flags:
                if is_exact:
                    yield "exact_duplicate", {}
                    continue
                j, k = dups[k], k + 1
                if j >= 0:
                    assert self.m_to_f is not None
                    yield "near_duplicate", {"duplicate_of_line": self.lines[int(self.m_to_f[j])],
                                             "jaccard": round(sims[k - 1], 4)}
                else:
                    yield None, {}


class _Cursor:
    """Reads one band's (row, bucket) pairs, sorted by row, a block at a time."""

    def __init__(self, fd: int, start: int, count: int, block: int) -> None:
        self.fd, self.pos, self.left, self.block = fd, start, count, block
        self.buf = np.zeros(0, dtype=PAIR)

    def take(self, end: int) -> np.ndarray:
        """The pairs of the rows below ``end`` not taken yet."""
        parts = []
        while True:
            if not len(self.buf):
                if not self.left:
                    break
                k = min(self.block, self.left)
                self.buf = np.frombuffer(os.pread(self.fd, k * PAIR.itemsize, self.pos), dtype=PAIR)
                self.pos, self.left = self.pos + k * PAIR.itemsize, self.left - k
            n = int(np.searchsorted(self.buf["m"], end))
            parts.append(self.buf[:n])
            self.buf = self.buf[n:]
            if len(self.buf):
                break
        return np.concatenate(parts) if parts else self.buf[:0]


class SpilledDedup:
    """Exact and near deduplication of a stream of rows with the data on disk (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str], *, exact: bool, index: NearDuplicateIndex | None,
                 batch_rows: int = 8192) -> None:
        self.dir = Path(directory)
        self.exact, self.index, self.batch_rows = exact, index, max(1, batch_rows)
        self._path = self.dir / "rows.bin"
        self._file = open(self._path, "wb", buffering=1 << 18)  # noqa: SIM115 - closed by run()
        self._offsets = array("q", [0])
        self._hashes = array("Q")
        self.lines = array("q")
        self._answers = index is not None and not index.text_only

    def __len__(self) -> int:
        return len(self.lines)

    def add(self, line: int, question: str, answer: str) -> None:
        """Queue a row that passed the filters (in input order)."""
        self.lines.append(line)
        if not self.exact and self.index is None:
            return
        form = _encode(near_form(question))
        if self.exact:  # normalize_text(question) == near_form(question) without its spaces
            self._hashes.append(hash64(form.replace(b" ", b"")))
        gold = _encode(answer_key(answer)) if self._answers else b""
        self._file.write(len(form).to_bytes(4, "little") + form + gold)
        self._offsets.append(self._offsets[-1] + 4 + len(form) + len(gold))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def run(self) -> DedupResult:
        """Both dedup steps over the queued rows (call once, after the last :meth:`add`)."""
        self.close()
        n = len(self.lines)
        offsets = np.frombuffer(self._offsets, dtype=np.int64)
        exact = np.zeros(n, dtype=bool)
        with open(self._path, "rb") as f:
            fd = f.fileno()
            if self.exact and n:
                self._exact(fd, offsets, exact)
            self._hashes = array("Q")
            if self.index is None:
                return DedupResult(self.lines, exact, None, None, None)
            m_to_f = np.flatnonzero(~exact)
            ids_offsets = self._signatures(fd, offsets, m_to_f)
            segments, n_buckets = self._buckets(len(m_to_f))
            dup_of, sim = self._resolve(fd, offsets, m_to_f, ids_offsets, segments, n_buckets)
        return DedupResult(self.lines, exact, m_to_f, dup_of, sim)

    # -- passes ---------------------------------------------------------------------------------------------
    @staticmethod
    def _record(blob: bytes, start: int, end: int) -> tuple[str, str]:
        k = int.from_bytes(blob[start : start + 4], "little")
        form = blob[start + 4 : start + 4 + k].decode("utf-8", "surrogatepass")
        return form, blob[start + 4 + k : end].decode("utf-8", "surrogatepass")

    def _read(self, fd: int, offsets: np.ndarray, f: int) -> tuple[str, str]:
        start = int(offsets[f])
        return self._record(os.pread(fd, int(offsets[f + 1]) - start, start), 0, int(offsets[f + 1]) - start)

    def _exact(self, fd: int, offsets: np.ndarray, exact: np.ndarray) -> None:
        hashes = np.frombuffer(self._hashes, dtype=np.uint64)
        order = np.argsort(hashes, kind="stable")  # equal hashes: ascending row
        ordered = hashes[order]
        cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        starts, ends = np.r_[0, cuts], np.r_[cuts, len(ordered)]
        shared = ends - starts > 1
        for s, e in zip(starts[shared].tolist(), ends[shared].tolist()):
            seen: set[str] = set()
            for f in sorted(order[s:e].tolist()):
                key = self._read(fd, offsets, f)[0].replace(" ", "")
                if key in seen:
                    exact[f] = True
                else:
                    seen.add(key)

    def _signatures(self, fd: int, offsets: np.ndarray, m_to_f: np.ndarray) -> np.ndarray:
        index = self.index
        assert index is not None
        total = len(m_to_f)
        ids_offsets = np.zeros(total + 1, dtype=np.int64)
        with open(self.dir / "bands.bin", "wb") as bands_file, open(self.dir / "ids.bin", "wb") as ids_file:
            for m0 in range(0, total, self.batch_rows):
                fs = m_to_f[m0 : m0 + self.batch_rows]
                lo, hi = int(offsets[fs[0]]), int(offsets[fs[-1] + 1])
                blob = os.pread(fd, hi - lo, lo)
                forms, groups = [], []
                for f in fs.tolist():
                    form, gold = self._record(blob, int(offsets[f]) - lo, int(offsets[f + 1]) - lo)
                    forms.append(form)
                    groups.append(hash64(index.group(form, gold)))
                ids, offs = shingle_arrays(forms, index.shingle_size)
                hashes = band_hashes(index.signatures(ids, offs), np.asarray(groups, dtype=_U64),
                                     index.bands, index.rows)
                for b in range(index.bands):  # band b's hashes of all rows are contiguous
                    bands_file.seek((b * total + m0) * 8)
                    bands_file.write(np.ascontiguousarray(hashes[:, b]).tobytes())
                ids_file.write(ids.tobytes())
                ids_offsets[m0 + 1 : m0 + 1 + len(fs)] = ids_offsets[m0] + offs[1:]
        return ids_offsets

    def _buckets(self, total: int) -> tuple[list[tuple[int, int]], int]:
        index = self.index
        assert index is not None
        segments, n_buckets = [], 0
        with open(self.dir / "pairs.bin", "wb") as out:
            for b in range(index.bands):
                h = np.fromfile(self.dir / "bands.bin", dtype=np.uint64, count=total, offset=b * total * 8)
                order = np.argsort(h, kind="stable")
                h = h[order]
                same = h[1:] == h[:-1]
                shared = np.zeros(total, dtype=bool)
                shared[1:] = same
                shared[:-1] |= same
                members, h = order[shared], h[shared]
                del order, same, shared
                new = np.ones(len(h), dtype=bool)
                new[1:] = h[1:] != h[:-1]
                bucket = np.cumsum(new) - 1 + n_buckets
                n_buckets += int(new.sum())
                by_row = np.argsort(members, kind="stable")
                pairs = np.empty(len(members), dtype=PAIR)
                pairs["m"], pairs["b"] = members[by_row], bucket[by_row]
                segments.append((out.tell(), len(pairs)))
                out.write(pairs.tobytes())
        return segments, n_buckets

    def _resolve(self, fd: int, offsets: np.ndarray, m_to_f: np.ndarray, ids_offsets: np.ndarray,
                 segments: list[tuple[int, int]], n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.index
        assert index is not None
        total = len(m_to_f)
        dup_of = np.full(total, -1, dtype=np.int64)
        sim = np.zeros(total, dtype=np.float64)
        first = np.full(n_buckets, -1, dtype=np.int64)  # first kept row of each shared bucket
        more: dict[int, list[int]] = {}  # the bucket's further kept rows
        ids_fd = os.open(self.dir / "ids.bin", os.O_RDONLY)
        pairs_fd = os.open(self.dir / "pairs.bin", os.O_RDONLY)

        @lru_cache(maxsize=1 << 14)
        def ids_of(m: int) -> np.ndarray:
            a, b = int(ids_offsets[m]), int(ids_offsets[m + 1])
            return np.frombuffer(os.pread(ids_fd, (b - a) * 4, a * 4), dtype=np.uint32)

        @lru_cache(maxsize=1 << 12)
        def key_of(m: int) -> tuple[bytes, np.ndarray]:
            form, gold = self._read(fd, offsets, int(m_to_f[m]))
            return index.group(form, gold), index.signature(ids_of(m))

        try:
            cursors = [_Cursor(pairs_fd, start, count, 2 * self.batch_rows) for start, count in segments]
            for m0 in range(0, total, self.batch_rows):
                pairs = np.concatenate([c.take(m0 + self.batch_rows) for c in cursors])
                order = np.argsort(pairs["m"], kind="stable")
                rows, buckets = pairs["m"][order], pairs["b"][order]
                cuts = np.flatnonzero(rows[1:] != rows[:-1]) + 1
                for s, e in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(rows)].tolist()):
                    if s == e:
                        continue
                    m, own = int(rows[s]), buckets[s:e]
                    kept = first[own]
                    candidates = set(kept[kept >= 0].tolist())
                    for b in own.tolist():
                        candidates.update(more.get(b, ()))
                    hit = -1
                    if candidates:
                        x = ids_of(m)
                        for j in sorted(candidates):
                            y = ids_of(j)
                            inter = len(np.intersect1d(x, y, assume_unique=True))
                            s_ij = inter / (len(x) + len(y) - inter)
                            if s_ij >= index.threshold and index.shares_band(*key_of(m), *key_of(j)):
                                hit, sim[m] = j, s_ij
                                break
                    if hit >= 0:
                        dup_of[m] = hit
                        continue
                    free = kept < 0
                    first[own[free]] = m
                    for b in own[~free].tolist():
                        more.setdefault(b, []).append(m)
        finally:
            os.close(ids_fd)
            os.close(pairs_fd)
        return dup_of, sim


# -- files ----------------------------------------------------------------------------------------------------
class AtomicLines:
    """A JSONL file written as :func:`llmrl.tasks.io.write_jsonl` does (temporary file, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row, ensure_ascii=False, allow_nan=False))
        self.file.write("\n")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        Path(self.tmp).unlink(missing_ok=True)


# -- strings on disk ----------------------------------------------------------------------------------------
class DiskStrings(Sequence[str]):
    """An append-only list of strings kept in a file (for :func:`llmrl.data.solvability.solve_counts`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = open(self.path, "wb", buffering=1 << 18)  # noqa: SIM115 - closed by close()
        self._offsets = array("q", [0])
        self._fd: int | None = None

    def append(self, text: str) -> None:
        data = _encode(text)
        self._file.write(data)
        self._offsets.append(self._offsets[-1] + len(data))

    def close(self) -> None:
        """Finish writing (reading is possible after this)."""
        if not self._file.closed:
            self._file.close()
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)

    def release(self) -> None:
        self.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = -1

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if self._fd is None:
            self.close()
        assert self._fd is not None and self._fd >= 0, "released"
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[k] for k in range(start, stop, step)]
            if start >= stop:
                return []
            base = self._offsets[start]
            blob = os.pread(self._fd, self._offsets[stop] - base, base)
            return [blob[self._offsets[k] - base : self._offsets[k + 1] - base].decode("utf-8", "surrogatepass")
                    for k in range(start, stop)]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self[i % len(self) : i % len(self) + 1][0]


# -- parquet in batches -------------------------------------------------------------------------------------
_FRAME_CHUNK = 131072  # rows per chunk of the table pandas.read_parquet converts (the dataset scanner's batch)


def _to_pandas(table: Any) -> Any:
    try:  # what pandas.read_parquet calls; private, so fall back to pyarrow's own conversion
        from pandas.io._util import arrow_table_to_pandas
    except ImportError:  # pragma: no cover - depends on the pandas version
        return table.to_pandas()
    return arrow_table_to_pandas(table)


def _parquet_casts(pf: Any) -> tuple[dict[str, Any], bool]:
    """Columns to cast to float64 (integers, or lists of them, with a null anywhere in the file: pandas
    turns the whole column to float64) and whether every column is flat (a primitive or lists of one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    meta = pf.schema_arrow.pandas_metadata or {}
    extension = set()
    for col in meta.get("columns", []):  # pandas extension dtypes (Int64...) convert without floats
        try:
            np.dtype(col.get("numpy_type", "object"))
        except TypeError:
            extension.add(col.get("name"))
    casts, flat = {}, True
    for field in pf.schema_arrow:
        t, depth = field.type, 0
        while pa.types.is_list(t) or pa.types.is_large_list(t):
            t, depth = t.value_type, depth + 1
        if pa.types.is_nested(t) or pa.types.is_dictionary(t) or pa.types.is_fixed_size_list(t):
            flat = False
        if not pa.types.is_integer(t) or field.name in extension:
            continue
        nulls = 0
        for rg in range(pf.num_row_groups):
            col = pf.read_row_group(rg, columns=[field.name]).column(0)
            for _ in range(depth):
                col = pc.list_flatten(col)
            nulls += col.null_count
            if nulls:
                break
        if nulls:
            target: Any = pa.float64()
            inner = field.type
            types = []
            for _ in range(depth):
                types.append(inner)
                inner = inner.value_type
            for outer in reversed(types):
                target = pa.large_list(target) if pa.types.is_large_list(outer) else pa.list_(target)
            casts[field.name] = target
    return casts, flat


def iter_parquet_rows(path: str | os.PathLike[str], batch_rows: int = 8192) -> Iterator[dict[Any, Any]]:
    """The rows of ``pandas.read_parquet(path).to_dict("records")``, converted ``batch_rows`` rows at a time
    (files with struct/map columns: 131,072, the chunks pandas converts, as their conversion depends on them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    casts, flat = _parquet_casts(pf)
    size = max(1, batch_rows) if flat else _FRAME_CHUNK
    for rg in range(pf.num_row_groups):
        for batch in pf.iter_batches(batch_size=size, row_groups=[rg], use_pandas_metadata=True):
            table = pa.Table.from_batches([batch])
            for name, target in casts.items():
                i = table.schema.get_field_index(name)
                if i >= 0:
                    table = table.set_column(i, pa.field(name, target), table.column(i).cast(target, safe=False))
            yield from _to_pandas(table).to_dict("records")


def _jsonl_batches(path: Path, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            batch.append(json.loads(line))
            if len(batch) >= batch_rows:
                yield batch
                batch = []
    if batch:
        yield batch


def write_parquet_rows(rows_jsonl: str | os.PathLike[str], out: str | os.PathLike[str], batch_rows: int) -> None:
    """Write the rows of a JSONL file to parquet as ``pandas.DataFrame(rows).to_parquet(out, index=False)``
    does; more than ``batch_rows`` rows are converted a batch at a time, each column typed as pandas + pyarrow
    type it in the batches (ints and floats: float64; nulls: the other batches' type) and without the pandas
    schema metadata (only an index would need it). Raises what pandas/pyarrow raise for unwritable values."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, batch_rows = Path(rows_jsonl), max(1, batch_rows)
    batches = _jsonl_batches(src, batch_rows)
    first = next(batches, [])
    second = next(batches, None)
    if second is None:  # one batch: exactly the in-memory way
        pd.DataFrame(first).to_parquet(out, index=False)
        return
    types: dict[str, list[Any]] = {}
    empty: dict[str, list[Any]] = {}
    for batch in _jsonl_batches(src, batch_rows):
        table = pa.Table.from_pandas(pd.DataFrame(batch), preserve_index=False)
        for name, column in zip(table.column_names, table.columns):
            (types if column.null_count < len(column) else empty).setdefault(name, []).append(column.type)
            types.setdefault(name, [])
    fields = []
    for name, seen in types.items():
        candidates = seen or empty.get(name, [pa.null()])
        unified = pa.unify_schemas([pa.schema([pa.field(name, t)]) for t in candidates], promote_options="permissive")
        fields.append(unified.field(0))
    schema = pa.schema(fields)
    with pq.ParquetWriter(out, schema) as writer:
        for batch in _jsonl_batches(src, batch_rows):
            frame = pd.DataFrame(batch)
            for name in schema.names:
                if name not in frame.columns:
                    frame[name] = None
            writer.write_table(pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False))
