"""Schema RL validator reward (arXiv:2502.18878): hand-worked tables, tool calls, never-raise properties."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import jsonschema
import pytest
from conftest import cpu_guard
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrl.rewards.base import safe_score
from llmrl.rewards.schema import (
    MAX_CHARS,
    MAX_DEPTH,
    SENTINEL,
    DecodeFailure,
    extract_json_text,
    lenient_loads,
    make_schema_reward,
    make_tool_call_reward,
    schema_reward,
    tool_call_reward,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "string"}}},
    "required": ["a"],
}
REF_SCHEMA: dict[str, Any] = {
    "$defs": {"pos": {"type": "integer", "minimum": 1}},
    "type": "object",
    "properties": {"n": {"$ref": "#/$defs/pos"}, "x": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
}


def sentinel_frac(doc_with_sentinel: Any) -> float:
    """(index of the sentinel − 1) / (len − len(sentinel)) in ``json.dumps`` of the replaced document."""
    text = json.dumps(doc_with_sentinel)
    return (text.index(SENTINEL) - 1) / (len(text) - len(SENTINEL))


TRAILING = '{"a": 1, "b": ["x"],}'
TRAILING_BAD = '{"a": 1, "b": ["x", 2],}'
UNQUOTED = "```json\n  {a: 1}\n```"

CASES: list[tuple[str, str, dict[str, Any], float]] = [
    ("valid", '{"a": 1, "b": ["x", "y"]}', SCHEMA, 1.0),
    ("valid, extra whitespace", '\n  {"a": 1}  \n', SCHEMA, 1.0),
    ("root type mismatch", "[1, 2]", SCHEMA, 0.0),
    ("missing required key is a root error", '{"b": []}', SCHEMA, 0.0),
    (
        "nested wrong type",
        '{"a": 1, "b": ["x", 2]}',
        SCHEMA,
        0.3 * sentinel_frac({"a": 1, "b": ["x", SENTINEL]}),
    ),
    (
        "nested wrong type first key",
        '{"a": "1", "b": ["x"]}',
        SCHEMA,
        0.3 * sentinel_frac({"a": SENTINEL, "b": ["x"]}),
    ),
    (
        "earliest of two errors",
        '{"b": [1], "a": "z"}',
        SCHEMA,
        0.3 * sentinel_frac({"b": [SENTINEL], "a": "z"}),
    ),
    (
        "comment-only leniency = strict",
        '{"a": 1, /* note */ "b": ["x", 2]} // done',
        SCHEMA,
        0.3 * sentinel_frac({"a": 1, "b": ["x", SENTINEL]}),
    ),
    ("comment-only leniency, valid", '// header\n{"a": 1 /* one */}', SCHEMA, 1.0),
    ("trailing comma", TRAILING, SCHEMA, 0.3 * TRAILING.index(",}") / len(TRAILING)),
    (
        "trailing comma and schema error",
        TRAILING_BAD,
        SCHEMA,
        0.3 * TRAILING_BAD.index(",}") / len(TRAILING_BAD) * sentinel_frac({"a": 1, "b": ["x", SENTINEL]}),
    ),
    ("single-quoted key at 9", "{\"a\": 1, 'b': []}", SCHEMA, 0.3 * 9 / 17),
    ("unquoted key in stripped fenced body", UNQUOTED, SCHEMA, 0.3 * 1 / 6),
    ("JSON5 number", '{"a": +1}', SCHEMA, 0.3 * 6 / 9),
    ("trailing text", '{"a": 1} ok', SCHEMA, 0.3 * 9 / 11),
    ("unparsable: missing value", '{"a": }', SCHEMA, 0.0),
    ("unparsable: prose", "The answer is yes.", SCHEMA, 0.0),
    ("unparsable: empty", "", SCHEMA, 0.0),
    ("unparsable: unterminated comment", '{"a": 1 /* oops', SCHEMA, 0.0),
    ("unparsable: missing comma", '{"a": 1 "b": []}', SCHEMA, 0.0),
    (
        "fenced: last block wins (valid)",
        'x\n```json\n[1]\n```\nfixed:\n```json\n{"a": 2}\n```\n',
        SCHEMA,
        1.0,
    ),
    ("fenced: last block wins (root error)", '```json\n{"a": 2}\n```\n```json\n[1]\n```', SCHEMA, 0.0),
    ("fenced: prose outside ignored", 'Here you go:\n```JSON\n{"a": 3}\n```\nHope it helps!', SCHEMA, 1.0),
    ("fenced: unclosed block runs to end", 'Here:\n```json\n{"a": 3}', SCHEMA, 1.0),
    ("$ref valid", '{"n": 3, "x": null}', REF_SCHEMA, 1.0),
    ("$ref violated", '{"n": 0, "x": "s"}', REF_SCHEMA, 0.3 * sentinel_frac({"n": SENTINEL, "x": "s"})),
    ("anyOf violated", '{"n": 2, "x": true}', REF_SCHEMA, 0.3 * sentinel_frac({"n": 2, "x": SENTINEL})),
]


@pytest.mark.parametrize(("name", "completion", "schema", "expected"), CASES, ids=[c[0] for c in CASES])
def test_schema_reward_table(name: str, completion: str, schema: dict[str, Any], expected: float) -> None:
    assert schema_reward(completion, schema) == pytest.approx(expected, abs=1e-12), name


def test_sentinel_case_is_a_real_fraction() -> None:
    value = schema_reward('{"a": 1, "b": ["x", 2]}', SCHEMA)
    assert 0.0 < value < 0.3


def test_dollar_schema_selects_draft7() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"s": {"type": "string"}},
        "type": "object",
        "properties": {"k": {"$ref": "#/definitions/s"}},
    }
    assert schema_reward('{"k": "v"}', schema) == 1.0
    assert schema_reward('{"k": 1}', schema) == pytest.approx(0.3 * sentinel_frac({"k": SENTINEL}))


def test_oneof_allof_compositions() -> None:
    schema = {
        "type": "object",
        "properties": {
            "v": {"allOf": [{"type": "integer"}, {"maximum": 5}]},
            "w": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
        },
    }
    assert schema_reward('{"v": 5, "w": 1.5}', schema) == 1.0
    assert schema_reward('{"v": 5, "w": 1}', schema) == pytest.approx(
        0.3 * sentinel_frac({"v": 5, "w": SENTINEL})
    )


def test_broken_schema_or_bad_types_never_raise() -> None:
    assert schema_reward('{"a": 1}', {"type": 5}) == 0.0
    assert schema_reward('{"a": 1}', {"$ref": "https://example.invalid/x.json"}) == 0.0
    assert schema_reward(None, SCHEMA) == 0.0  # type: ignore[arg-type]
    assert schema_reward('{"a": 1}', None) == 0.0  # type: ignore[arg-type]


def test_lenient_loads_reports_positions() -> None:
    assert lenient_loads('{"a": [1, 2]}') == ({"a": [1, 2]}, [])
    assert lenient_loads('// c\n{/* c */ "a": 1}') == ({"a": 1}, [])
    value, errors = lenient_loads("{a: 'x', \"b\": [1,],}")
    assert value == {"a": "x", "b": [1]}
    assert errors == [1, 4, 16, 18]
    assert lenient_loads("[NaN]")[1] == [1]
    assert lenient_loads('"a\tb"') == ("a\tb", [2])
    for bad in ["", "[", "{'a' 1}", "tru", "[1 2]", "'unterminated", "/* x"]:
        with pytest.raises(DecodeFailure):
            lenient_loads(bad)


def test_depth_cap() -> None:
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert lenient_loads(ok)[1] == []
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(DecodeFailure):
        lenient_loads(deep)
    with pytest.raises(DecodeFailure):
        lenient_loads(deep[:-1] + ",]")  # the lenient path is capped too
    assert schema_reward(deep, {}) == 0.0


def test_truncation_to_first_mib() -> None:
    assert schema_reward('{"a": 1}' + " " * MAX_CHARS, SCHEMA) == 1.0
    padded = '{"a": 1, "b": ["' + "x" * MAX_CHARS + '"]}'
    assert schema_reward(padded, SCHEMA) == 0.0  # closing quote lies past the first MiB
    assert extract_json_text("```json\n" + "y" * (2 * MAX_CHARS)) == "y" * (MAX_CHARS - 8)


# ---------------------------------------------------------------- extraction rule (module doc, step 1)
EXTRACT_CASES: list[tuple[str, str, str]] = [
    ("bare: fence marker inside a string", '{"a": "use ```json blocks"}', '{"a": "use ```json blocks"}'),
    ("bare: escaped newline + marker in a string", '["x\\n```json\\n"]', '["x\\n```json\\n"]'),
    ("bare: marker after raw U+2028 in a string", '["\u2028```json"]', '["\u2028```json"]'),
    ("fenced: marker inside a string", '```json\n{"a": "use ```json"}\n```', '{"a": "use ```json"}'),
    ("fenced: pretty value of backticks", '```json\n{\n  "a": "```"\n}\n```', '{\n  "a": "```"\n}'),
    ("last json block wins", "a\n```json\n1\n```\nb\n```json\n2\n```\nc", "2"),
    ("json block beats a later untagged one", "```json\n1\n```\n```\n2\n```", "1"),
    ("untagged block when no json block", "see:\n```\n[1]\n```\nbye", "[1]"),
    ("last untagged block", "```\n1\n```\n```\n2\n```", "2"),
    ("other languages ignored", "```json\n1\n```\n```python\n2\n```", "1"),
    ("only another language: whole text", "```python\nx\n```", "```python\nx\n```"),
    ("info case-insensitive", "```JSON\n1\n```", "1"),
    ("json5 / jsonc info, extra words", "```json5\n1\n```\n```jsonc title=x\n2\n```", "2"),
    ("javascript is not json", "```javascript\n1\n```", "```javascript\n1\n```"),
    ("tilde fence", "~~~json\n1\n~~~", "1"),
    ("backtick closer does not close a tilde block", "~~~json\n1\n```\n~~~", "1\n```"),
    ("longer opener: shorter closer is body", "````json\n```\n1\n````", "```\n1"),
    ("a fence line with info never closes", "```json\n1\n```json\n2\n```", "1\n```json\n2"),
    ("indented fences (list item)", '1. Answer:\n    ```json\n    {"a": 1}\n    ```\n', '{"a": 1}'),
    ("CRLF line ends", '```json\r\n{"a": 1}\r\n```\r\n', '{"a": 1}'),
    ("unclosed block runs to the end", 'Here:\n```json\n{"a": 3}', '{"a": 3}'),
    ("one-line ```json ...``` is not a fence", '```json {"a": 1}```', '```json {"a": 1}```'),
    ("marker not at a line start opens nothing", 'Here: ```json\n{"a": 1}\n```', ""),
    ("prose around a bare document: whole text", 'Sure: {"a": 1} ok', 'Sure: {"a": 1} ok'),
    ("no fences: whole text stripped", '\n {"a": 1}\n', '{"a": 1}'),
]


@pytest.mark.parametrize(("name", "completion", "expected"), EXTRACT_CASES, ids=[c[0] for c in EXTRACT_CASES])
def test_extraction_rule(name: str, completion: str, expected: str) -> None:
    assert extract_json_text(completion) == expected, name


PRETTY = json.dumps({"a": 1, "b": ["use ```json blocks", "```", "~~~"]}, indent=2)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ('{"a": 1, "b": ["use ```json blocks"]}', 1.0),  # the issue's case: was 0.0
        (PRETTY, 1.0),
        ("```json\n" + PRETTY + "\n```", 1.0),
        ("Here it is:\n```\n" + PRETTY + "\n```\nAnything else?", 1.0),
        ("~~~json\n" + PRETTY + "\n~~~", 1.0),
        ('Here: {"a": 1}', 0.0),  # prose before a bare document: hard failure
        ('{"a": 1}\nHope this helps.', 0.3 * 9 / 25),  # prose after it: recovered error at 9 of 25
        ('// note\n{"a": 1}', 1.0),  # comments are free
    ],
)
def test_fence_markers_and_prose(completion: str, expected: float) -> None:
    assert schema_reward(completion, SCHEMA) == pytest.approx(expected, abs=1e-12)


def test_huge_numbers_never_raise() -> None:
    digits = sys.get_int_max_str_digits() or 4300
    for text in [
        "1" * (digits + 1),
        "[0x" + "f" * (digits + 10) + "]",
        "-" + "9" * MAX_CHARS,
        "[01" + "0" * digits + "]",
    ]:
        with pytest.raises(DecodeFailure):  # a DecodeFailure (callers catch it), never a bare ValueError
            lenient_loads(text)
        assert schema_reward(text, {}) == 0.0
    assert lenient_loads("[0x" + "f" * 100 + "]") == ([16**100 - 1], [1])  # a hex int under the limit
    assert schema_reward("1" * digits, {"type": "integer"}) == 1.0  # at the limit: json.loads takes it
    assert schema_reward("1e999999", {"type": "number", "minimum": 0}) == 1.0  # inf, as json.loads reads it
    assert schema_reward("-1e999999", {"type": "number", "minimum": 0}) == 0.0


# ---------------------------------------------------------------- tool calls
CALL = {"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "metric": True}}


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (json.dumps(CALL), 1.0),
        ("```json\n" + json.dumps(CALL, indent=2) + "\n```", 1.0),
        ("{name: 'get_weather', arguments: {city: 'Paris', days: 3, metric: true,},} // call", 1.0),
        ('{"name": "get_weather", "arguments": {"city": "Paris", "days": 3.0, "metric": true}}', 1.0),
        ('{"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "metric": 1}}', 0.0),
        ('{"name": "get_weather", "arguments": {"city": "paris", "days": 3, "metric": true}}', 0.0),
        ('{"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "metric": true, "x": 1}}', 0.0),
        ('{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}', 0.0),
        ('{"name": "get_weather", "arguments": ', 0.0),
        ("[]", 0.0),
        ("", 0.0),
    ],
)
def test_tool_call_reward(completion: str, expected: float) -> None:
    assert tool_call_reward(completion, CALL) == expected


def test_factories_follow_reward_contract() -> None:
    schema_fn, call_fn = make_schema_reward(), make_tool_call_reward()
    assert safe_score(schema_fn, '{"a": 1}', {"schema": SCHEMA}) == (1.0, None)
    assert safe_score(schema_fn, '{"a": 1}', {}) == (None, None)
    assert safe_score(call_fn, json.dumps(CALL), {"expected": CALL}) == (1.0, None)
    assert safe_score(call_fn, "nope", {"expected": CALL}) == (0.0, None)


# ---------------------------------------------------------------- properties
def _in_range(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


JSONISH = st.text(alphabet=list("{}[]\"',:/*\n\\ aAbtrue0123.-+eE#`json"), max_size=80)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), JSONISH))
def test_random_text_never_raises(text: str) -> None:
    assert _in_range(schema_reward(text, SCHEMA))
    assert _in_range(schema_reward(text, REF_SCHEMA))
    assert tool_call_reward(text, CALL) in (0.0, 1.0)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(JSON_VALUES)
def test_strict_json_round_trips(value: Any) -> None:
    text = json.dumps(value)
    assert lenient_loads(text) == (json.loads(text), [])
    assert schema_reward(text, {}) == 1.0
    assert _in_range(schema_reward(text, SCHEMA))
    if isinstance(value, dict):
        assert tool_call_reward(text, json.loads(text)) == 1.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000), st.sampled_from(["[", '{"k": ', "{k: "]), st.booleans())
def test_deep_nesting_never_raises(depth: int, opener: str, trailing_comma: bool) -> None:
    closer = "]" if opener == "[" else "}"
    text = opener * depth + ("1," if trailing_comma else "1") + closer * depth
    value = schema_reward(
        text,
        {
            "$ref": "#/$defs/n",
            "$defs": {
                "n": {
                    "anyOf": [
                        {"type": "integer"},
                        {"type": "array", "items": {"$ref": "#/$defs/n"}},
                        {"type": "object"},
                    ]
                }
            },
        },
    )
    assert _in_range(value)
    if depth > MAX_DEPTH:
        assert value == 0.0


def _big_inputs() -> list[str]:
    n = MAX_CHARS // 2
    return [
        "[" + ",".join(["1"] * (n // 2)) + "]",
        "[" + ",".join(["1"] * 99_000) + ",]",
        "[" + ",".join(["'ab'"] * 99_000) + "]",
        '{"b": [' + ",".join(['"x"'] * 99_000) + ", 2]}",
        "{" + ",".join(f"k{i}: {i}" for i in range(60_000)) + "}",
        "[" * MAX_CHARS,
        '"' + "a" * MAX_CHARS,
        "/*" + "*" * MAX_CHARS,
        "```json\n" + "// c\n" * (MAX_CHARS // 5),
        "x" * (2 * MAX_CHARS),
    ]


@pytest.mark.parametrize("index", range(len(_big_inputs())))
def test_one_mib_inputs_time_bound(index: int) -> None:
    text = _big_inputs()[index]
    for schema in (SCHEMA, {"type": "array", "items": {"type": "integer"}}):
        with cpu_guard(2.0, "schema_reward on 1 MB"):
            value = schema_reward(text, schema)
        assert _in_range(value)
    with cpu_guard(2.0, "tool_call_reward on 1 MB"):
        assert tool_call_reward(text, CALL) == 0.0


@settings(max_examples=5, deadline=None)
@given(st.text(alphabet="[]{}\"',:1 a", min_size=1, max_size=8))
def test_one_mib_random_repetition(unit: str) -> None:
    text = unit * (MAX_CHARS // len(unit) + 1)
    start = time.perf_counter()
    assert _in_range(schema_reward(text, SCHEMA))
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------- property: reward 1.0 iff jsonschema valid
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.0, -0.0, 1.0, 2.5, 2**53, float(2**53), 2**53 + 1, 1e300, 10**30])
    | st.sampled_from(["", "a", "b", "```json", "a ```json b", "\n```\n", "~~~", "\u2028```json", "é"])
)
DOCS = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
    max_leaves=12,
)
TYPES = ["null", "boolean", "integer", "number", "string", "array", "object"]


def _schemas(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    n = st.integers(0, 4)
    keys = st.lists(st.sampled_from("abc"), max_size=3, unique=True)
    array = st.fixed_dictionaries(
        {"type": st.just("array")},
        optional={"items": inner, "uniqueItems": st.booleans(), "minItems": n, "maxItems": n},
    )
    obj = st.fixed_dictionaries(
        {"type": st.just("object")},
        optional={
            "properties": st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
            "required": keys,
            "additionalProperties": st.booleans() | inner,
        },
    )
    return array | obj | st.fixed_dictionaries({}, optional={"uniqueItems": st.booleans(), "items": inner})


LEAF_SCHEMAS = (
    st.builds(lambda t: {"type": t}, st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), max_size=3))
    | st.builds(lambda v: {"enum": v}, st.lists(JSON_SCALARS, min_size=1, max_size=4))
    | st.builds(lambda v: {"const": v}, DOCS)
    | st.builds(
        lambda k, v: {k: v}, st.sampled_from(["minimum", "maximum"]), st.sampled_from([-2, 0, 1, 2.5])
    )
    | st.just({})
)
SCHEMAS = st.recursive(LEAF_SCHEMAS, _schemas, max_leaves=6)
DRAFTS = st.sampled_from(
    [None, "http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-04/schema"]
)
PROSE = st.sampled_from(["", "Here you go:\n", "Sure! Use ```json blocks, like this:\n"])
CLEAN_RENDERINGS = [
    lambda d, p: json.dumps(d),
    lambda d, p: json.dumps(d, indent=2, ensure_ascii=False),
    lambda d, p: f"{p}```json\n{json.dumps(d, indent=2)}\n```\nHope this helps.",
    lambda d, p: f"{p}```JSON\n{json.dumps(d, ensure_ascii=False)}\n```",
    lambda d, p: f"{p}```\n{json.dumps(d)}\n```",
    lambda d, p: f"{p}~~~json\n{json.dumps(d)}\n~~~",
    lambda d, p: f'Draft:\n```json\n{{"draft": [1, 2]}}\n```\n{p}Fixed:\n```json\n{json.dumps(d)}\n```',
    lambda d, p: f"{p}```json\n{json.dumps(d)}\n```\n```python\nprint('```json')\n```",
    lambda d, p: f"{p}1. The object:\n   ```json\n   {json.dumps(d)}\n   ```\n",
]


@settings(max_examples=400, deadline=None)
@given(DOCS, SCHEMAS, DRAFTS, st.sampled_from(range(len(CLEAN_RENDERINGS))), PROSE)
def test_reward_is_one_iff_jsonschema_valid(
    doc: Any, schema: Any, draft: str | None, how: int, p: str
) -> None:
    """For a cleanly presented strict-JSON document (bare, or in the block the extraction rule takes, with
    prose around the block): reward == 1.0 iff the stock jsonschema validator accepts the document; else
    0.0 (root error) or partial credit 0.3 * fraction in (0, 0.3). Prose around a *bare* document is not
    clean: it never scores 1.0, valid or not."""
    if draft is not None:
        schema = {**schema, "$schema": draft}
    valid = jsonschema.validators.validator_for(schema)(schema).is_valid(doc)
    reward = schema_reward(CLEAN_RENDERINGS[how](doc, p), schema)
    assert (reward == 1.0) == valid
    assert reward == 1.0 or 0.0 <= reward < 0.3
    for around in (f"Here you go: {json.dumps(doc)}", f"{json.dumps(doc)}\nHope this helps."):
        assert 0.0 <= schema_reward(around, schema) < 0.3
