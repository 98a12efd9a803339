r"""Exact and near-duplicate detection for math problems (Big-Math, PAPERS.md §17), offline and seeded.

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
"""

from __future__ import annotations

import re
import zlib
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

    def signature(self, ids: set[int]) -> np.ndarray:
        """MinHash signature [num_perm] of a shingle-id set: per hash, min over x of (a x + b) mod p."""
        x = np.fromiter(ids, dtype=np.uint64, count=len(ids))[None, :]  # [1, S]
        return ((self.a * x + self.b) % np.uint64(_PRIME)).min(axis=1)  # a, b < 2^31, x < 2^32: no overflow

    def find(self, question: str, answer: str = "") -> tuple[int | None, float, IndexState]:
        """(index of the first kept near duplicate or None, its Jaccard, state to pass to :meth:`add`)."""
        form = near_form(question)
        ids = _shingle_ids(form, self.shingle_size)
        sig = self.signature(ids).tobytes()  # per band: a group prefix + the band's bytes is the bucket key
        group = b"" if self.text_only else f"{answer_key(answer)}\n{_numbers(form)}\n".encode()
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
