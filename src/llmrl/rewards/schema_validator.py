"""The ``jsonschema`` validator class :func:`llmrl.rewards.schema.schema_reward` uses.

It is the class the schema's ``$schema`` names (``validator_for``, default Draft 2020-12) extended through
``jsonschema.validators.extend`` (so meta-schema, type and format checkers and ``$ref`` handling stay that
class's) with two changes that alter no verdict, only the cost:

1. ``uniqueItems`` runs in O(n log n) with exactly ``jsonschema``'s verdict and message (below).
2. Every keyword evaluation is counted against the budget of an enclosing :func:`keyword_budget` block
   (none outside one) and raises :class:`WorkBudgetExceeded` past it: validation cost is linear in the
   instance, but at up to ~25 us per keyword (a recursive ``oneOf`` creates a validator and an error per
   branch per value, and the garbage collector rescans them) a 100k-value document takes 20-40 s, so the
   reward bounds the count instead of the time (deterministic: it depends on the document and schema).

The caller also validates :func:`short_repr_copy` of the document: the same JSON value, whose arrays and
objects have a constant-size ``repr``, because ``jsonschema`` formats the instance into every error message
and the failing ``anyOf``/``oneOf`` branches at each level of a deep document would print the whole
subtree again (O(depth x size)).

**uniqueItems.** ``jsonschema`` (4.x) checks it with ``jsonschema._utils.uniq``: it first sorts the
items (after ``unbool``, which maps ``True``/``False`` to two private sentinels) and compares neighbours
with ``jsonschema._utils.equal``; when sorting raises ``TypeError`` (any two objects, or mixed types, e.g.
an array of 4,000 objects) it falls back to comparing every pair, which is quadratic: tens of seconds for
4,000 objects (46 s for 51 KB in the issue; 15-23 s for 94 KB on a busy 2-core machine).

:func:`fast_uniq` keeps the sorted path verbatim (it is O(n log n) comparisons, and copying it keeps its
quirks, e.g. ``[[1], [true], [1]]`` counts as unique there because Python sorts ``[true]`` as ``[1]``)
and replaces only the fallback by one pass over :class:`CanonicalKeys`, whose keys are equal iff
``equal`` says so. ``equal`` is an equivalence relation on JSON values:

* strings by value; ``null`` only equals ``null``;
* booleans only equal booleans of the same value (``true`` is not ``1``, ``false`` is not ``0``);
* numbers by exact mathematical value across ``int`` and ``float`` (``1 == 1.0``, ``-0.0 == 0``,
  ``2**53 + 1 != float(2**53)``, ``inf == inf``); a NaN equals only the *same object* (``equal`` starts
  with an ``is`` check), so a NaN's key holds its ``id`` (the instance is alive while it is checked);
* arrays elementwise (any two ``Sequence`` s: lists and tuples alike), objects by equal key sets and
  equal values.

Container keys are interned (hash-consed) to small integers, so hashing never re-walks a subtree and the
whole pass is linear in the instance size. A value that is not a plain JSON value (not exactly ``dict``,
``list``, ``tuple``, ``str``, ``int``, ``float``, ``bool`` or ``None`` or the short-repr containers below,
or an object with a non-string key) falls back to ``jsonschema._utils.uniq`` itself, so the verdict is
``jsonschema``'s in every case.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_SCALAR_TAGS = {str: "s", bool: "b", type(None): "z"}


class _Unsupported(TypeError):
    """A value outside the plain JSON types: use jsonschema's own ``uniq``."""


