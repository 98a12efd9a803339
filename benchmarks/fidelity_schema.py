"""How often ``schema_reward`` gives full credit where ``jsonschema`` disagrees, and its worst times.

``cases(n, seed)`` makes ``n`` fresh random cases from ``random.Random(seed)`` plus a fixed list of
adversarial ones. A case is a dict: ``kind``, ``completion`` (the document rendered as a model would:
bare, indented, in a ```` ```json ```` / ```` ``` ```` / ``~~~json`` block with prose around it, after a
draft block, before a ```` ```python ```` block, inside a list item, with ```` ```json ```` inside its
strings, or with prose around a bare document), ``schema`` (random: derived from the document and then,
half of the time, mutated; optionally with a ``$schema`` draft), ``doc`` (the Python value rendered) and
``clean``.

**Oracle** (:func:`oracle`): ``clean and jsonschema.validators.validator_for(schema)(schema).is_valid(doc)``
with the stock, unpatched ``jsonschema`` (no format checker; it raises on none of these cases). ``clean``
is True when the completion presents ``doc`` the way the extraction rule of :mod:`llmrl.rewards.schema`
takes a document (the whole completion, or the body of the last ```` ```json ```` block, or of the last
untagged block when there is no json block, with any prose outside the fences) and False for prose around
a *bare* document, which the reward's contract treats as a recovered error or a hard failure (never full
credit). :func:`disagreements` counts the cases where ``(module.schema_reward(completion, schema) == 1.0)
!= oracle(case)``, split into false full credit and missed full credit, per kind.

:func:`worst_times` times single ``schema_reward`` calls on 1 MiB adversarial completions (deep nesting,
huge numbers, many fences, long strings, 99k values under a recursive ``oneOf``, which the new reward
stops at its keyword budget, ...) and on ``uniqueItems`` arrays of 4k-50k objects (distinct objects, and
near-duplicates that differ only in their last member), plus the validator alone on those arrays (the
reward's 1 MiB / 100k-value caps reject the 50k arrays before validation). The old module's
``uniqueItems`` is jsonschema's quadratic one, so it is only run at 4k distinct objects
(``--old-unique-max``); larger old runs would take minutes to hours and are skipped (shown empty).

Run: ``python benchmarks/fidelity_schema.py [--n 2000] [--seed 0] [--json]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
from collections import Counter
from types import ModuleType
from typing import Any

from fidelity_common import BEFORE, module_at, print_table, seconds, use_source_tree

MIB = 1 << 20
UNIQUE_SIZES = (4000, 10_000, 20_000, 50_000)
DRAFTS = (None, "http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-04/schema#")
STRINGS = (
    "",
    "a",
    "b",
    "x y",
    "```json",
    "use ```json blocks",
    "\n```\n",
    "~~~",
    "```",
    "é",
    "\u2028```json",
)
NUMBERS = (0, 1, -1, 2, 1.0, -0.0, 0.0, 2.5, 2**53, float(2**53), 2**53 + 1, 1e300, 10**30)
PROSE = ("", "Here you go:\n", "Sure! I'll use ```json blocks:\n", "The object:\n\n")
RENDER = {  # kind -> (render(doc_text, pretty_text, prose), clean)
    "bare": (lambda d, p, s: d, True),
    "bare_indent": (lambda d, p, s: p, True),
    "fenced_json": (lambda d, p, s: f"{s}```json\n{p}\n```\nHope this helps.", True),
    "fenced_JSON": (lambda d, p, s: f"{s}```JSON\n{d}\n```", True),
    "fenced_plain": (lambda d, p, s: f"{s}```\n{p}\n```", True),
    "fenced_tilde": (lambda d, p, s: f"{s}~~~json\n{d}\n~~~", True),
    "several_blocks": (
        lambda d, p, s: f'Draft:\n```json\n{{"draft": [1]}}\n```\n{s}Fixed:\n```json\n{p}\n```',
        True,
    ),
    "json_then_python": (lambda d, p, s: f"{s}```json\n{d}\n```\n```python\nprint('```json')\n```", True),
    "list_item_fence": (lambda d, p, s: f"{s}1. Result:\n   ```json\n   {d}\n   ```\n", True),
    "unclosed_fence": (lambda d, p, s: f"{s}```json\n{p}", True),
    "prose_before_bare": (lambda d, p, s: f"Here you go: {d}", False),
    "prose_after_bare": (lambda d, p, s: f"{p}\nHope this helps.", False),
}


def _value(rng: random.Random, depth: int) -> Any:
    pick = rng.random()
    if depth <= 0 or pick < 0.45:
        return rng.choice([None, True, False, rng.choice(NUMBERS), rng.randint(-5, 5), rng.choice(STRINGS)])
    if pick < 0.7:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {k: _value(rng, depth - 1) for k in rng.sample("abcd", rng.randint(0, 3))}


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}[type(value)]


def _schema_for(doc: Any, rng: random.Random) -> dict[str, Any]:
    """A schema ``doc`` usually satisfies (types, properties, required, items, bounds, uniqueItems)."""
    kind = _type_of(doc)
    out: dict[str, Any] = {"type": kind if rng.random() < 0.8 else [kind, "null"]}
    if isinstance(doc, dict):
        out["properties"] = {k: _schema_for(v, rng) for k, v in doc.items() if rng.random() < 0.8}
        out["required"] = [k for k in doc if rng.random() < 0.5]
        out["additionalProperties"] = rng.random() < 0.7
    elif isinstance(doc, list):
        if doc and all(_type_of(x) == _type_of(doc[0]) for x in doc):
            out["items"] = (
                _schema_for(doc[0], rng) if isinstance(doc[0], dict | list) else {"type": _type_of(doc[0])}
            )
        out["uniqueItems"] = rng.random() < 0.6
        out.update(minItems=max(0, len(doc) - rng.randint(0, 2)), maxItems=len(doc) + rng.randint(0, 2))
    elif kind in ("integer", "number") and rng.random() < 0.5:
        out["minimum" if rng.random() < 0.5 else "maximum"] = doc + rng.choice([-1, 0, 1])
    elif rng.random() < 0.2:
        out = (
            {"enum": [doc, rng.choice(STRINGS), rng.choice(NUMBERS)]}
            if rng.random() < 0.5
            else {"const": doc}
        )
    return out


def _mutate(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``schema`` with one random constraint made stricter or changed (often, not always, invalidating)."""
    nodes: list[dict[str, Any]] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("properties", {}).values())
        if isinstance(node.get("items"), dict):
            stack.append(node["items"])
    node = rng.choice(nodes)
    change = rng.randrange(4)
    if change == 0:
        node["type"] = rng.choice(["null", "boolean", "integer", "number", "string", "array", "object"])
    elif change == 1:
        node["uniqueItems"] = True
    elif change == 2:
        node["required"] = [*node.get("required", []), rng.choice("abcd")]
    else:
        node["maxItems" if rng.random() < 0.5 else "minimum"] = rng.randint(0, 2)
    return schema


