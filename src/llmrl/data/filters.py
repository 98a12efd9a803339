r"""Question filters of the Big-Math curation pipeline (arXiv:2502.17387) and gold-answer extraction.

Every filter is a named predicate ``(question, answer) -> bool``; ``True`` means *remove the row*. They are
heuristics on the raw text (regular expressions, no model), tuned to keep ordinary word problems:

``language``         :func:`non_ascii_letter_ratio` of the question above ``max_ratio`` (default 0.2). The
                     ratio counts letters (word characters but digits and ``_``) outside math (``$...$``, ``\(...\)``, ``\[...\]``)
                     and LaTeX commands; Greek letters (U+0370–U+03FF) are treated as maths and skipped.
                     It is a script test, not language identification: Chinese, Russian, Arabic... are
                     caught, French or German in Latin script are not.
``hyperlink``        ``http(s)://``, ``www.``, ``\url{``, ``\href{`` or a bare domain (``site.com/...``).
``multiple_choice``  option markers for at least A and B (``(A)`` not preceded by a word character, so
                     ``P(A)`` is not one; ``A.``/``A)``/``A:`` at a line start) or A, B and C inline
                     (``A: 1 B: 2 C: 3``), "which of the following", "answer choices", "choose the correct",
                     or a gold answer that is a lone option letter (``C``, ``(C)``, ``\textbf{(C)} 12``).
``yes_no``           gold answer "yes"/"no", alone or followed by punctuation and a reason (``No, since
                     ...``; ``No solution`` is kept), or "yes or no" / "yes/no" in the question.
``true_false``       gold answer "true"/"false"/"correct"/"incorrect", "true or false" in the question, or a
                     question asking whether a statement/proposition is true, false or correct.
``multi_part``       enumerated parts with a first and a second label of one scheme — ``(a)``+``(b)``,
                     ``(1)``+``(2)``, ``(i)``+``(ii)``, ``(I)``+``(II)``, ``①``+``②``, ``a)``/``1.`` at line
                     starts, "part (b)" — outside ``$...$`` math, or two or more question marks outside math
                     (several questions). Known false positive: equations labelled ``(1)`` and ``(2)``.
``proof``            "prove", "proof", "show that", "show why", "demonstrate that", "verify that".

Gold answers (:func:`answer_text`): a string answer has its last ``\boxed{}`` unwrapped (else, for
GSM8K-style ``... #### 42``, the text after the last ``####``); integers and finite floats become text;
a solution column only counts when it holds a ``\boxed{}``. Empty answers, an empty or unbalanced
``\boxed{``, other types (lists, booleans, NaN) and answers longer than
:data:`llmrl.rewards.math.MAX_ANSWER_CHARS` (which never verify) give ``None`` (the row is removed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from llmrl.core.registry import Registry

FilterFn = Callable[[str, str], bool]

_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_MATH_SPAN = re.compile(r"\$\$.*?\$\$|\$.*?\$|\\\(.*?\\\)|\\\[.*?\\\]", re.S)
_LATEX_CMD = re.compile(r"\\[a-zA-Z]+")
_WRAPPER = re.compile(r"\\(?:text[a-z]*|math[a-z]*|mbox|boxed)\s*\{|[{}$]|\\[,;:! ]")


def without_math(text: str) -> str:
    """``text`` with inline/display math spans and LaTeX commands replaced by spaces."""
    return _LATEX_CMD.sub(" ", _MATH_SPAN.sub(" ", text))


def _plain_answer(answer: str) -> str:
    r"""The answer lower-cased without LaTeX text wrappers, braces, ``$`` and trailing punctuation."""
    return " ".join(_WRAPPER.sub(" ", answer).split()).strip(" .!").lower()


# -- language -------------------------------------------------------------------------------------------
_LETTER = re.compile(r"[^\W\d_\u0370-\u03ff]")  # a letter (\w minus digits and _), not Greek
_ASCII_LETTER = re.compile(r"[a-zA-Z]")


def non_ascii_letter_ratio(text: str) -> float:
    """Fraction of the letters outside math that are not ASCII (Greek excluded); 0.0 without letters."""
    prose = without_math(text)
    letters = len(_LETTER.findall(prose))
    return (letters - len(_ASCII_LETTER.findall(prose))) / letters if letters else 0.0


def is_non_english(question: str, answer: str = "", max_ratio: float = 0.2) -> bool:
    """True when more than ``max_ratio`` of the question's prose letters are non-ASCII."""
    return non_ascii_letter_ratio(question) > max_ratio


# -- hyperlinks -----------------------------------------------------------------------------------------
_LINK = re.compile(r"https?://|\bwww\.|\\(?:url|href)\s*\{|\b[a-zA-Z][\w-]*\.(?:com|org|net|edu|gov|io)\b(?!\.\w)",
                   re.I)


def has_hyperlink(question: str, answer: str = "") -> bool:
    """True when the question contains a URL, ``www.``, ``\\url``/``\\href`` or a bare web domain."""
    return _LINK.search(question) is not None


# -- multiple choice ------------------------------------------------------------------------------------
_MC_PAREN = re.compile(r"(?<![\w\\])\(\s*([A-E])\s*\)")
_MC_LINE = re.compile(r"(?m)^[ \t]*(?:\\textbf\{)?\(?([A-E])[.:)：]")
_MC_INLINE = re.compile(r"(?:^|\s)([A-E])\s*[:：]\s*\S")
_MC_PHRASE = re.compile(r"which\s+(?:one\s+)?of\s+the\s+following|answer\s+choices|\boptions\s*:|"
                        r"choose\s+the\s+(?:correct|right|best)|select\s+the\s+(?:correct|right|best)", re.I)
