"""Typed dataclasses from plain dicts (params.yaml, config.json), with errors that name field, value and rule.

Rules live in field metadata: `ge`, `gt`, `le`, `lt` bounds and `choices`. A dataclass may add cross-field
rules in a `validate()` method that raises `FoundryError`. Torch-free on purpose: config validation must
stay fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

from model_foundry.errors import FoundryError

T = TypeVar("T")


def rule(default: Any = dataclasses.MISSING, *, doc: str = "", **checks: Any) -> Any:
    """A dataclass field with validation rules (ge/gt/le/lt) and a doc string for the README and errors."""
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"doc": doc, **checks})
    return dataclasses.field(default=default, metadata={"doc": doc, **checks})


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " / ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where YAML is ambiguous (1e-3 is a str)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise FoundryError(
                f"{where} = {value!r} is not allowed.", f"Use one of: {', '.join(repr(c) for c in choices)}."
            )
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            with contextlib.suppress(FoundryError):
                return _coerce(value, arg, where)
        raise FoundryError(f"{where} = {value!r} must be {_type_name(tp)}.")
    if tp is type(None):
        if value is not None:
            raise FoundryError(f"{where} = {value!r} must be null.")
        return None
    if origin is list:
        if not isinstance(value, list):
            raise FoundryError(f"{where} = {value!r} must be a list.")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise FoundryError(f"{where} must be a mapping, got {value!r}.")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise FoundryError(f"{where} = {value!r} must be true or false.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FoundryError(f"{where} = {value!r} must be an integer.")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FoundryError(f"{where} = {value!r} must be a number.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise FoundryError(f"{where} = {value!r} must be a string.")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    raise TypeError(f"unsupported annotation {tp!r} at {where}")


_BOUNDS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def build(cls: type[T], raw: Any, where: str) -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys, wrong types and out-of-range values."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise FoundryError(f"{where} must be a mapping of settings, got {raw!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise FoundryError(
            f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}.",
            f"Valid settings are: {', '.join(fields)}.",
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{where}.{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FoundryError(
                    f"{path} is missing.", f"Add it: {f.metadata.get('doc') or _type_name(hints[name])}."
                )
            continue
        value = _coerce(raw[name], hints[name], path)
        for key, (ok, sym) in _BOUNDS.items():
            if key in f.metadata and value is not None and not ok(value, f.metadata[key]):
                raise FoundryError(f"{path} = {value!r} must be {sym} {f.metadata[key]}.")
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except FoundryError as e:
            raise FoundryError(f"{where}: {e.message}", e.hint) from None
    return obj


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, doc) for each field: the README tables and `foundry validate` use it."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        )
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("doc", "")))
    return rows
