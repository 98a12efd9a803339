"""Rule-based reward for Knights & Knaves puzzles (Logic-RL: Xie et al., 2025, arXiv:2502.14768).

The scored text is the whole assistant turn, i.e. the pre-filled ``<think>`` prefix plus the model's
completion. Reward = format score + answer score, total in [-3, 3]:

* format: each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` occurs exactly once and in that
  order → +1, else −1;
* answer (text = the LAST ``<answer>(.*?)</answer>`` match): −2 if the format failed, the answer is
  missing/empty or unparsable (the number of "knight"+"knave" mentions differs from the number of
  people, or some name lacks a case-insensitive ``\\bName\\b\\s+is\\s+a\\s+\\b(knight|knave)\\b`` match, so
  ``Zoey is a knights`` / ``knightly`` / ``knave_`` do not parse);
  +2 if the parsed name → role map equals the gold map exactly; −1.5 otherwise.

Everything here runs in time linear in the text length, so megabyte-long completions are fine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from llmrl.rewards.format import tags_in_order

KK_FORMAT_OK = 1.0
KK_FORMAT_BAD = -1.0
KK_ANSWER_RIGHT = 2.0
KK_ANSWER_WRONG = -1.5
KK_ANSWER_INVALID = -2.0
KK_MIN_REWARD = KK_FORMAT_BAD + KK_ANSWER_INVALID  # -3.0
KK_MAX_REWARD = KK_FORMAT_OK + KK_ANSWER_RIGHT  # 3.0

_KK_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def extract_last_answer(text: str, open_tag: str = "<answer>", close_tag: str = "</answer>") -> str | None:
    """Content of the last non-greedy ``open_tag(.*?)close_tag`` match (DOTALL), stripped; None if none.

    Same result as taking the last match of ``re.finditer`` with that pattern, but in linear time:
    matches are found left to right, each starting at the next ``open_tag`` and ending at the first
    ``close_tag`` after it.
    """
    if not isinstance(text, str):
        return None
    last: str | None = None
    pos = 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return last
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            return last
        last = text[start + len(open_tag) : end].strip()
        pos = end + len(close_tag)


def kk_format_ok(text: str) -> bool:
    """True iff each of the four think/answer tags occurs exactly once, in the order
    ``<think>`` < ``</think>`` < ``<answer>`` < ``</answer>``."""
    return isinstance(text, str) and tags_in_order(text, _KK_TAGS)


def kk_parse_answer(answer_text: str, names: Sequence[str]) -> dict[str, str] | None:
    """Parse ``answer_text`` into ``{name: "knight" | "knave"}`` for the given names, or None.

    None (unparsable) when the number of case-insensitive occurrences of "knight" plus "knave"
    (substring counts, as in Logic-RL) differs from ``len(names)``, or when some name has no
    ``\\bName\\b\\s+is\\s+a\\s+\\b(knight|knave)\\b`` match (case-insensitive; the first match is used).
    The word boundary after the role is the reference's: ``knights``, ``knightly`` and ``knave_`` are
    not roles (they still count as mentions, since the count is of substrings).
    """
    if not isinstance(answer_text, str) or not answer_text:
        return None
    lowered = answer_text.lower()
    if lowered.count("knight") + lowered.count("knave") != len(names):
        return None
    parsed: dict[str, str] = {}
    for name in names:
        pattern = re.compile(rf"\b{re.escape(name)}\b\s+is\s+a\s+\b(knight|knave)\b", re.IGNORECASE)
        match = pattern.search(answer_text)
        if match is None:
            return None
        parsed[name] = match.group(1).lower()
    return parsed


def kk_reward_components(text: str, solution: Mapping[str, str]) -> dict[str, float]:
    """``{"format": ±1, "answer": 2 | -1.5 | -2}`` for the full assistant text (prefix + completion)."""
    format_ok = kk_format_ok(text)
    format_score = KK_FORMAT_OK if format_ok else KK_FORMAT_BAD
    answer_score = KK_ANSWER_INVALID
    if format_ok:
        answer_text = extract_last_answer(text)
        if answer_text:
            gold = {str(name): str(role).lower() for name, role in solution.items()}
            parsed = kk_parse_answer(answer_text, list(gold))
            if parsed is not None:
                answer_score = KK_ANSWER_RIGHT if parsed == gold else KK_ANSWER_WRONG
    return {"format": format_score, "answer": answer_score}


def kk_reward(completion: str, solution: dict[str, str]) -> float:
    """Logic-RL Knights & Knaves reward (format + answer, in [-3, 3]) of ``completion``.

    ``completion`` is the full assistant text, including any pre-filled ``<think>`` prefix;
    ``solution`` maps each name to "knight" or "knave" (in puzzle order). Never raises on model output.
    """
    parts = kk_reward_components(completion, solution)
    return parts["format"] + parts["answer"]
