"""Name → callable registries (advantage estimators, policy losses, tasks, ...)."""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
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


class _Declared:
    """A registered function as its source declares it (name, signature, first doc line), not imported."""

    def __init__(self, name: str, signature: inspect.Signature, doc: str) -> None:
        self.__name__ = self.__qualname__ = name
        self.__signature__ = signature
        self.__doc__ = doc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self.__name__} is a declaration read from source; import its module to call it")


def _signature(fn: ast.FunctionDef) -> inspect.Signature:
    a, P = fn.args, inspect.Parameter
    params = [P(x.arg, P.POSITIONAL_ONLY) for x in a.posonlyargs]
    params += [P(x.arg, P.POSITIONAL_OR_KEYWORD) for x in a.args]
    params += [P(a.vararg.arg, P.VAR_POSITIONAL)] if a.vararg else []
    params += [P(x.arg, P.KEYWORD_ONLY) for x in a.kwonlyargs]
    params += [P(a.kwarg.arg, P.VAR_KEYWORD)] if a.kwarg else []
    return inspect.Signature(params)


def declared(module: str, var: str) -> Registry[Any]:
    """The registry ``module.var`` without importing ``module`` (and its torch) when it is not imported yet.

    An imported module gives its live registry (with whatever a user's code registered in it since). Otherwise
    the module's source is read: every function decorated ``@var.register("name")`` becomes an entry whose
    signature (parameter names and kinds, for :func:`check_options`) and docstring are the source's, and which
    cannot be called. That is exactly the live registry's content until the module is imported (a test keeps
    the two equal), so config validation can check names and options in a command that never trains."""
    if module in sys.modules:
        return getattr(sys.modules[module], var)
    return _declared(module, var)


@functools.cache
def _source(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)  # imports the parent packages (light: their exports are lazy)
    if spec is None or not spec.origin:
        raise ImportError(f"no module named {module!r}")
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"), spec.origin)


def _function(module: str, name: str) -> _Declared:
    for node in _source(module).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return _Declared(name, _signature(node), ast.get_docstring(node) or "")
    raise ImportError(f"{module} defines no function {name!r}")


@functools.cache
def _declared(module: str, var: str) -> Registry[Any]:
    tree = _source(module)
    reg: Registry[Any] = Registry(var)
    for node in tree.body:  # VAR.register_lazy("name", "module:function", ...): that module's declaration
        call = node.value if isinstance(node, ast.Expr) else None
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "register_lazy"
                and isinstance(call.func.value, ast.Name) and call.func.value.id == var and len(call.args) >= 2
                and all(isinstance(a, ast.Constant) for a in call.args[:2])):
            target_module, _, attr = str(call.args[1].value).partition(":")
            reg.register(str(call.args[0].value))(_function(target_module, attr))
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "register"
                    and isinstance(deco.func.value, ast.Name) and deco.func.value.id == var
                    and deco.args and isinstance(deco.args[0], ast.Constant)):
                reg.register(str(deco.args[0].value))(_Declared(node.name, _signature(node),
                                                                 ast.get_docstring(node) or ""))
    for node in tree.body:  # the registry's own kind: VAR = Registry("advantage estimator")
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        value = getattr(node, "value", None)
        if (isinstance(target, ast.Name) and target.id == var and isinstance(value, ast.Call)
                and value.args and isinstance(value.args[0], ast.Constant)):
            reg.kind = str(value.args[0].value)
    return reg
