"""Typed config plumbing: dataclasses ⇄ YAML, dotted command-line overrides, clear errors.

Every config section is a dataclass whose fields carry their documentation in
``field(metadata={"help": ...})``. Loading validates every key and type; an unknown key is an error that
names the dotted key, the file, and the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import keyword
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from llmrl.core.errors import ConfigError
from llmrl.core.registry import closest

T = TypeVar("T")


def config_key(name: str) -> str:
    """The config key of a dataclass field: its name, except that a Python keyword is written as a field with a
    trailing underscore (``async_``) and read / written as the keyword itself (``rollout.async``)."""
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def field_name(key: str) -> str:
    """The dataclass field of config key ``key`` (the inverse of :func:`config_key`)."""
    return f"{key}_" if keyword.iskeyword(key) else key


def requirement(section: str = "") -> Callable[[bool, str, str], None]:
    """``need = requirement("rm")``; ``need(cond, "lr", "must be > 0")`` raises ``ConfigError("rm.lr: must be > 0")``
    when ``cond`` is false (an empty section gives the key as written)."""
    prefix = f"{section}." if section else ""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{prefix}{key}: {msg}")

    return need


def doc(help: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING, *,
        ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field with documentation and optional numeric bounds:
    ``lr: float = doc("learning rate", 1e-5, gt=0)``. Bounds (``ge`` >=, ``gt`` >, ``le`` <=, ``lt`` <) are checked
    by :func:`from_dict` and :func:`check_fields`; a null value passes; on a list field they apply to each item.
    Choices are a ``Literal[...]`` annotation."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    meta = {"help": help, **bounds}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _bounds_text(meta: Any) -> str | None:
    """``must be >= 1`` / ``must be in (0, 0.5]`` for the bounds in a field's metadata; None without any."""
    low = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    high = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if low and high:
        return f"must be in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"must be {'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f"must be {'<=' if high[0] == ']' else '<'} {high[1]}"
    return None


def check_bounds(value: Any, meta: Any, where: str) -> None:
    """Raise ``ConfigError("<where>: must be ..., got <value>")`` when a number is outside the field's bounds;
    each item of a list is checked (``<where>[i]: ...``)."""
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_bounds(item, meta, f"{where}[{i}]")
        return
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    ok = (("ge" not in meta or value >= meta["ge"]) and ("gt" not in meta or value > meta["gt"])
          and ("le" not in meta or value <= meta["le"]) and ("lt" not in meta or value < meta["lt"]))
    text = _bounds_text(meta)
    if not ok and text:
        raise ConfigError(f"{where}: {text}, got {value!r}")


def _literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The choices of ``Literal[...]`` (or ``Literal[...] | None``), else None."""
    if get_origin(tp) is typing.Literal:
        return get_args(tp)
    if get_origin(tp) in (Union, types.UnionType):
        for arg in get_args(tp):
            if get_origin(arg) is typing.Literal:
                return get_args(arg)
    return None


def check_fields(obj: Any, where: str = "") -> None:
    """Check every field of dataclass ``obj`` (recursively) against its ``Literal`` choices and bounds: what
    :func:`from_dict` checks for the keys it reads, for a config also built or changed in code."""
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, dotted = getattr(obj, f.name), f"{where}.{config_key(f.name)}" if where else config_key(f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, dotted)
            continue
        choices = _literal_choices(hints[f.name])
        if choices is not None and value is not None and value not in choices:
            raise ConfigError(f"{dotted}: must be one of {list(choices)}, got {value!r}")
        check_bounds(value, f.metadata, dotted)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce) ``value`` against the annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys with suggestions."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        name = field_name(str(key))
        if name not in fields:
            raise ConfigError(f"unknown config key {dotted!r}; {closest(str(key), [config_key(n) for n in fields])}")
        kwargs[name] = _coerce(value, hints[name], dotted)
        check_bounds(kwargs[name], fields[name].metadata, dotted)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None
    return obj


def _section_type(tp: Any) -> Any:
    """The dataclass of a section annotation (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if get_origin(tp) in (Union, types.UnionType):
        return next((a for a in get_args(tp) if dataclasses.is_dataclass(a)), None)
    return None


def has_key(cls: type, parts: list[str]) -> bool:
    """Whether the dotted key ``parts`` (e.g. ``["pref", "beta"]``) names a field of dataclass ``cls``; below a
    field that is not a section (a mapping of options) every sub-key counts as known."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not parts or field_name(parts[0]) not in names:
        return False
    sub = _section_type(get_type_hints(cls)[field_name(parts[0])])
    return len(parts) == 1 or sub is None or has_key(sub, parts[1:])


def find_unknown(cls: type, data: dict[str, Any]) -> list[str] | None:
    """The first key of ``data`` (depth first, in order: the one :func:`from_dict` would reject first) that is
    not a field of ``cls``, as a dotted path; None when every key is known."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in data.items():
        if field_name(str(key)) not in names:
            return [str(key)]
        sub = _section_type(hints[field_name(str(key))])
        if sub is not None and isinstance(value, dict):
            below = find_unknown(sub, value)
            if below is not None:
                return [str(key), *below]
    return None


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {config_key(f.name): to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field, recursively — for ``llmrl config``."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{config_key(f.name)}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
