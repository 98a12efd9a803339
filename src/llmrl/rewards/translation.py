"""Reference-based translation rewards (R1-T1: He et al., 2025, arXiv:2502.19735) with sacreBLEU's metrics.

R1-T1 rewards translation quality (COMET in the paper) plus a think/answer format score. Offline we use a
reference metric instead, computed by sacreBLEU (``sacrebleu`` >= 2.4, a core dependency); the values are
exactly sacreBLEU's sentence-level scores, with no truncation of either input.

Metrics (floats in [0, 100]; the same values as the sacrebleu calls named)
----------------------------------------------------------------------------
:func:`chrf` — ``sacrebleu.sentence_chrf(h, [r]).score``, i.e. ``CHRF()`` with its defaults: chrF2
(character n-grams of order 1..6, no word n-grams, β = 2), whitespace removed, case-sensitive, effective
order (orders where either side has no n-gram are left out of the averages).

:func:`chrf_plus_plus` — ``sacrebleu.sentence_chrf(h, [r], word_order=2).score``: chrF++ (``CHRF(word_order=2)``,
chrF2 plus word unigrams and bigrams after sacreBLEU's punctuation splitting).

:func:`sentence_bleu` — ``sacrebleu.sentence_bleu(h, [r]).score``, i.e. ``BLEU(effective_order=True)``:
BLEU-4 with the ``13a`` tokeniser (mteval-v13a: punctuation split from words, ``&quot;``-style entities
decoded), case-sensitive, ``exp`` smoothing (each order with no match counts as precision 100 / (2^k · total)
for its k-th zero), orders with no hypothesis n-gram left out (effective order), brevity penalty
exp(1 − r/c) when c < r. Option ``tokenize=``: any other sacreBLEU tokeniser name (``"intl"``, ``"char"``,
``"zh"``, ``"none"``, ...; those needing extra packages need them installed); an unknown name raises
``ValueError``.

Edge cases, as sacreBLEU returns them: an empty or whitespace-only hypothesis or reference scores 0.0 with
every metric, and so does ``("", "")``. A hypothesis identical to a non-empty reference scores 100.0 with
chrF and 100.00000000000004 with sacreBLEU's BLEU (floating-point rounding; :func:`quality_score` caps at 1).
A non-string hypothesis or reference is treated as ``""``. The metrics never raise on a string of any
content (control characters, lone surrogates, any script).

Cost and the length limit
-------------------------
sacreBLEU counts n-grams with Python ``Counter`` objects: about 1-4 s for a 1 MB hypothesis (up to 8 s with
a 1 MB reference) on a 2-core CPU, too slow for a reward. So when hypothesis plus reference exceed
:data:`FAST_PATH_CHARS` (4,096) characters, the same sufficient statistics are counted with numpy instead:
the strings go through sacreBLEU's own preprocessing (its tokeniser for BLEU, its whitespace removal and
punctuation splitting for chrF), every n-gram count (hypothesis n-grams, reference n-grams, clipped matches
Σ_g min(count_hyp(g), count_ref(g)) per order) is computed exactly, and sacreBLEU's own score-from-statistics
function turns them into the score. The value is therefore identical (``==``, tested on random and
adversarial inputs, with the threshold forced to 0 as well); a 1 MB hypothesis takes well under 2 s
(``benchmarks/fidelity_translation.py`` measures it).

The one deliberate deviation: a hypothesis longer than ``max_chars`` characters (default :data:`MAX_CHARS`
= 1,000,000, counted before any whitespace removal) scores 0.0, the minimum, so emitting more text can never
raise a score and no cut-off comparison is made (the old 10,000-character truncation let a long answer that
repeats the reference's start score 100). ``max_chars=None`` disables the limit (cost then grows linearly
with the length). References are never limited: they come from the data set, and cost is linear in them.

sacreBLEU's tokenisers memoise every line they see (``functools.lru_cache``, 65,536 lines, process-wide), which
would keep up to 65,536 long model outputs alive; the BLEU objects here call the same tokeniser functions
without that cache (same tokens, bounded memory). The metric objects are built once per configuration and
reused.

Reward
------
:func:`translation_reward` (text = the completion alone):

* format: +format_weight when ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` each occur exactly
  once and in that order, else −format_weight;
* quality: min(metric(answer, reference), 100) / 100 where answer = the stripped text between ``<answer>``
  and ``</answer>``; 0 when the format fails or the answer is empty. ``metric`` is ``"chrf"`` (default),
  ``"chrf++"`` or ``"bleu"`` (:data:`METRICS`); ``tokenize`` is BLEU's tokeniser (ignored by chrF);
  ``max_chars`` the limit above.

Total in [−format_weight, format_weight + 1], i.e. [−1, 2] by default. Never raises on any completion or
reference (non-strings count as empty); only a configuration error (an unknown ``metric`` or ``tokenize``
name) raises ``ValueError``. The format check is linear in the completion length (``str.count``/``str.find``).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from llmrl.rewards.format import tags_in_order
from llmrl.rewards.logic import extract_last_answer

MAX_CHARS = 1_000_000  # default max_chars: longer hypotheses score 0 (see the module docstring)
FAST_PATH_CHARS = 4_096  # above this many characters (hypothesis + reference) the numpy counting path is used
BLEU_TOKENIZE = BLEU.TOKENIZER_DEFAULT  # "13a"
CHRF_ORDER = CHRF.CHAR_ORDER  # 6
CHRF_BETA = CHRF.BETA  # 2
BLEU_ORDER = 4
THINK_ANSWER_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _over_long(hypothesis: str, max_chars: int | None) -> bool:
    return max_chars is not None and len(hypothesis) > max_chars


# -- sacreBLEU metric objects (built once per configuration) -------------------------------------------
class _Unmemoised:
    """A sacreBLEU tokeniser called through its undecorated ``__call__`` (and its post-tokeniser's), so
    that no line is kept in the process-wide ``lru_cache``; the tokens are the same."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._call = getattr(type(tokenizer).__call__, "__wrapped__", None)
        post = getattr(tokenizer, "_post_tokenizer", None)
        if post is not None:
            tokenizer._post_tokenizer = _Unmemoised(post)

    def __call__(self, line: str) -> str:
        return self._call(self._tokenizer, line) if self._call is not None else self._tokenizer(line)

    def signature(self) -> str:
        return self._tokenizer.signature()


@functools.cache
def _chrf_metric(word_order: int) -> CHRF:
    return CHRF(word_order=word_order)


@functools.cache
def _bleu_metric(tokenize: str) -> BLEU:
    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(f"tokenize must be one of {sorted(BLEU.TOKENIZERS)}, got {tokenize!r}")
    # sacrebleu.sentence_bleu's settings: 'exp' smoothing, effective order
    metric = BLEU(tokenize=tokenize, smooth_method="exp", effective_order=True)
    metric.tokenizer = _Unmemoised(metric.tokenizer)
    return metric


# -- exact n-gram statistics with numpy (the long-input path) -------------------------------------------
def _ngram_counts(hyp: np.ndarray, ref: np.ndarray, max_order: int, base: int) -> list[tuple[int, int, int]]:
    """For n = 1..max_order: (hypothesis n-grams, reference n-grams, clipped matches Σ_g min(hyp_g, ref_g)).

    ``hyp``/``ref`` are int64 symbol sequences with symbols in [0, base). An n-gram's id is its rank among
    the reference's distinct n-grams, −1 for a hypothesis n-gram absent from the reference; the (n+1)-gram
    at i is keyed id_n[i]·base + symbol[i+n], so equal keys ⇔ equal n-grams, and an n-gram whose prefix is
    absent from the reference gets a negative key, absent too."""
    out: list[tuple[int, int, int]] = []
    h_id, r_id = hyp, ref
    for n in range(1, max_order + 1):
        n_hyp, n_ref = max(len(hyp) - n + 1, 0), max(len(ref) - n + 1, 0)
        if n_hyp == 0 or n_ref == 0:
            out.append((n_hyp, n_ref, 0))
            continue
        if n == 1:
            h_key, r_key = hyp, ref
        else:
            h_key = h_id[:-1] * base + hyp[n - 1 :]
            r_key = r_id[:-1] * base + ref[n - 1 :]
        vocab, r_id = np.unique(r_key, return_inverse=True)
        r_id = r_id.reshape(-1)
        pos = np.minimum(np.searchsorted(vocab, h_key), len(vocab) - 1)
        found = vocab[pos] == h_key
        h_id = np.where(found, pos, -1)
        size = len(vocab)
        matches = np.minimum(np.bincount(pos[found], minlength=size), np.bincount(r_id, minlength=size)).sum()
        out.append((n_hyp, n_ref, int(matches)))
    return out


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)


