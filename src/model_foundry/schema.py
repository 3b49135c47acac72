"""Typed dataclasses from plain dicts (params.yaml, config.json), with errors that name field, value and rule.

Rules live in field metadata: `ge`, `gt`, `le`, `lt` bounds (checked on numbers only: an
`int | Literal["auto"]` field takes 'auto') and `choices`. A dataclass may add cross-field rules in a
`validate()` method that raises `FoundryError`. Torch-free on purpose: config validation must stay fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


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
        raise FoundryError(f"{where} = {value!r} must be {_type_name(tp)}.", _hint(tp))
    if tp is type(None):
        if value is not None:
            raise FoundryError(f"{where} = {value!r} must be null.", "Write `null` or leave the key out.")
        return None
    if origin is list:
        if not isinstance(value, list):
            raise FoundryError(f"{where} = {value!r} must be a list.", "Write a YAML list: [a, b].")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise FoundryError(
                f"{where} must be a mapping, got {value!r}.", "Write a YAML mapping: {key: value}."
            )
        return dict(value)
    if tp is bool:  # never truthiness: the string 'false' is not false, and 0/1 are not booleans
        if not isinstance(value, bool):
            raise FoundryError(f"{where} = {value!r} must be true or false.", _hint(bool))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FoundryError(f"{where} = {value!r} must be an integer.", _hint(int))
        return value
    if tp is float:
        return _number(value, where)
    if tp is str:
        if not isinstance(value, str):
            raise FoundryError(f"{where} = {value!r} must be a string.", _hint(str))
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    raise TypeError(f"unsupported annotation {tp!r} at {where}")


def _number(value: Any, where: str) -> float:
    """A finite float from a YAML number (or a numeric string: YAML 1.1 reads 1e-3 as one)."""
    number: float | None = None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            raise FoundryError(f"{where} = {value!r} is too large.", "Use a reasonable number.") from None
    if number is None:
        raise FoundryError(f"{where} = {value!r} must be a number.", _hint(float))
    if not math.isfinite(number):
        raise FoundryError(
            f"{where} = {value!r} must be a finite number.", "NaN and Infinity are not allowed."
        )
    return number


def _hint(tp: Any) -> str:
    """How to write a value of type `tp` in YAML (the usual mistake: quotes around it)."""
    if tp is bool:
        return "Write true or false without quotes (YAML reads 'false' in quotes as a string)."
    if tp is int:
        return "Write a whole number without quotes, e.g. 128."
    if tp is float:
        return "Write a number without quotes, e.g. 0.001 or 1.0e-3."
    if tp is str:
        return "Quote it: YAML reads unquoted 1234, 1e5 or yes as a number or a boolean."
    return f"Write a value of type {_type_name(tp)} (see the params.yaml reference in README.md)."


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
        raise FoundryError(
            f"{where} must be a mapping of settings, got {raw!r}.", f"Write {where} as `key: value` lines."
        )
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
            number = isinstance(value, (int, float)) and not isinstance(value, bool)  # not 'auto'
            if key in f.metadata and number and not ok(value, f.metadata[key]):
                raise FoundryError(
                    f"{path} = {value!r} must be {sym} {f.metadata[key]}.",
                    f"Set it to a value {sym} {f.metadata[key]}"
                    + (f" ({doc})." if (doc := f.metadata.get("doc")) else "."),
                )
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except FoundryError as e:
            message = e.message if e.message.startswith(f"{where}.") else f"{where}: {e.message}"
            raise FoundryError(message, e.hint) from None
    return obj


def describe(cls: type[DataclassInstance]) -> list[tuple[str, str, Any, str]]:
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
