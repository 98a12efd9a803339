r"""Exact and near-duplicate detection for math problems (Big-Math, arXiv:2502.17387), offline and seeded.

Exact duplicates: two questions are the same when their :func:`normalize_text` forms are equal, i.e. after
lower-casing, dropping math delimiters (``$``, ``\(``, ``\[``), LaTeX spacing (``\,`` ``\;`` ``\!`` ``\quad``
``~``) and sizing (``\left``, ``\right``, ``\displaystyle``), mapping ``\dfrac``/``\tfrac`` to ``\frac``,
removing sentence punctuation (``. , ; : ! ?`` and quotes; a ``.`` before a digit and a ``,`` between two
digits are kept, so ``2.5`` and ``.5`` are not ``25`` and ``5``) and then all whitespace. The first occurrence is kept.

Near duplicates (:class:`NearDuplicateIndex`): each question becomes the set of its character
``shingle_size``-grams (default 5) of :func:`near_form` (the normalised text with single spaces between
words and none next to symbols, so ``x^2 - 5x`` and ``x^2-5x`` agree). Two questions are near duplicates
when the Jaccard similarity of these sets is at least ``threshold`` (default 0.7). Measured on one-sentence
problems: a reworded clause or an added word scores 0.6-0.85 (``Let $f(x)=3x+2$. Compute ...`` vs ``If
$f(x)=3x+2$, compute ...``: 0.81), one changed number in a template ~0.8, unrelated problems below 0.1.
Candidates come from MinHash signatures (``num_perm`` = 128 universal hashes ``(a x + b) mod p``,
p = 2^32 + 15, of CRC32 shingle ids, a and b seeded) with LSH banding: ``rows`` per band is the largest
divisor of ``num_perm`` for which a pair at exactly ``threshold`` becomes a candidate with probability
≥ 0.999 (0.7 → 32 bands of 4 rows); every candidate is then checked with the exact Jaccard, so a pair
below the threshold is never reported. A row is compared with the rows kept before it (first one wins).

By default a near duplicate must also have the same gold answer (:func:`answer_key`: the normalised
answer, numbers as exact fractions so ``0.5`` = ``\frac{1}{2}`` = ``1/2``) and the same numbers in its
question (:func:`numbers_key`, as a multiset: ``12 by 7`` = ``7 by 12``). In math, changing a number
changes the problem even when the wording barely moves: ``A coin is flipped $7$ times. What is the
probability of exactly $4$ heads?`` and ``... exactly $3$ heads?`` score 0.88 and even share the answer
35/128, yet they are different problems. ``text_only=True`` compares the question text only (like the
paper's semantic dedup); then every row of a template shares LSH buckets, which is slower on templated
data. Both keys are part of the LSH bucket keys, so rows that differ in them are never even compared.

Batches (what the streaming ``llmrl data curate`` uses, :mod:`llmrl.data.stream`): :func:`shingle_arrays`
gives the shingle ids of many texts at once as sorted unique ``uint32`` arrays (CRC32 of ASCII texts
computed with numpy, the same values as :func:`zlib.crc32`) and :meth:`NearDuplicateIndex.signatures` their
MinHash signatures, equal to :meth:`NearDuplicateIndex.signature` row by row; :meth:`NearDuplicateIndex.group`
is the answer/numbers prefix of the bucket keys and :meth:`NearDuplicateIndex.shares_band` tells whether two
rows share a bucket key.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np

_DROP = re.compile(r"\\(?:left|right|displaystyle|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])|\$|\\[()\[\]]")
_SPACE_CMD = re.compile(r"\\[,;:! ]|\\q?quad(?![a-zA-Z])|~")
_PUNCT = re.compile(r"\.(?!\d)|(?<!\d),|,(?!\d)|[;:!?\"'`“”‘’，。；：！？、]")
_OP_SPACE = re.compile(r"(?<=\W) | (?=\W)")
_FRAC = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_LATEX_FRAC = re.compile(r"^(-?)\\frac\{(\d+)\}\{(\d+)\}$")
_NUMBER = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?$")
_DIGITS = re.compile(r"\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PRIME = (1 << 32) + 15  # the smallest prime above 2^32 (shingle ids are CRC32 values < 2^32)
IndexState = tuple[set[int], list[bytes]]  # (shingle ids, bucket key per band) of a looked-up row


def _spaced(text: str) -> str:
    """Normalised text with single spaces."""
    text = _FRAC.sub(r"\\frac", text.lower())
    text = _SPACE_CMD.sub(" ", _DROP.sub(" ", text))
    return " ".join(_PUNCT.sub(" ", text).split())


def near_form(text: str) -> str:
    """The text that is shingled: normalised, single spaces between words, none next to symbols."""
    return _OP_SPACE.sub("", _spaced(text))


def normalize_text(text: str) -> str:
    """The exact-duplicate key of a question (see the module docstring)."""
    return _spaced(text).replace(" ", "")


def answer_key(answer: str) -> str:
    r"""A canonical form of a gold answer: numbers as reduced fractions, else the normalised text."""
    compact = _spaced(answer).replace(" ", "")
    m = _LATEX_FRAC.match(compact)
    number = f"{m[1]}{m[2]}/{m[3]}" if m else compact.replace(",", "") if _THOUSANDS.fullmatch(compact) else compact
    if _NUMBER.match(number):
        try:
            value = Fraction(number)
            return f"#{value.numerator}/{value.denominator}"
        except (ValueError, ZeroDivisionError):
            pass
    return compact


def numbers_key(question: str) -> str:
    """The numbers written in a question as a sorted multiset (``"12 7 cm"`` -> ``"12|7"``)."""
    return _numbers(near_form(question))


def _numbers(form: str) -> str:
    return "|".join(sorted(_DIGITS.findall(form)))


def shingles(text: str, size: int = 5) -> set[int]:
    """CRC32 ids of the character ``size``-grams of :func:`near_form` (the whole text when shorter)."""
    return _shingle_ids(near_form(text), size)


def _shingle_ids(s: str, size: int) -> set[int]:
    if len(s) <= size:
        return {zlib.crc32(s.encode())}
    return {zlib.crc32(s[i : i + size].encode()) for i in range(len(s) - size + 1)}


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc_table()


def shingle_arrays(forms: Sequence[str], size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Shingle ids of many :func:`near_form` texts: ``(ids, offsets)``, row i's ids (sorted, unique, uint32)
    are ``ids[offsets[i]:offsets[i + 1]]`` and equal ``sorted(_shingle_ids(forms[i], size))``. ASCII texts
    longer than ``size`` are hashed together with a table-driven CRC32 in numpy; the others by zlib."""
    rows: list[np.ndarray] = []
    row_ids: list[np.ndarray] = []
    ascii_rows: list[int] = []
    ascii_bytes: list[bytes] = []
    for i, form in enumerate(forms):
        if len(form) > size and form.isascii():
            ascii_rows.append(i)
            ascii_bytes.append(form.encode("ascii"))
        else:
            ids = np.fromiter(_shingle_ids(form, size), dtype=np.uint32)
            rows.append(np.full(len(ids), i, dtype=np.int64))
            row_ids.append(ids)
    if ascii_rows:
        lengths = np.fromiter(map(len, ascii_bytes), dtype=np.int64, count=len(ascii_bytes))
        buf = np.frombuffer(b"".join(ascii_bytes), dtype=np.uint8)
        counts = lengths - size + 1  # windows per text
        text_start = np.cumsum(lengths) - lengths
        window_start = np.cumsum(counts) - counts
        pos = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(text_start - window_start, counts)
        crc = np.full(len(pos), 0xFFFFFFFF, dtype=np.uint32)
        for k in range(size):
            crc = _CRC_TABLE[(crc ^ buf[pos + k]) & 0xFF] ^ (crc >> np.uint32(8))
        rows.append(np.repeat(np.asarray(ascii_rows, dtype=np.int64), counts))
        row_ids.append(crc ^ np.uint32(0xFFFFFFFF))
    offsets = np.zeros(len(forms) + 1, dtype=np.int64)
    if not rows:
        return np.zeros(0, dtype=np.uint32), offsets
    keys = (np.concatenate(rows).astype(np.uint64) << np.uint64(32)) | np.concatenate(row_ids)  # row, then id
    keys.sort()
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]
    keys = keys[keep]
    np.cumsum(np.bincount((keys >> np.uint64(32)).astype(np.int64), minlength=len(forms)), out=offsets[1:])
    return keys.astype(np.uint32), offsets


