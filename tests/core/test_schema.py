"""schema.build: typed dataclasses from dicts, each error naming the field, the value and the rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from model_foundry.errors import FoundryError
from model_foundry.schema import build, describe, rule


@dataclass
class Inner:
    size: int = rule(1, ge=1, le=8, doc="a size")


@dataclass
class Outer:
    name: str = rule(doc="required name")
    tags: list[str] = rule(["a"], doc="tags")
    maybe: float | None = rule(None)
    extra: dict = rule({})
    inner: Inner = rule(None)
    flag: bool = rule(False)
    ratio: float = rule(0.5, gt=0.0, lt=1.0)


@dataclass
class Procs:
    n: int | Literal["auto"] = rule(1, ge=1)


def test_bounds_apply_to_the_number_of_a_number_or_word_field():
    assert build(Procs, {"n": "auto"}, "p").n == "auto" and build(Procs, {"n": 4}, "p").n == 4
    with pytest.raises(FoundryError, match=r"p.n = 0 must be >= 1"):
        build(Procs, {"n": 0}, "p")
    with pytest.raises(FoundryError, match=r"p.n = 'many' must be int or 'auto'"):
        build(Procs, {"n": "many"}, "p")


def test_builds_with_defaults_and_coercions():
    obj = build(Outer, {"name": "x", "maybe": 2, "extra": {"k": 1}, "inner": {"size": 3}}, "o")
    assert obj.tags == ["a"] and obj.maybe == 2.0 and isinstance(obj.maybe, float)
    assert obj.extra == {"k": 1} and obj.inner == Inner(3)
    # no shared mutable default between instances
    assert build(Outer, {"name": "y"}, "o").tags is not build(Outer, {"name": "z"}, "o").tags


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "o.name is missing"),
        ({"name": 1}, "o.name = 1 must be a string"),
        ({"name": "x", "tags": "a"}, "o.tags = 'a' must be a list"),
        ({"name": "x", "tags": ["a", 2]}, "o.tags[1] = 2 must be a string"),
        ({"name": "x", "maybe": "lots"}, "o.maybe = 'lots' must be float or null"),
        ({"name": "x", "extra": [1]}, "o.extra must be a mapping"),
        ({"name": "x", "inner": {"size": 9}}, "o.inner.size = 9 must be <= 8"),
        ({"name": "x", "inner": 3}, "o.inner must be a mapping"),
        ({"name": "x", "flag": "yes"}, "o.flag = 'yes' must be true or false"),
        ({"name": "x", "ratio": 1.0}, "o.ratio = 1.0 must be < 1.0"),
        ({"name": "x", "ratio": 0}, "o.ratio = 0.0 must be > 0.0"),
        ("not a mapping", "o must be a mapping of settings"),
    ],
)
def test_errors_name_field_value_and_rule(raw, message):
    with pytest.raises(FoundryError) as info:
        build(Outer, raw, "o")
    assert message in str(info.value)


def test_describe_lists_fields_with_defaults_and_docs():
    rows = {name: (kind, default, doc) for name, kind, default, doc in describe(Outer)}
    assert rows["name"] == ("str", "required", "required name")
    assert rows["tags"][0] == "list of str" and rows["maybe"][0] == "float or null"
