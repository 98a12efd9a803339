"""The validator class behind ``schema_reward`` (llmrl.rewards.schema_validator): ``uniqueItems`` keys vs
``jsonschema._utils.equal``/``uniq``, the keyword budget and the short-repr copies."""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import jsonschema._keywords
import jsonschema._utils
import pytest
from conftest import cpu_guard
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrl.rewards import schema as schema_mod
from llmrl.rewards.schema import schema_reward
from llmrl.rewards.schema_validator import (
    CanonicalKeys,
    ShortReprDict,
    ShortReprList,
    WorkBudgetExceeded,
    fast_uniq,
    fast_validator_class,
    hashed_uniq,
    keyword_budget,
    short_repr_copy,
    validator_class_for,
)

# ---------------------------------------------------------------- uniqueItems: canonical keys vs jsonschema
NAN = float("nan")
# (a, b, jsonschema's equal(a, b)): the verdicts are pinned too, so a jsonschema change shows up here
_BOOLS = [(True, 1, False), (False, 0, False), (True, True, True), (True, False, False), (None, False, False)]
_NULLS = [(None, None, True), (None, 0, False), ([[]], [[]], True)]
_NUMS = [(1, 1.0, True), (-0.0, 0, True), (-0.0, 0.0, True), (2**53 + 1, float(2**53), False)]
_BIG = [(2**53, float(2**53), True), (10**400, 10**400, True), (10**400, math.inf, False)]
_INF = [(math.inf, math.inf, True), (-math.inf, math.inf, False), (1e308, 1e308 * 10, False)]
_NANS = [(NAN, NAN, True), (NAN, float("nan"), False), ([NAN], [NAN], True), ([NAN], [float("nan")], False)]
_MIXED = [("1", 1, False), ("", [], False), ("", None, False), ([], {}, False), ({}, {}, True)]
_OBJS = [({"a": 1}, {"a": 1.0}, True), ({"a": True}, {"a": 1}, False), ({"a": 1}, {"b": 1}, False)]
_OBJS2 = [({"a": 1, "b": 2}, {"b": 2, "a": 1}, True), ({"a": None}, {}, False), ({"a": {}}, {"a": []}, False)]
_SEQS = [([1, 2], [2, 1], False), ([1], (1,), True), ([None], [], False), ([[]], [{}], False)]
_NESTED = [
    ([[1], {"x": [True]}], [[1.0], {"x": [True]}], True),
    ([[1], {"x": [True]}], [[1], {"x": [1]}], False),
]
_NESTED2 = [([0, [False]], [0.0, [0]], False), ({"k": [1, {"z": 0.5}]}, {"k": [1.0, {"z": 0.5}]}, True)]
_STRS = [
    ("a", "a", True),
    ("\u00e9", "e\u0301", False),
    ("```json", "```JSON", False),
    ({"a": NAN}, {"a": NAN}, True),
]
TRICKY = [*_BOOLS, *_NULLS, *_NUMS, *_BIG, *_INF, *_NANS, *_MIXED, *_OBJS, *_OBJS2]
TRICKY += [*_SEQS, *_NESTED, *_NESTED2, *_STRS]


@pytest.mark.parametrize(("a", "b", "equal"), TRICKY)
def test_canonical_keys_match_jsonschema_equal(a: Any, b: Any, equal: bool) -> None:
    assert jsonschema._utils.equal(a, b) is jsonschema._utils.equal(b, a) is equal
    keys = CanonicalKeys()
    assert (keys.key(a) == keys.key(b)) is equal
    assert hashed_uniq([a, b]) is (not equal) is hashed_uniq([b, a])


def test_canonical_keys_reject_non_json_values() -> None:
    for value in [b"ab", {1: 2}, [object()], {"a": {1.5}}]:
        with pytest.raises(TypeError):
            CanonicalKeys().key(value)
    assert fast_uniq([{1: 2}, {1: 2.0}]) is jsonschema._utils.uniq([{1: 2}, {1: 2.0}]) is False


POOL = st.sampled_from(
    [0, 1, -1, 2, 0.0, -0.0, 1.0, 2.5, True, False, None, "", "a", "1", 2**53, float(2**53), 2**53 + 1, NAN]
)
SMALL_VALUES = st.recursive(
    POOL,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("ab"), inner, max_size=2),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(SMALL_VALUES, max_size=6))
def test_fast_uniq_is_jsonschemas_verdict(items: list[Any]) -> None:
    utils = jsonschema._utils
    assert fast_uniq(items) == utils.uniq(items)  # sorted path copied verbatim, fallback hashed
    pairwise = not any(  # jsonschema's fallback, spelled out
        utils.equal(utils.unbool(x), utils.unbool(y)) for i, x in enumerate(items) for y in items[:i]
    )
    assert hashed_uniq(items) == pairwise


def test_sorted_path_quirks_are_kept() -> None:
    utils = jsonschema._utils
    for items in ([[1], [True], [1]], [1.0, NAN, 1.0], [[0], [False]], [NAN, NAN]):
        assert fast_uniq(items) == utils.uniq(items), items
    assert utils.uniq([[1], [True], [1]]) is True  # jsonschema only compares sorted neighbours