_MC_ANSWER = re.compile(r"^(?:[A-E][.:)]?$|\(\s*[A-E]\s*\)|[A-E][.:)]\s)")  # C, C., (C) 12, C) 12


def _has_options(found: list[str], need: str = "AB") -> bool:
    return all(label in found for label in need)


def is_multiple_choice(question: str, answer: str = "") -> bool:
    """True for questions listing options (A, B, ...) or asking "which of the following", or a letter answer."""
    if _MC_PHRASE.search(question):
        return True
    for pattern, need in ((_MC_PAREN, "AB"), (_MC_LINE, "AB"), (_MC_INLINE, "ABC")):
        if _has_options(pattern.findall(question), need):
            return True
    plain = " ".join(_WRAPPER.sub(" ", answer).split())
    return _MC_ANSWER.match(plain) is not None


# -- yes/no and true/false ------------------------------------------------------------------------------
_YES_NO_Q = re.compile(r"\byes\s*(?:or|/)\s*no\b|\bno\s*(?:or|/)\s*yes\b", re.I)
_YES_NO_A = re.compile(r"^(?:yes|no)(?:$|\s*[,;:.(!])")
_TF_Q = re.compile(r"\btrue\s*(?:or|/)\s*false\b|\bfalse\s*(?:or|/)\s*true\b|"
                   r"\b(?:statement|proposition|claim|conclusion)s?\b[^.?]{0,60}?\b(?:is|are)\s+(?:it\s+)?"
                   r"(?:true|false|correct|incorrect)\b|\b(?:is|are)\s+(?:the\s+following|this|these)\s+"
                   r"(?:statement|proposition|claim)s?\s+(?:true|false|correct)\b", re.I)
_TF_A = {"true", "false", "correct", "incorrect"}


def is_yes_no(question: str, answer: str = "") -> bool:
    """True when the gold answer is yes/no or the question asks for yes or no."""
    return _YES_NO_A.match(_plain_answer(answer)) is not None or _YES_NO_Q.search(question) is not None


def is_true_false(question: str, answer: str = "") -> bool:
    """True when the gold answer is true/false (correct/incorrect) or the question asks for a truth value."""
    return _plain_answer(answer) in _TF_A or _TF_Q.search(question) is not None


# -- multi-part -----------------------------------------------------------------------------------------
_PART_PAREN = re.compile(r"(?<![\w\\^_])\(\s*([a-d]|[1-4]|i{1,3}|I{1,3})\s*\)(?![\^\d])")
_PART_LINE = re.compile(r"(?m)^[ \t]*(?:\(?([a-d]|[1-4])[.)])\s")
_PART_WORD = re.compile(r"\bpart\s*\(?\s*(?:b|ii|2)\b", re.I)
_PART_PAIRS = (("a", "b"), ("1", "2"), ("i", "ii"), ("I", "II"))


def is_multi_part(question: str, answer: str = "") -> bool:
    """True for questions with enumerated parts ((a) (b), (1) (2), ①②...) or several question marks."""
    prose = _MATH_SPAN.sub(" ", question)
    for pattern in (_PART_PAREN, _PART_LINE):
        labels = set(pattern.findall(prose))
        if any(a in labels and b in labels for a, b in _PART_PAIRS):
            return True
    if ("①" in question and "②" in question) or _PART_WORD.search(question):
        return True
    return prose.count("?") + prose.count("？") >= 2


# -- proofs ---------------------------------------------------------------------------------------------
_PROOF = re.compile(r"\b(?:prove|proves|proving|proof|show\s+that|show\s+why|demonstrate\s+that|"
                    r"verify\s+that)\b", re.I)


def is_proof(question: str, answer: str = "") -> bool:
    """True for proof questions ("prove", "show that", ...)."""
    return _PROOF.search(question) is not None


# Pipeline order (the report lists removals in this order); language takes its threshold separately.
FILTERS: Registry[FilterFn] = Registry("data filter", ordered=True)
for _name, _fn in (("language", is_non_english), ("hyperlink", has_hyperlink),
                   ("multiple_choice", is_multiple_choice), ("yes_no", is_yes_no), ("true_false", is_true_false),
                   ("multi_part", is_multi_part), ("proof", is_proof)):
    FILTERS.register(_name)(_fn)


# -- gold answers ---------------------------------------------------------------------------------------
def answer_text(value: Any, solution: bool = False) -> str | None:
    r"""The gold answer in ``value`` as text, or None when it is empty or cannot be extracted.

    ``solution=True`` (a worked-solution column): only a ``\boxed{}`` counts. Otherwise the last
    ``\boxed{}`` if any, else the text after the last ``####`` if any, else the stripped text.
    """
    if hasattr(value, "item") and not isinstance(value, str):
        try:
            value = value.item()  # numpy scalars from parquet
        except (ValueError, TypeError):
            return None
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        return None
    from llmrl.rewards.math import MAX_ANSWER_CHARS, extract_boxed  # here: `llmrl --help` stays light

    boxed = extract_boxed(value)
    if solution or boxed or _BOX.search(value):  # a box that is empty or unbalanced gives None
        text = boxed
    else:
        text = value.rsplit("####", 1)[1] if "####" in value else value
    text = (text or "").strip()
    return text if text and len(text) <= MAX_ANSWER_CHARS else None