def _case(kind: str, doc: Any, schema: dict[str, Any], prose: str = "") -> dict[str, Any]:
    render, clean = RENDER[kind]
    text = json.dumps(doc, ensure_ascii=False)
    return {
        "kind": kind,
        "completion": render(text, json.dumps(doc, indent=2), prose),
        "schema": schema,
        "doc": doc,
        "clean": clean,
    }


UNIQUE_EDGES: list[list[Any]] = [
    [1, 1.0],
    [True, 1],
    [False, 0],
    [-0.0, 0],
    [2**53 + 1, float(2**53)],
    [2**53, float(2**53)],
    [{"a": 1}, {"a": 1.0}],
    [{"a": True}, {"a": 1}],
    [[1], [True], [1]],
    [[0], [False]],
    [1e300, 1e300],
    [{"a": [1, True]}, {"a": [1, 1]}],
    [{"a": {"b": [1.0]}}, {"a": {"b": [1]}}],
    [{"v": 2**60}, {"v": 2.0**60}],
    [{"v": 2**53 + 1}, {"v": 2.0**53}],
    ["a", "a"],
    ["```json", "```json"],
    [None, None],
    [{}, []],
    [[], {}, []],
    [{"a": 1, "b": 2}, {"b": 2, "a": 1}],
    [{"a": 1}, {"a": 1, "b": None}],
    [[[1, 2]], [[1, 2.0]]],
]