def test_unique_items_validator_message_and_drafts() -> None:
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "uniqueItems": True, "minimum": 5}
    cls = validator_class_for(schema)
    assert cls is fast_validator_class(jsonschema.Draft4Validator) and cls is not jsonschema.Draft4Validator
    assert not cls(schema).is_valid(1)  # draft-04 keywords still work
    instance = [{"a": 1}, {"a": 1.0}]
    ours = [e.message for e in cls(schema).iter_errors(instance)]
    stock = [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(instance)]
    assert ours == stock == [f"{instance!r} has non-unique elements"]
    assert jsonschema.Draft202012Validator.VALIDATORS["uniqueItems"] is jsonschema._keywords.uniqueItems


def test_unique_items_4000_objects_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    stock_equal = jsonschema._utils.equal

    def counting_equal(a: Any, b: Any) -> bool:
        nonlocal calls
        calls += 1
        return stock_equal(a, b)

    monkeypatch.setattr(jsonschema._utils, "equal", counting_equal)
    schema = {"type": "array", "uniqueItems": True, "items": {"type": "object"}}
    near = [{"id": 0, "tags": ["t"] * 5, "v": i} for i in range(4000)]  # near-duplicates differing at the end
    for doc, valid in [(near, True), ([*near, {"id": 0, "tags": ["t"] * 5, "v": 3999.0}], False)]:
        with cpu_guard(1.0, "uniqueItems on 4,000 objects"):  # jsonschema's own check takes tens of seconds
            assert schema_reward(json.dumps(doc), schema) == (1.0 if valid else 0.0)
    assert calls < 100  # the quadratic path would call equal ~8 million times


# ---------------------------------------------------------------- short reprs and the keyword budget
REC = {
    "$defs": {
        "n": {
            "oneOf": [
                {"type": "integer"},
                {"type": "boolean"},
                {"type": "array", "items": {"$ref": "#/$defs/n"}},
                {"type": "object", "additionalProperties": {"$ref": "#/$defs/n"}},
            ]
        }
    },
    "type": "object",
    "properties": {"a": {"$ref": "#/$defs/n"}},
}


def test_short_repr_copy_is_the_same_value() -> None:
    doc = {"a": [1, {"b": [True, None, "x"]}, [[]]], "n": NAN}
    copy = short_repr_copy(doc)
    assert (
        type(copy) is ShortReprDict
        and type(copy["a"]) is ShortReprList
        and type(copy["a"][1]) is ShortReprDict
    )
    assert copy["n"] is doc["n"] and json.dumps(copy) == json.dumps(doc)
    assert jsonschema._utils.equal(copy, doc) and CanonicalKeys().key(copy["a"]) == CanonicalKeys().key(
        doc["a"]
    )
    assert repr(short_repr_copy(list(range(10**5)))) == "<array of 100000 items>"
    messages = [
        e.message for e in validator_class_for(REC)(REC).iter_errors(short_repr_copy({"a": [[1.5] * 5000]}))
    ]
    assert messages == ["<array of 1 items> is not valid under any of the given schemas"]


def test_keyword_budget_is_counted_and_scoped() -> None:
    validator = validator_class_for(REC)(REC)
    doc = short_repr_copy({"a": [[1] * 50]})
    assert validator.is_valid(doc)  # no budget outside a block
    with keyword_budget(10_000):
        assert validator.is_valid(doc)
    with pytest.raises(WorkBudgetExceeded), keyword_budget(100):
        validator.is_valid(doc)
    assert validator.is_valid(doc)  # the budget ended with its block


def test_reward_budget_gives_zero_deterministically(monkeypatch: pytest.MonkeyPatch) -> None:
    text = json.dumps({"a": [[1] * 500]})
    assert schema_reward(text, REC) == 1.0
    monkeypatch.setattr(schema_mod, "MAX_KEYWORD_CALLS", 1000)  # the document needs about 4,000
    assert schema_reward(text, REC) == 0.0


def test_big_documents_within_budget_still_validate() -> None:
    assert schema_mod.MAX_KEYWORD_CALLS >= 150_000
    ints = json.dumps([7] * 99_000)  # 99,002 keyword evaluations
    assert schema_reward(ints, {"type": "array", "items": {"type": "integer"}}) == 1.0
    objects = json.dumps([{"a": i} for i in range(33_000)])  # 4 per object
    item = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert schema_reward(objects, {"type": "array", "items": item}) == 1.0


def test_recursive_oneof_over_many_values_is_bounded() -> None:
    depth = 60
    text = '{"a": ' + "[" * depth + ",".join(["1.5"] * 99_000) + "]" * depth + "}"
    with cpu_guard(3.0, "recursive oneOf over 99,000 values"):  # plain jsonschema: 20-40 s here
        assert schema_reward(text, REC) == 0.0  # over the keyword budget