def _char_counts(hyp: str, ref: str, order: int) -> list[tuple[int, int, int]] | None:
    """sacreBLEU's chrF character statistics (whitespace removed); None if keys could overflow int64."""
    h, r = _codepoints("".join(hyp.split())), _codepoints("".join(ref.split()))
    base = int(max(h.max(initial=0), r.max(initial=0))) + 1
    if (len(r) + 1) * base >= 1 << 62:
        return None
    return _ngram_counts(h, r, order, base)


def _word_counts(hyp: Sequence[str], ref: Sequence[str], order: int) -> list[tuple[int, int, int]] | None:
    """Statistics of token n-grams: tokens are numbered by the reference's vocabulary (one extra symbol for
    every hypothesis token the reference lacks); None if keys could overflow int64."""
    vocab: dict[str, int] = {}
    r = np.fromiter((vocab.setdefault(t, len(vocab)) for t in ref), dtype=np.int64, count=len(ref))
    unknown = len(vocab)
    h = np.fromiter(map(vocab.get, hyp, itertools.repeat(unknown)), dtype=np.int64, count=len(hyp))
    if (len(r) + 1) * (unknown + 1) >= 1 << 62:
        return None
    return _ngram_counts(h, r, order, unknown + 1)


def _chrf_value(hypothesis: object, reference: object, word_order: int, max_chars: int | None) -> float:
    hyp, ref = _text(hypothesis), _text(reference)
    if _over_long(hyp, max_chars):
        return 0.0
    metric = _chrf_metric(word_order)
    if len(hyp) + len(ref) > FAST_PATH_CHARS:
        hyp, ref = metric._preprocess_segment(hyp), metric._preprocess_segment(ref)
        counts = _char_counts(hyp, ref, metric.char_order)
        if counts is not None and word_order > 0:
            words = _word_counts(metric._remove_punctuation(hyp), metric._remove_punctuation(ref), word_order)
            counts = None if words is None else counts + words
        if counts is not None:
            # sacreBLEU's per-order triple: hypothesis n-grams (0 when the reference has none), reference, matches
            stats = [x for n_hyp, n_ref, m in counts for x in (n_hyp if n_ref else 0, n_ref, m)]
            return float(metric._compute_score_from_stats(stats).score)
    return float(metric.sentence_score(hyp, [ref]).score)


