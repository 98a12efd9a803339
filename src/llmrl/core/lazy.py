"""Lazy package exports: a package's public names imported on first access, so that importing the package
(or one light module of it) does not pull in torch and the other heavy dependencies of its siblings."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str],
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``'s ``__init__``: ``exports`` maps each public name to the
    submodule (relative to ``package``) that defines it. A name is imported on first access and then cached
    in the package namespace. Unknown names raise AttributeError, so ``from package import submodule`` still
    imports the submodule."""

    def __getattr__(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
