"""Name → callable registries (advantage estimators, policy losses, tasks, ...)."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def closest(name: str, choices: list[str] | Mapping[str, Any], n: int = 3) -> str:
    """Human-readable hint listing the closest valid names."""
    options = sorted(choices)
    near = difflib.get_close_matches(name, options, n=n, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(x) for x in near)}? " if near else ""
    return f"{hint}valid: {', '.join(options)}"


class Registry(Generic[F]):
    """A named collection of callables that all share one signature.

    >>> ADV = Registry("advantage estimator")
    >>> @ADV.register("grpo")
    ... def grpo(...): ...
    >>> ADV.get("grpo")

    ``register_lazy(name, "package.module:attr", doc=...)`` adds an entry whose module is imported on first
    ``get`` (heavy backends stay unimported until used; ``doc(name)`` answers from ``doc`` without importing).
    When that module is imported by other means, its own ``@register(name)`` of ``attr`` takes the entry's place
    (any other second registration of a name is an error). Names list sorted, or in registration order with
    ``ordered=True`` (when the order means something, e.g. the order filters are applied and reported in).
    """

    def __init__(self, kind: str, *, ordered: bool = False) -> None:
        self.kind = kind
        self.ordered = ordered
        self._items: dict[str, F | str] = {}  # a str is a lazy "module:attr" entry, resolved on first get
        self._docs: dict[str, str] = {}  # one-line docs of lazy entries

    def _add(self, name: str, item: F | str) -> None:
        old = self._items.get(name)
        if name in self._items and not (isinstance(old, str) and not isinstance(item, str) and _target(item) == old):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item

    def register(self, name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            self._add(name, fn)
            return fn

        return deco

    def register_lazy(self, name: str, target: str, doc: str = "") -> None:
        """Register ``target`` = ``"package.module:attr"``, imported on the first ``get(name)``; ``doc`` is the
        one-line description :meth:`doc` gives before then."""
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"{self.kind} {name!r}: lazy target must be 'module:attr', got {target!r}")
        self._add(name, target)
        if doc:
            self._docs[name] = doc

    def get(self, name: str) -> F:
        try:
            item = self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; {closest(name, self._items)}") from None
        if isinstance(item, str):
            module, _, attr = item.partition(":")
            item = getattr(importlib.import_module(module), attr)
            self._items[name] = item
        return item  # type: ignore[return-value]

    __getitem__ = get

    def doc(self, name: str) -> str:
        """The entry's one-line description: a lazy entry's ``doc`` (no import), else the first line of the
        callable's docstring."""
        if isinstance(self._items.get(name), str) and name in self._docs:
            return self._docs[name]
        lines = (self.get(name).__doc__ or "").strip().splitlines()
        return lines[0] if lines else ""

    def names(self) -> list[str]:
        return list(self._items) if self.ordered else sorted(self._items)

    def items(self) -> list[tuple[str, F]]:
        """(name, callable) pairs in ``names()`` order (imports every lazy entry)."""
        return [(n, self.get(n)) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def _target(item: Any) -> str:
    """``"module:qualname"`` of a registered callable (what a lazy entry for it names)."""
    return f"{getattr(item, '__module__', '')}:{getattr(item, '__qualname__', '')}"


def check_options(fn: Callable[..., Any], options: Mapping[str, Any], where: str,
                  reserved: tuple[str, ...] = ()) -> None:
    """Raise a clear error when `options` has keywords that `fn` does not accept (or that the caller
    passes itself: `reserved`)."""
    params = inspect.signature(fn).parameters
    allowed = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in reserved]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        allowed = None  # type: ignore[assignment]
    for key in options:
        if key in reserved:
            raise ValueError(f"{where}: {key!r} is passed by the trainer and cannot be set as an option")
        if allowed is not None and key not in allowed:
            raise ValueError(f"{where}: unknown option {key!r} for {fn.__name__}; {closest(key, allowed or [])}")