class ShortReprList(list):
    """A JSON array whose ``repr`` is constant-size (module docstring)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<array of {len(self)} items>"


class ShortReprDict(dict):
    """A JSON object whose ``repr`` is short (see :class:`ShortReprList`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<object of {len(self)} members>"


_ARRAYS = (list, tuple, ShortReprList)
_OBJECTS = (dict, ShortReprDict)


def short_repr_copy(value: Any) -> Any:
    """``value`` with every ``list``/``dict`` copied as :class:`ShortReprList`/:class:`ShortReprDict` (the
    same JSON value for ``jsonschema``: only error messages change; scalars are shared, NaNs included)."""
    kind = type(value)
    if kind is list:
        return ShortReprList([short_repr_copy(v) for v in value])
    if kind is dict:
        return ShortReprDict({k: short_repr_copy(v) for k, v in value.items()})
    return value


class CanonicalKeys:
    """Hashable keys of JSON values: ``key(a) == key(b)`` iff ``jsonschema._utils.equal(a, b)``, for keys
    made by the same instance (containers are interned to integers local to it)."""

    def __init__(self) -> None:
        self._ids: dict[tuple[Any, ...], int] = {}

    def key(self, value: Any) -> Hashable:
        """The key of ``value``; raises ``TypeError`` for a value outside the plain JSON types."""
        kind = type(value)
        if kind is int:
            return ("n", value)
        if kind is float:
            return ("n", value) if value == value else ("nan", id(value))
        tag = _SCALAR_TAGS.get(kind)
        if tag is not None:
            return (tag, value)
        if kind in _ARRAYS:
            sig: tuple[Any, ...] = ("l", tuple(self.key(item) for item in value))
        elif kind in _OBJECTS:
            if any(type(k) is not str for k in value):
                raise _Unsupported("non-string object key")
            sig = ("o", frozenset((k, self.key(v)) for k, v in value.items()))
        else:
            raise _Unsupported(f"not a plain JSON value: {kind.__name__}")
        return self._ids.setdefault(sig, len(self._ids))


def hashed_uniq(container: Any) -> bool:
    """True iff no two items of ``container`` are ``equal`` (pairwise, as jsonschema's fallback path),
    in one pass over their :class:`CanonicalKeys`. Raises ``TypeError`` for non-JSON items."""
    keys = CanonicalKeys()
    seen: set[Hashable] = set()
    for item in container:
        k = keys.key(item)
        if k in seen:
            return False
        seen.add(k)
    return True


@functools.cache
def _jsonschema_utils() -> Any:
    from jsonschema import _utils

    return _utils


def fast_uniq(container: Any) -> bool:
    """``jsonschema._utils.uniq(container)`` with its quadratic fallback replaced by :func:`hashed_uniq`."""
    utils = _jsonschema_utils()
    try:
        sort = sorted(utils.unbool(i) for i in container)
        for i, j in zip(sort, itertools.islice(sort, 1, None)):
            if utils.equal(i, j):
                return False
    except (NotImplementedError, TypeError):
        try:
            return hashed_uniq(container)
        except _Unsupported:
            return bool(utils.uniq(container))
    return True


def unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """The ``uniqueItems`` keyword, as ``jsonschema._keywords.uniqueItems`` but through :func:`fast_uniq`."""
    from jsonschema.exceptions import ValidationError

    if unique and validator.is_type(instance, "array") and not fast_uniq(instance):
        yield ValidationError(f"{instance!r} has non-unique elements")


class WorkBudgetExceeded(Exception):
    """Validation needed more keyword evaluations than the enclosing :func:`keyword_budget` allows."""


_BUDGET: ContextVar[list[int] | None] = ContextVar("llmrl_schema_keyword_budget", default=None)


@contextmanager
def keyword_budget(calls: int) -> Iterator[None]:
    """Within this block (this thread / context), validators from :func:`fast_validator_class` raise
    :class:`WorkBudgetExceeded` on their ``calls + 1``-th keyword evaluation (iterate errors inside it)."""
    token = _BUDGET.set([calls])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _budgeted(keyword: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(keyword)
    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        left = _BUDGET.get()
        if left is not None:
            left[0] -= 1
            if left[0] < 0:
                raise WorkBudgetExceeded("keyword evaluation budget spent")
        return keyword(validator, value, instance, schema)

    return counted


@functools.cache
def fast_validator_class(cls: type) -> type:
    """``cls`` extended (``jsonschema.validators.extend``) with :func:`unique_items` as ``uniqueItems``
    (only where ``cls`` has jsonschema's stock keyword) and each keyword counted by :func:`keyword_budget`."""
    from jsonschema import _keywords, validators

    keywords = dict(cls.VALIDATORS)  # type: ignore[attr-defined]
    if keywords.get("uniqueItems") is getattr(_keywords, "uniqueItems", None):
        keywords["uniqueItems"] = unique_items
    return validators.extend(cls, {name: _budgeted(fn) for name, fn in keywords.items()})


def validator_class_for(schema: Any) -> type:
    """:func:`fast_validator_class` of the class the schema's ``$schema`` names (default Draft 2020-12)."""
    import jsonschema

    return fast_validator_class(
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    )
