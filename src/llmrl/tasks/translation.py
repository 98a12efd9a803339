"""Toy offline translation: a synthetic SOV "source language" (Zolan) → English (SVO).

Language
--------
The lexicon is FIXED (generated once from the constant seed :data:`LEXICON_SEED`, independent of any
sample seed), so the mapping is learnable: 16 nouns, 12 transitive verbs and 12 adjectives, each an
invented two-syllable consonant-vowel word (distinct). Grammar of a source sentence::

    SUBJ_NOUN[li] [SUBJ_ADJ] OBJ_NOUN[li] [OBJ_ADJ] [nu] VERB

* word order subject–object–verb; adjectives follow their noun;
* the suffix ``li`` marks a plural noun (plurals have three syllables, so they never collide with a
  base word); the particle ``nu`` before the verb negates the sentence.

English reference (SVO, lower case, single spaces, no final period)::

    the [adj] noun[s] [does not|do not] verb[s] the [adj] noun[s]

e.g. ``"the big cats do not chase the red bird"``. Verbs agree with the subject (``sees`` / ``see``).

Formats
-------
``style="plain"``: prompt ``"<source sentence> ="``, completion the English sentence.
``style="tagged"``: an instruction asking for reasoning in ``<think></think>`` then the translation in
``<answer></answer>``; with ``glossary=True`` the prompt also lists the source words' meanings.

Rewards (see :mod:`llmrl.rewards.translation` for chrF)
-------------------------------------------------------
plain: ``chrf`` = chrF(completion.strip(), reference)/100, in [0, 1].
tagged: ``format`` = ±1 (think/answer tags exactly once, in order) and ``quality`` = chrF(answer,
reference)/100 (0 if the format fails or the answer is empty); their sum equals
``translation_reward(completion, reference)`` and lies in [−1, 2].
``is_correct``: the (parsed) answer equals the reference after whitespace normalisation.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmrl.rewards.base import RewardFn
from llmrl.tasks.base import TASKS, TEXT, Task

if TYPE_CHECKING:
    from llmrl.core.types import Sample

LEXICON_SEED = "llmrl-translation-lexicon-v1"
PLURAL_SUFFIX = "li"
NEGATION = "nu"
SOURCE_LANGUAGE = "Zolan"
_STYLES = ("plain", "tagged")
_NOUNS = ("cat", "dog", "bird", "farmer", "horse", "teacher", "king", "frog",
          "girl", "boy", "tree", "river", "stone", "friend", "snake", "baker")
_VERBS = (("see", "sees"), ("like", "likes"), ("chase", "chases"), ("watch", "watches"),
          ("help", "helps"), ("find", "finds"), ("call", "calls"), ("follow", "follows"),
          ("push", "pushes"), ("hear", "hears"), ("love", "loves"), ("fear", "fears"))
_ADJECTIVES = ("big", "small", "red", "old", "young", "happy", "sad", "green",
               "tall", "quiet", "brave", "lazy")


def _build_lexicon() -> dict[str, str]:
    """English lemma → invented source word; deterministic (fixed seed), all words distinct."""
    rng = random.Random(LEXICON_SEED)
    consonants, vowels = "bdfgkmprstvz", "aeiou"
    lemmas = list(_NOUNS) + [base for base, _ in _VERBS] + list(_ADJECTIVES)
    used: set[str] = set()
    lexicon: dict[str, str] = {}
    for lemma in lemmas:
        while True:
            word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(2))
            if word not in used:
                break
        used.add(word)
        lexicon[lemma] = word
    return lexicon


LEXICON: dict[str, str] = _build_lexicon()
_THIRD_PERSON = dict(_VERBS)


def normalise(text: str) -> str:
    """Collapse runs of whitespace to single spaces and strip the ends."""
    return " ".join(text.split())


@TASKS.register("translation")
class TranslationTask(Task):
    """Translate generated Zolan sentences (fixed lexicon and grammar) into English.

    Options: ``style`` ("plain" or "tagged"), ``max_words`` (3..6: most source words per sentence; a
    sentence has 3 words plus up to two adjectives and a negation particle), ``glossary`` (tagged only:
    list the meanings of the prompt's source words).
    """

    name = "translation"

    def __init__(self, *, style: str = "plain", max_words: int = 6, glossary: bool = False) -> None:
        if style not in _STYLES:
            raise ValueError(f"translation: style must be one of {_STYLES}, got {style!r}")
        if not isinstance(max_words, int) or not 3 <= max_words <= 6:
            raise ValueError(f"translation: max_words must be an int in 3..6, got {max_words!r}")
        self.style = style
        self.max_words = max_words
        self.glossary = bool(glossary)
        if style == "tagged":  # the demonstration glosses the source words
            self.demonstration_fields = {"answer": TEXT, "parts": dict}

    # -- generation -------------------------------------------------------------------------------
    def make_sample(self, rng: random.Random) -> Sample:
        """Nouns/verb uniform over the lexicon; each plural/adjective/negation with probability 1/2,
        extras dropped at random until the source sentence has at most ``max_words`` words."""
        subj, obj = rng.choice(_NOUNS), rng.choice(_NOUNS)
        verb = rng.choice(_VERBS)[0]
        subj_pl, obj_pl = rng.random() < 0.5, rng.random() < 0.5
        extras = {k: rng.random() < 0.5 for k in ("subj_adj", "obj_adj", "neg")}
        chosen = [k for k in ("subj_adj", "obj_adj", "neg") if extras[k]]
        while 3 + len(chosen) > self.max_words:
            chosen.remove(rng.choice(chosen))
        subj_adj = rng.choice(_ADJECTIVES) if "subj_adj" in chosen else None
        obj_adj = rng.choice(_ADJECTIVES) if "obj_adj" in chosen else None
        neg = "neg" in chosen
        parts = {"subject": subj, "subject_plural": subj_pl, "subject_adj": subj_adj, "object": obj,
                 "object_plural": obj_pl, "object_adj": obj_adj, "verb": verb, "negated": neg}
        source = to_source(parts)
        if self.style == "plain":
            prompt = f"{source} ="
        else:
            prompt = (f"Translate this {SOURCE_LANGUAGE} sentence into English: \"{source}\". "
                      "Think step by step inside <think></think>, then give only the English "
                      "translation inside <answer></answer>.")
            if self.glossary:
                prompt += " Glossary: " + "; ".join(f"{w} = {m}" for w, m in glosses(parts)) + "."
        return {"task": self.name, "prompt": prompt, "answer": to_english(parts), "source": source,
                "parts": parts}

    # -- parsing and rewards ----------------------------------------------------------------------
    def parse(self, completion: str) -> str | None:
        """The completion's translation (plain: the stripped completion; tagged: the stripped
        ``<answer>`` content when the think/answer format holds), or None if missing/empty."""
        if not isinstance(completion, str):
            return None
        from llmrl.rewards.translation import answer_text  # numpy + sacreBLEU: imported on first use

        text = completion.strip() if self.style == "plain" else answer_text(completion)
        return text or None

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return self.parse(completion) is not None

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        got = self.parse(completion)
        return got is not None and normalise(got) == normalise(str(sample["answer"]))

    def reward_functions(self) -> dict[str, RewardFn]:
        """plain: ``{"chrf"}`` in [0, 1]; tagged: ``{"format": ±1, "quality": [0, 1]}``."""
        from llmrl.rewards.translation import chrf, format_score, quality_score

        if self.style == "plain":

            def chrf_reward(completion: str, sample: Mapping[str, Any]) -> float:
                got = self.parse(completion)
                return 0.0 if got is None else chrf(got, str(sample["answer"])) / 100.0

            return {"chrf": chrf_reward}

        def format_(completion: str, sample: Mapping[str, Any]) -> float:
            return format_score(completion)

        def quality(completion: str, sample: Mapping[str, Any]) -> float:
            return quality_score(completion, str(sample["answer"]))

        return {"format": format_, "quality": quality}

    # -- demonstrations ---------------------------------------------------------------------------
    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """The reference (plain) or a word-by-word gloss in ``<think>`` plus the answer (tagged)."""
        answer = str(sample["answer"])
        if self.style == "plain":
            return answer
        gloss = ", ".join(f"{w} = {m}" for w, m in glosses(sample["parts"]))
        think = (f"Word by word: {gloss}. The order is subject, object, verb; "
                 "in English it is subject, verb, object.")
        return f"<think>{think}</think>\n<answer>{answer}</answer>"


def _noun_phrase_source(noun: str, plural: bool, adj: str | None) -> list[str]:
    words = [LEXICON[noun] + (PLURAL_SUFFIX if plural else "")]
    return words + ([LEXICON[adj]] if adj else [])


def to_source(parts: Mapping[str, Any]) -> str:
    """The source sentence of a parsed structure (see the module docstring's grammar)."""
    words = _noun_phrase_source(parts["subject"], parts["subject_plural"], parts["subject_adj"])
    words += _noun_phrase_source(parts["object"], parts["object_plural"], parts["object_adj"])
    words += [NEGATION] if parts["negated"] else []
    return " ".join(words + [LEXICON[parts["verb"]]])


def to_english(parts: Mapping[str, Any]) -> str:
    """The English reference: ``the [adj] noun[s] [does not|do not] verb[s] the [adj] noun[s]``."""

    def np(noun: str, plural: bool, adj: str | None) -> str:
        return " ".join(["the"] + ([adj] if adj else []) + [noun + ("s" if plural else "")])

    verb, plural = parts["verb"], parts["subject_plural"]
    if parts["negated"]:
        vp = f"{'do' if plural else 'does'} not {verb}"
    else:
        vp = verb if plural else _THIRD_PERSON[verb]
    subject = np(parts["subject"], plural, parts["subject_adj"])
    return f"{subject} {vp} {np(parts['object'], parts['object_plural'], parts['object_adj'])}"


def glosses(parts: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source word, meaning) for each word of the sentence, in source order."""
    out: list[tuple[str, str]] = []
    for role in ("subject", "object"):
        noun, plural, adj = parts[role], parts[f"{role}_plural"], parts[f"{role}_adj"]
        out.append((LEXICON[noun] + (PLURAL_SUFFIX if plural else ""), noun + (" (plural)" if plural else "")))
        if adj:
            out.append((LEXICON[adj], adj))
    if parts["negated"]:
        out.append((NEGATION, "not"))
    out.append((LEXICON[parts["verb"]], parts["verb"]))
    return out