def jaccard(a: set[int], b: set[int]) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def lsh_rows(num_perm: int, threshold: float, target: float = 0.999) -> int:
    """Rows per LSH band: the largest divisor r of ``num_perm`` with 1 − (1 − t^r)^(num_perm/r) ≥ target."""
    for r in sorted((d for d in range(1, num_perm + 1) if num_perm % d == 0), reverse=True):
        if 1.0 - (1.0 - threshold**r) ** (num_perm // r) >= target:
            return r
    return 1


class NearDuplicateIndex:
    """Incremental MinHash-LSH index: :meth:`find` a kept near duplicate, :meth:`add` a kept row."""

    def __init__(self, threshold: float = 0.7, shingle_size: int = 5, num_perm: int = 128, seed: int = 0,
                 text_only: bool = False) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        if shingle_size < 1 or num_perm < 1:
            raise ValueError(f"shingle_size and num_perm must be >= 1, got {shingle_size}, {num_perm}")
        self.threshold, self.shingle_size, self.text_only = threshold, shingle_size, text_only
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 1 << 31, num_perm, dtype=np.uint64)[:, None]  # [P, 1]
        self.b = rng.integers(0, 1 << 31, num_perm, dtype=np.uint64)[:, None]
        self.rows = lsh_rows(num_perm, threshold)
        self.bands = num_perm // self.rows
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.sets: list[set[int]] = []

    def signature(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """MinHash signature [num_perm] of a shingle-id set: per hash, min over x of (a x + b) mod p."""
        x = (ids.astype(np.uint64) if isinstance(ids, np.ndarray) else np.fromiter(ids, dtype=np.uint64))[None, :]
        return ((self.a * x + self.b) % np.uint64(_PRIME)).min(axis=1)  # a, b < 2^31, x < 2^32: no overflow

    def signatures(self, ids: np.ndarray, offsets: np.ndarray, max_cells: int = 1 << 16) -> np.ndarray:
        """MinHash signatures [n, num_perm] of the rows of :func:`shingle_arrays` (each row non-empty), equal
        to :meth:`signature` of each row; at most about ``max_cells`` hash values are held at once."""
        n = len(offsets) - 1
        out = np.empty((n, len(self.a)), dtype=np.uint64)
        step = max(1, max_cells // len(self.a))
        i = 0
        while i < n:  # rows i..j-1 hold about `step` ids (at least one row)
            j = max(i + 1, int(np.searchsorted(offsets, offsets[i] + step, side="right")) - 1)
            j = min(j, n)
            x = ids[offsets[i] : offsets[j]].astype(np.uint64)[None, :]
            values = np.multiply(self.a, x)  # [P, ids of rows i..j-1]; a, b < 2^31, x < 2^32: no overflow
            values += self.b
            np.remainder(values, np.uint64(_PRIME), out=values)
            out[i:j] = np.minimum.reduceat(values, offsets[i:j] - offsets[i], axis=1).T
            i = j
        return out

    def group(self, form: str, answer_key_text: str) -> bytes:
        """The prefix of a row's bucket keys: its :func:`answer_key` and :func:`numbers_key` (empty when
        ``text_only``); ``form`` is the question's :func:`near_form`."""
        return b"" if self.text_only else f"{answer_key_text}\n{_numbers(form)}\n".encode()

    def shares_band(self, group_a: bytes, sig_a: np.ndarray, group_b: bytes, sig_b: np.ndarray) -> bool:
        """Whether two rows (group prefix, signature) have a bucket key in common, i.e. are LSH candidates."""
        if group_a != group_b:
            return False
        return bool((sig_a.reshape(self.bands, self.rows) == sig_b.reshape(self.bands, self.rows)).all(1).any())

    def find(self, question: str, answer: str = "") -> tuple[int | None, float, IndexState]:
        """(index of the first kept near duplicate or None, its Jaccard, state to pass to :meth:`add`)."""
        form = near_form(question)
        ids = _shingle_ids(form, self.shingle_size)
        sig = self.signature(ids).tobytes()  # per band: a group prefix + the band's bytes is the bucket key
        group = b"" if self.text_only else self.group(form, answer_key(answer))
        w = 8 * self.rows
        keys = [group + sig[i * w : (i + 1) * w] for i in range(self.bands)]
        candidates: set[int] = set()
        for band, key in zip(self.buckets, keys):
            candidates.update(band.get(key, ()))
        best: tuple[int | None, float] = (None, 0.0)
        for j in sorted(candidates):
            sim = jaccard(ids, self.sets[j])
            if sim >= self.threshold:
                best = (j, sim)
                break
        return best[0], best[1], (ids, keys)

    def add(self, state: IndexState) -> int:
        """Index a kept row (``state`` from :meth:`find`); returns its index."""
        ids, keys = state
        idx = len(self.sets)
        self.sets.append(ids)
        for band, key in zip(self.buckets, keys):
            band.setdefault(key, []).append(idx)
        return idx
