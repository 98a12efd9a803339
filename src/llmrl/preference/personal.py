"""Personalised preference evaluation (Dong et al., 2025, arXiv:2502.19158) on pairs with a ``user_id``.

Definitions (documented choices):

* **item**: a prompt with an unordered pair of responses; the same item labelled by several users is
  several :class:`~llmrl.tasks.preference.PreferencePair` rows (one per user, ``chosen`` = that user's pick).
* **majority label** of an item: the response chosen by a strict majority of the users who labelled it;
  an item with a tie has no majority label and does not count towards agreement. Every label counts,
  the user's own included.
* **agreement** of a user: the fraction of the user's labels, on items that have a majority label, that
  equal it (None when the user labelled no such item).
* **minority user**: agreement < 50% (minority users as in arXiv:2502.19158); users
  with undefined agreement are neither minority nor majority.
* **accuracy** of a reward model on a pair: 1 if r(chosen) > r(rejected), ½ on a tie, 0 otherwise.
  *Per-user accuracy* averages a user's pairs; *minority accuracy* pools the pairs of all minority users
  (``minority_user_mean_accuracy`` averages their per-user accuracies instead).

The **user-conditioned reward model** baseline renders the user id into the reward model's input
(:func:`condition_on_user`, via :func:`llmrl.rewards.reward_model.user_conditioned_prompt`); the
``reward_model`` trainer does this with ``rm.user_conditioned: true`` and reports these metrics whenever
the held-out pairs have user ids.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from llmrl.rewards.reward_model import user_conditioned_prompt
from llmrl.tasks.base import prompt_key

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from llmrl.tasks.preference import PreferencePair


def pair_accuracy(r_chosen: Sequence[float], r_rejected: Sequence[float]) -> list[float]:
    """Per pair: 1.0 if r_chosen > r_rejected, 0.5 on a tie, else 0.0."""
    return [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(r_chosen, r_rejected, strict=True)]


def item_key(pair: PreferencePair) -> tuple[str, tuple[str, str]]:
    """The item a pair labels: (prompt, the two responses in sorted order)."""
    a, b = sorted((pair.chosen, pair.rejected))
    return prompt_key(pair.prompt), (a, b)


def user_of(pair: PreferencePair, user_key: str = "user_id") -> str | None:
    """The pair's user: ``pair.user_id`` for the ``user_id`` column, else ``pair.meta[user_key]``."""
    uid = pair.user_id if user_key == "user_id" else pair.meta.get(user_key)
    return None if uid is None else str(uid)


def majority_labels(pairs: Iterable[PreferencePair]) -> dict[tuple[str, tuple[str, str]], str]:
    """Item → the response a strict majority of its labels chose (tied items are absent)."""
    votes: dict[tuple[str, tuple[str, str]], Counter[str]] = defaultdict(Counter)
    for p in pairs:
        votes[item_key(p)][p.chosen] += 1
    out = {}
    for item, c in votes.items():
        (top, n), total = c.most_common(1)[0], sum(c.values())
        if 2 * n > total:
            out[item] = top
    return out


def user_agreement(pairs: Sequence[PreferencePair], user_key: str = "user_id") -> dict[str, float | None]:
    """User → fraction of their labels (on items with a majority label) that agree with the majority."""
    major = majority_labels(pairs)
    agree: dict[str, list[int]] = defaultdict(list)
    users: set[str] = set()
    for p in pairs:
        uid = user_of(p, user_key)
        if uid is None:
            continue
        users.add(uid)
        m = major.get(item_key(p))
        if m is not None:
            agree[uid].append(int(p.chosen == m))
    return {u: (sum(agree[u]) / len(agree[u]) if agree[u] else None) for u in sorted(users)}


def minority_users(agreement: Mapping[str, float | None], threshold: float = 0.5) -> set[str]:
    """Users whose agreement is defined and below ``threshold``."""
    return {u for u, a in agreement.items() if a is not None and a < threshold}


def personal_metrics(pairs: Sequence[PreferencePair], correct: Sequence[float],
                     agreement: Mapping[str, float | None] | None = None, user_key: str = "user_id",
                     ) -> dict[str, Any]:
    """Per-user and minority-user accuracy of a reward model whose per-pair accuracy on ``pairs`` is
    ``correct``. ``agreement`` (default: computed on ``pairs``) decides who is a minority user; pass one
    computed on more data (train + test) when the held-out pairs alone are thin.

    Returns ``num_users``, ``per_user_accuracy`` (user → accuracy), ``mean_user_accuracy``,
    ``worst_user_accuracy``, ``minority_users`` (sorted ids), ``num_minority_users``,
    ``minority_accuracy`` / ``majority_accuracy`` (pooled over the group's pairs; None when the group has
    no pairs here), ``minority_user_mean_accuracy`` and ``agreement`` (user → agreement).
    """
    if len(pairs) != len(correct):
        raise ValueError(f"personal_metrics: {len(pairs)} pairs but {len(correct)} accuracy values")
    agreement = dict(agreement) if agreement is not None else user_agreement(pairs, user_key)
    minority = minority_users(agreement)
    by_user: dict[str, list[float]] = defaultdict(list)
    for p, c in zip(pairs, correct):
        uid = user_of(p, user_key)
        if uid is not None:
            by_user[uid].append(float(c))
    per_user = {u: sum(v) / len(v) for u, v in sorted(by_user.items())}

    def pooled(users: Iterable[str]) -> float | None:
        vals = [c for u in users for c in by_user.get(u, [])]
        return sum(vals) / len(vals) if vals else None

    majority = [u for u in by_user if u not in minority and agreement.get(u) is not None]
    minority_here = [u for u in per_user if u in minority]
    return {
        "num_users": len(per_user),
        "per_user_accuracy": per_user,
        "mean_user_accuracy": sum(per_user.values()) / len(per_user) if per_user else None,
        "worst_user_accuracy": min(per_user.values()) if per_user else None,
        "minority_users": sorted(minority),
        "num_minority_users": len(minority),
        "minority_accuracy": pooled(minority),
        "majority_accuracy": pooled(majority),
        "minority_user_mean_accuracy": (sum(per_user[u] for u in minority_here) / len(minority_here)
                                        if minority_here else None),
        "agreement": agreement,
    }


def condition_on_user(pairs: Sequence[PreferencePair], user_key: str = "user_id") -> list[PreferencePair]:
    """The pairs with the user id rendered into the prompt (the user-conditioned reward model's input)."""
    return [dataclasses.replace(p, prompt=user_conditioned_prompt(p.prompt, user_of(p, user_key))) for p in pairs]


__all__ = ["condition_on_user", "item_key", "majority_labels", "minority_users", "pair_accuracy",
           "personal_metrics", "user_agreement", "user_of"]