def adversarial_cases() -> list[dict[str, Any]]:
    """Fixed cases: the issue's string, fence markers in strings, edge ``uniqueItems`` arrays."""
    out = []
    for doc in ({"a": "use ```json blocks"}, {"a": ["```", "~~~", "\n```json\n"]}, ["```json"], "```json"):
        for kind in (
            "bare",
            "bare_indent",
            "fenced_json",
            "fenced_plain",
            "several_blocks",
            "prose_after_bare",
        ):
            out.append(_case(kind, doc, {"type": ["object", "array", "string"]}, "Use ```json:\n"))
    for items in UNIQUE_EDGES:
        for unique in (True, False):
            schema = {"type": "array", "uniqueItems": unique}
            out += [_case("bare", items, schema), _case("fenced_json", items, schema, "Here:\n")]
            out.append(_case("bare", {"xs": items}, {"properties": {"xs": schema}}))
    return out


def cases(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` random cases from ``random.Random(seed)``, then :func:`adversarial_cases`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        doc = _value(rng, 3) if rng.random() < 0.8 else [_value(rng, 1) for _ in range(rng.randint(2, 5))]
        schema = _schema_for(doc, rng)
        if rng.random() < 0.5:
            schema = _mutate(schema, rng)
        draft = rng.choice(DRAFTS)
        if draft is not None:
            schema["$schema"] = draft
        out.append(_case(rng.choice(list(RENDER)), doc, schema, rng.choice(PROSE)))
    return out + adversarial_cases()


def oracle(case: dict[str, Any]) -> bool:
    """Full credit is due: the document is presented cleanly and stock jsonschema accepts it."""
    import jsonschema

    schema = case["schema"]
    return bool(case["clean"]) and jsonschema.validators.validator_for(schema)(schema).is_valid(case["doc"])


def disagreements(module: ModuleType, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of ``(module.schema_reward(completion, schema) == 1.0) != oracle(case)`` (module docstring)."""
    false_full, missed, by_kind = 0, 0, Counter()
    for case in cases:
        full = module.schema_reward(case["completion"], case["schema"]) == 1.0
        due = oracle(case)
        if full != due:
            false_full += full
            missed += due
            by_kind[case["kind"]] += 1
    return {
        "cases": len(cases),
        "oracle_valid": sum(map(oracle, cases)),
        "disagreements": false_full + missed,
        "false_full_credit": false_full,
        "missed_full_credit": missed,
        "by_kind": dict(sorted(by_kind.items())),
    }


BRANCHES = [
    {"type": "integer"},
    {"type": "boolean"},
    {"type": "array", "items": {"$ref": "#/$defs/n"}},
    {"type": "object", "additionalProperties": {"$ref": "#/$defs/n"}},
]
REC = {"$defs": {"n": {"oneOf": BRANCHES}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}}
PLAIN = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "string"}}},
}


def adversarial_megabyte() -> dict[str, tuple[str, dict[str, Any]]]:
    """Name -> (about 1 MiB completion, schema)."""
    n = MIB
    return {
        "deep [[[ 1 MiB": ("[" * n, {"type": "array"}),
        'deep {"a": 1 MiB': ('{"a": ' * (n // 6), PLAIN),
        "120-deep arrays, 1 MiB string leaf, recursive oneOf": (
            '{"a": ' + "[" * 120 + '"' + "x" * (n - 500) + '"' + "]" * 120 + "}",
            REC,
        ),
        "99k floats, recursive oneOf": ('{"a": [' + ",".join(["1.5"] * 99_000) + "]}", REC),
        "60-deep arrays, 99k floats, recursive oneOf": (
            '{"a": ' + "[" * 60 + ",".join(["1.5"] * 99_000) + "]" * 60 + "}",
            REC,
        ),
        "int of 1 MiB digits": ("1" * n, {"type": "integer"}),
        "float of 1 MiB digits": ("1" * (n - 2) + ".5", {"type": "number"}),
        "hex int of 1 MiB digits": ("0x" + "f" * n, {"type": "integer"}),
        "[1e999999, ...] 1 MiB": ("[" + ",".join(["1e999999"] * (n // 9)) + "]", {"items": {"maximum": 0}}),
        "```json lines 1 MiB": ("```json\n" * (n // 8), PLAIN),
        "``` pairs 1 MiB": ("```\n{}\n```\n" * (n // 11), PLAIN),
        "```json inside a 1 MiB string": ('{"a": 1, "b": ["' + "```json " * (n // 8) + '"]}', PLAIN),
        "string of 1 MiB": ('{"a": 1, "b": ["' + "x" * (n - 20) + '"]}', PLAIN),
        "99k-item lenient array": ("[" + ",".join(["'ab'"] * 99_000) + ",]", {"items": {"type": "integer"}}),
        "99k strings vs pattern": (
            '{"a": 1, "b": [' + ",".join(['"abcdefgh1"'] * 99_000) + "]}",
            {"properties": {"b": {"items": {"pattern": "^[a-z]+$"}}}},
        ),
        "unterminated /* 1 MiB": ("[1, /*" + "*" * n, PLAIN),
    }


UNIQUE_SCHEMA = {"type": "array", "uniqueItems": True, "items": {"type": "object"}}


def unique_docs(size: int) -> dict[str, list[Any]]:
    """``uniqueItems`` arrays of ``size`` objects: distinct, and near-duplicates differing at the end."""
    tail = {"id": 7, "tags": ["t", "u"], "name": "item"}
    return {
        "objects": [{"id": i, "v": "x"} for i in range(size)],
        "near-duplicates": [{**tail, "v": i} for i in range(size)],
    }


def _validator_cls(module: ModuleType, schema: dict[str, Any]) -> Any:
    import jsonschema

    cls_for = getattr(module, "validator_class_for", None)  # the old module used jsonschema's own
    return cls_for(schema) if cls_for is not None else jsonschema.validators.validator_for(schema)


def _collected(fn: Any, *args: Any) -> None:
    fn(*args)
    gc.collect()


def _seconds(fn: Any, *args: Any) -> float:
    """Seconds of one call plus collecting the cyclic garbage it leaves (jsonschema's errors point at each
    other), so that no call pays for an earlier one; the live objects from before are frozen out of that
    collection (``gc.freeze``). A call under 1 s is timed 3 times and the least kept."""
    gc.collect()
    gc.freeze()
    try:
        first = seconds(_collected, fn, *args)
        if first >= 1.0:
            return first
        return min(first, seconds(_collected, fn, *args), seconds(_collected, fn, *args))
    finally:
        gc.unfreeze()


def worst_times(module: ModuleType, unique_max: int | None = None) -> dict[str, float]:
    """Seconds of one call per adversarial input (:func:`_seconds`); ``uniqueItems`` sizes above
    ``unique_max`` are skipped, and with ``unique_max`` set only distinct objects are run."""
    times = {
        name: _seconds(module.schema_reward, text, schema)
        for name, (text, schema) in adversarial_megabyte().items()
    }
    for size in UNIQUE_SIZES:
        if unique_max is not None and size > unique_max:
            continue
        for shape, doc in unique_docs(size).items():
            if unique_max is not None and shape != "objects":
                continue  # the old module: one quadratic run is enough
            text = json.dumps(doc)
            label = f"uniqueItems {size // 1000}k {shape} ({len(text) // 1000} KB)"
            times[f"{label}: schema_reward"] = _seconds(module.schema_reward, text, UNIQUE_SCHEMA)
            if unique_max is None:
                validator = _validator_cls(module, UNIQUE_SCHEMA)(UNIQUE_SCHEMA)
                times[f"{label}: validator only"] = _seconds(validator.is_valid, doc)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--old-unique-max",
        type=int,
        default=4000,
        help="largest uniqueItems size run on the old module (0: none)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    use_source_tree()
    from llmrl.rewards import schema as after

    before = module_at(BEFORE, "src/llmrl/rewards/schema.py")
    all_cases = cases(args.n, args.seed)
    result: dict[str, Any] = {
        "n": args.n,
        "seed": args.seed,
        "before_commit": BEFORE,
        "disagreements": {
            "before": disagreements(before, all_cases),
            "after": disagreements(after, all_cases),
        },
    }
    after_t = worst_times(after)
    before_t = worst_times(before, unique_max=args.old_unique_max)
    result["worst_times"] = [
        {"case": k, "before_s": before_t.get(k), "after_s": v} for k, v in after_t.items()
    ]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for side in ("before", "after"):
            print(side, json.dumps(result["disagreements"][side]))
        print_table(result["worst_times"], ["case", "before_s", "after_s"])
    return result


if __name__ == "__main__":
    main()