def chrf(hypothesis: str, reference: str, *, max_chars: int | None = MAX_CHARS) -> float:
    """sacreBLEU's sentence chrF2 (``CHRF()`` defaults) in [0, 100]; 0.0 for a hypothesis over ``max_chars``."""
    return _chrf_value(hypothesis, reference, 0, max_chars)


def chrf_plus_plus(hypothesis: str, reference: str, *, max_chars: int | None = MAX_CHARS) -> float:
    """sacreBLEU's sentence chrF++ (``CHRF(word_order=2)``) in [0, 100]; 0.0 over ``max_chars``."""
    return _chrf_value(hypothesis, reference, 2, max_chars)


def sentence_bleu(
    hypothesis: str, reference: str, *, tokenize: str = BLEU_TOKENIZE, max_chars: int | None = MAX_CHARS
) -> float:
    """sacreBLEU's ``sentence_bleu`` (13a tokeniser, 'exp' smoothing, effective order) in [0, 100];
    ``tokenize`` picks another sacreBLEU tokeniser; 0.0 for a hypothesis over ``max_chars``."""
    metric = _bleu_metric(tokenize)
    hyp, ref = _text(hypothesis), _text(reference)
    if _over_long(hyp, max_chars):
        return 0.0
    if len(hyp) + len(ref) > FAST_PATH_CHARS:
        h_tokens = metric._preprocess_segment(hyp).split()
        r_tokens = metric._preprocess_segment(ref).split()
        counts = _word_counts(h_tokens, r_tokens, metric.max_ngram_order)
        if counts is not None:
            # sacreBLEU's layout: [hyp_len, ref_len, correct_1..N, total_1..N]
            stats = [len(h_tokens), len(r_tokens), *(m for _, _, m in counts), *(n for n, _, _ in counts)]
            return float(metric._compute_score_from_stats(stats).score)
    return float(metric.sentence_score(hyp, [ref]).score)


METRICS: dict[str, Callable[..., float]] = {"chrf": chrf, "chrf++": chrf_plus_plus, "bleu": sentence_bleu}


def think_answer_ok(completion: object) -> bool:
    """True iff the four think/answer tags each occur exactly once, in order (linear time)."""
    return isinstance(completion, str) and tags_in_order(completion, THINK_ANSWER_TAGS)


def answer_text(completion: object) -> str | None:
    """The stripped ``<answer>`` content of a well-formatted completion, else None."""
    if not think_answer_ok(completion):
        return None
    assert isinstance(completion, str)
    return extract_last_answer(completion)


def format_score(completion: object, format_weight: float = 1.0) -> float:
    """+format_weight if :func:`think_answer_ok`, else −format_weight."""
    return format_weight if think_answer_ok(completion) else -format_weight


def quality_score(
    completion: object,
    reference: object,
    metric: str = "chrf",
    *,
    tokenize: str = BLEU_TOKENIZE,
    max_chars: int | None = MAX_CHARS,
) -> float:
    """min(metric(answer, reference), 100)/100 in [0, 1]; 0 when the format fails or the answer is empty.
    ``tokenize`` is BLEU's tokeniser (ignored by chrF); ``max_chars`` the hypothesis length limit."""
    fn = METRICS.get(metric)
    if fn is None:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    kwargs: dict[str, Any] = {"max_chars": max_chars}
    if fn is sentence_bleu:
        _bleu_metric(tokenize)  # a configuration error raises here, whatever the completion
        kwargs["tokenize"] = tokenize
    answer = answer_text(completion)
    if not answer:
        return 0.0
    try:
        value = fn(answer, _text(reference), **kwargs) / 100.0
    except Exception:  # defensive: the metrics are total, but a reward must never crash a run
        return 0.0
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


def translation_reward(
    completion: str,
    reference: str,
    *,
    metric: str = "chrf",
    format_weight: float = 1.0,
    tokenize: str = BLEU_TOKENIZE,
    max_chars: int | None = MAX_CHARS,
) -> float:
    """R1-T1 style reward: :func:`format_score` + :func:`quality_score`, in [−w, w + 1] (w =
    format_weight; [−1, 2] by default). Never raises on model output; see the module docstring."""
    quality = quality_score(completion, reference, metric, tokenize=tokenize, max_chars=max_chars)
    return format_score(completion, format_weight) + quality
