"""JSON-schema following in SchemaBench's three kinds (Schema RL: Lu et al., 2025, arXiv:2502.18878), generated offline.

Kinds (option ``kinds``, default all three; each sample draws one uniformly):

``complex``
    A random object schema with nested objects and arrays, ``$defs`` + ``$ref``, ``anyOf``/``oneOf``/
    ``allOf``, enums, required keys and min/max constraints. Prompt: a one-line description of the
    record, then the schema as indented JSON, asking for the object inside a ```` ```json ```` block.
``custom_format``
    Fields whose descriptions state formatting rules ("an ID of 3 capital letters, a dash and 4
    digits", "the version must be exactly 2"). The prompt shows the schema with the descriptions only;
    the validation schema (``sample["schema"]``) turns each rule into ``pattern``/``const``/
    ``multipleOf``/bounds.
``escape``
    A given text with quotes, backslashes, newlines, tabs and non-ASCII characters must be placed,
    exactly, into a nested string field. The prompt shows the raw text between ``<<<BEGIN`` and
    ``END>>>`` lines and the schema without the answer; the validation schema pins the field with
    ``const``, so only the correctly escaped string validates.

Every sample carries ``task``, ``prompt``, ``answer`` (gold JSON text, validated against ``schema``
with ``jsonschema`` at generation time), ``schema`` and ``kind``. Reward ``schema`` is
:func:`llmrl.rewards.schema.schema_reward`; correct iff it is 1.0; well formed iff the extracted text
decodes leniently.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmrl.rewards.base import RewardFn
from llmrl.rewards.schema import DecodeFailure, extract_json_text, lenient_loads, schema_reward
from llmrl.tasks.base import TASKS, Task

if TYPE_CHECKING:
    from llmrl.core.types import Sample

KINDS = ("complex", "custom_format", "escape")
_NOUNS = (
    "user order item address city title note price count score tag label owner status color size "
    "weight level rank code name team project region unit batch sensor device host port author book "
    "genre rating year amount currency account balance node path file folder release feature flag "
    "mode zone shelf room floor seat ticket route stop driver vehicle recipe ingredient planet"
).split()
_WORDS = (
    "alpha bravo cedar delta ember fjord gamma harbor indigo jade kiwi lotus maple nova onyx pearl "
    "quartz raven sierra tango umber violet willow xenon yarrow zephyr"
).split()
_ESCAPE_PIECES = (
    "\n", "\t", "\n\n", "café", "naïve", "日本語", "Ωmega", "😀", "it's", "a/b", "50%", "{\"k\": [1, 2]}",
    "tab\tinside", "line one\nline two", "\u00a9 2024", "x < y & z > w",
)
_QUOTE_PIECES = ('"quoted"', 'say "hi"', '""', 'the "best" one')
_BACKSLASH_PIECES = ("C:\\Users\\{w}", "back\\slash", "\\n is not a newline", "end\\", "\\\\server\\share")


def _keys(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct property names (single nouns or ``noun_noun``)."""
    out: list[str] = []
    while len(out) < n:
        a = rng.choice(_NOUNS)
        key = a if rng.random() < 0.6 else f"{a}_{rng.choice(_NOUNS)}"
        if key not in out:
            out.append(key)
    return out


def _word(rng: random.Random, lo: int, hi: int) -> str:
    """A word (or words) from :data:`_WORDS` of length within ``lo..hi``."""
    text = rng.choice(_WORDS)
    while len(text) < lo:
        text += " " + rng.choice(_WORDS)
    return text[:hi]


def _instance(schema: Mapping[str, Any], rng: random.Random, defs: Mapping[str, Any]) -> Any:
    """A random value valid for the (generator-shaped) ``schema``."""
    if "$ref" in schema:
        return _instance(defs[schema["$ref"].rsplit("/", 1)[-1]], rng, defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return _instance(rng.choice(schema.get("anyOf") or schema["oneOf"]), rng, defs)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            merged.update(sub)
        return _instance(merged, rng, defs)
    kind = schema["type"]
    if kind == "string":
        return _word(rng, schema.get("minLength", 0), schema.get("maxLength", 30))
    if kind == "integer":
        return rng.randint(schema.get("minimum", -100), schema.get("maximum", 100))
    if kind == "number":
        lo, hi = schema.get("minimum", -100), schema.get("maximum", 100)
        return min(max(round(rng.uniform(lo, hi), 2), lo), hi)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        n = rng.randint(schema.get("minItems", 0), schema.get("maxItems", 3))
        return [_instance(schema["items"], rng, defs) for _ in range(n)]
    props = schema["properties"]
    return {k: _instance(v, rng, defs) for k, v in props.items()}


def _leaf(rng: random.Random, key: str) -> dict[str, Any]:
    """A scalar schema: string/integer/number/boolean/enum with bounds."""
    pick = rng.randrange(5)
    if pick == 0:
        lo = rng.randint(1, 4)
        return {"type": "string", "minLength": lo, "maxLength": lo + rng.randint(4, 12)}
    if pick == 1:
        lo = rng.randint(-50, 50)
        return {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(0, 200)}
    if pick == 2:
        lo = rng.randint(0, 100)
        return {"type": "number", "minimum": lo, "maximum": lo + rng.randint(1, 1000)}
    if pick == 3:
        return {"type": "boolean"}
    return {"type": "string", "enum": rng.sample(_WORDS, rng.randint(2, 5))}


def _node(rng: random.Random, key: str, depth: int, defs: dict[str, Any]) -> dict[str, Any]:
    """A property schema: a leaf, or (while ``depth`` allows) an object, array, ref or composition."""
    pick = rng.randrange(10)
    if pick == 0 and depth > 0:
        return _object(rng, depth - 1, defs)
    if pick == 1:
        item = _object(rng, depth - 1, defs) if depth > 0 and rng.random() < 0.4 else _leaf(rng, key)
        lo = rng.randint(0, 2)
        return {"type": "array", "items": item, "minItems": lo, "maxItems": lo + rng.randint(1, 3)}
    if pick == 2 and defs:
        return {"$ref": f"#/$defs/{rng.choice(sorted(defs))}"}
    if pick == 3:
        return {"anyOf": [_leaf(rng, key), _leaf(rng, key)]}
    if pick == 4:  # branches of different JSON types: exactly one can match
        lo = rng.randint(1, 3)
        return {"oneOf": [{"type": "string", "minLength": lo, "maxLength": lo + 10},
                          {"type": "integer", "minimum": 0, "maximum": rng.randint(1, 999)}]}
    if pick == 5:
        lo = rng.randint(-20, 20)
        return {"allOf": [{"type": "integer", "minimum": lo}, {"maximum": lo + rng.randint(0, 50)}]}
    return _leaf(rng, key)


def _object(rng: random.Random, depth: int, defs: dict[str, Any], n: int | None = None) -> dict[str, Any]:
    """An object schema with 2..4 (or ``n``) properties, a random non-empty ``required`` subset and no
    additional properties."""
    keys = _keys(rng, n if n is not None else rng.randint(2, 4))
    props = {k: {**_node(rng, k, depth, defs), "description": f"The {k.replace('_', ' ')}."} for k in keys}
    required = sorted(rng.sample(keys, rng.randint(1, len(keys))), key=keys.index)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def _custom_fields(rng: random.Random) -> list[tuple[str, dict[str, Any], Any]]:
    """(description, constraint keywords, gold value) for each formatting rule, in random order."""
    n, m = rng.randint(2, 4), rng.randint(3, 6)
    sep, sep_name = rng.choice([("-", "a dash"), ("_", "an underscore"), (":", "a colon")])
    ident = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n))
    digits = "".join(rng.choice("0123456789") for _ in range(m))
    ver, word = rng.randint(1, 9), rng.choice(_WORDS)
    y, mo, d = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
    k = rng.choice([2, 3, 5, 10])
    lo = k * rng.randint(0, 20)
    hi = lo + k * rng.randint(1, 20)
    dom = rng.choice(["example.com", "corp.org", "mail.net"])
    low = "".join(rng.choice("abcdefghij") for _ in range(n))
    color = "#" + "".join(rng.choice("0123456789abcdef") for _ in range(6))
    fields: list[tuple[str, dict[str, Any], Any]] = [
        (f"An ID of {n} capital letters, {sep_name} and {m} digits.",
         {"type": "string", "pattern": f"^[A-Z]{{{n}}}{sep}[0-9]{{{m}}}$"}, f"{ident}{sep}{digits}"),
        (f"The version must be exactly {ver}.", {"type": "integer", "const": ver}, ver),
        (f'The status must be exactly "{word}".', {"type": "string", "const": word}, word),
        ("A date in YYYY-MM-DD format.",
         {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
         f"{y:04d}-{mo:02d}-{d:02d}"),
        ("A date in DD/MM/YYYY format.", {"type": "string", "pattern": "^[0-9]{2}/[0-9]{2}/[0-9]{4}$"},
         f"{d:02d}/{mo:02d}/{y:04d}"),
        (f"An integer that is a multiple of {k} between {lo} and {hi} inclusive.",
         {"type": "integer", "multipleOf": k, "minimum": lo, "maximum": hi}, lo + k * rng.randint(0, (hi - lo) // k)),
        (f"An email address at the domain {dom} (lowercase letters before the @).",
         {"type": "string", "pattern": f"^[a-z]+@{dom.replace('.', '[.]')}$"}, f"{rng.choice(_WORDS)}@{dom}"),
        (f"{n} lowercase letters followed by {m} digits, nothing else.",
         {"type": "string", "pattern": f"^[a-z]{{{n}}}[0-9]{{{m}}}$"}, low + digits),
        ("A hex color: '#' followed by 6 lowercase hexadecimal digits.",
         {"type": "string", "pattern": "^#[0-9a-f]{6}$"}, color),
        (f'A string that starts with "{word}_" followed by lowercase letters.',
         {"type": "string", "pattern": f"^{word}_[a-z]+$"}, f"{word}_{rng.choice(_WORDS)}"),
    ]
    return rng.sample(fields, rng.randint(3, 5))


def _escape_text(rng: random.Random) -> str:
    """A text with at least one quote, one backslash and some control / non-ASCII characters."""
    middle = [rng.choice(_QUOTE_PIECES), rng.choice(_BACKSLASH_PIECES).replace("{w}", rng.choice(_WORDS))]
    middle += rng.sample(_ESCAPE_PIECES, rng.randint(1, 4))
    rng.shuffle(middle)
    return " ".join([rng.choice(_WORDS).capitalize(), *middle, rng.choice(_WORDS) + "."])


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


_ASK = "Reply with the JSON object only, inside a ```json fenced code block."


@TASKS.register("json_schema")
class JsonSchemaTask(Task):
    """Produce a JSON object that validates against a schema (SchemaBench-style, see module doc)."""

    name = "json_schema"
    required_fields = {"schema": dict | bool}  # the reward validates against it; `answer` is for demonstrations

    def __init__(self, *, kinds: Sequence[str] = KINDS, max_depth: int = 2) -> None:
        if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not kinds:
            raise ValueError(f"json_schema: kinds must be a non-empty list drawn from {KINDS}, got {kinds!r}")
        bad = [k for k in kinds if k not in KINDS]
        if bad or len(set(kinds)) != len(kinds):
            raise ValueError(f"json_schema: kinds must be distinct values from {KINDS}, got {list(kinds)!r}")
        if not isinstance(max_depth, int) or isinstance(max_depth, bool) or not 0 <= max_depth <= 4:
            raise ValueError(f"json_schema: max_depth must be an int in 0..4, got {max_depth!r}")
        self.kinds = list(kinds)
        self.max_depth = max_depth

    # -- generation -------------------------------------------------------------------------------
    def _complex(self, rng: random.Random) -> tuple[str, dict[str, Any], Any]:
        defs: dict[str, Any] = {}
        for _ in range(rng.randint(0, 2)):
            defs[rng.choice(_NOUNS).capitalize()] = _object(rng, 0, {})
        topic = rng.choice(_NOUNS)
        schema: dict[str, Any] = {"title": topic.capitalize(), **_object(rng, self.max_depth, defs, rng.randint(3, 5))}
        if defs:
            schema["$defs"] = defs
        gold = _instance(schema, rng, defs)
        prompt = (
            f"Generate a JSON object describing a {topic} record with plausible values. It must validate "
            f"against this JSON Schema:\n{_dumps(schema, 2)}\n{_ASK}"
        )
        return prompt, schema, gold

    def _custom_format(self, rng: random.Random) -> tuple[str, dict[str, Any], Any]:
        fields = _custom_fields(rng)
        keys = _keys(rng, len(fields))
        nest = rng.randint(0, len(fields) - 1)  # fields from index ``nest`` on go into a sub-object
        sub_key = rng.choice(["details", "meta", "info", "record"])
        shown: dict[str, Any] = {}
        strict: dict[str, Any] = {}
        gold: dict[str, Any] = {}
        for i, (key, (desc, rule, value)) in enumerate(zip(keys, fields)):
            where_s, where_v, where_g = shown, strict, gold
            if i >= nest:
                where_s = shown.setdefault(sub_key, {})
                where_v = strict.setdefault(sub_key, {})
                where_g = gold.setdefault(sub_key, {})
            where_s[key] = {"type": rule["type"], "description": desc}
            where_v[key] = {**rule, "description": desc}
            where_g[key] = value

        def obj(props: dict[str, Any]) -> dict[str, Any]:
            props = {k: obj(v) if k == sub_key and "type" not in v else v for k, v in props.items()}
            return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

        schema, shown_schema = obj(strict), obj(shown)
        prompt = (
            f"Fill in a JSON object for a {rng.choice(_NOUNS)} following this JSON Schema. Each field's "
            "description states a formatting rule that its value must follow exactly.\n"
            f"{_dumps(shown_schema, 2)}\n{_ASK}"
        )
        return prompt, schema, gold

    def _escape(self, rng: random.Random) -> tuple[str, dict[str, Any], Any]:
        text = _escape_text(rng)
        path = _keys(rng, rng.randint(2, 3))
        inner: dict[str, Any] = {"type": "string", "const": text}
        shown: dict[str, Any] = {"type": "string", "description": "The text given above, exactly."}
        for key in reversed(path):
            extra = _keys(rng, 2)
            extra = [k for k in extra if k != key][:1]
            side = {k: _leaf(rng, k) for k in extra}
            inner = {"type": "object", "properties": {key: inner, **side}, "required": [key, *side]}
            shown = {"type": "object", "properties": {key: shown, **side}, "required": [key, *side]}
        gold = _instance(inner, rng, {})
        dotted = ".".join(path)
        prompt = (
            f"Produce a JSON object matching the schema below, where the field `{dotted}` holds exactly "
            "the text between the BEGIN and END marker lines (markers excluded), reproduced character for "
            "character, including quotes, backslashes, line breaks, tabs and non-ASCII characters.\n"
            f"<<<BEGIN\n{text}\nEND>>>\nSchema:\n{_dumps(shown, 2)}\n{_ASK}"
        )
        return prompt, inner, gold

    def make_sample(self, rng: random.Random) -> Sample:
        """Draw a kind, build (prompt, schema, gold) and check that the gold validates (retrying)."""
        import jsonschema  # here, not at module level: listing tasks stays fast

        kind = rng.choice(self.kinds)
        make = {"complex": self._complex, "custom_format": self._custom_format, "escape": self._escape}[kind]
        for _ in range(100):
            prompt, schema, gold = make(rng)
            validator = jsonschema.Draft202012Validator(schema)
            if validator.is_valid(gold):
                break
        else:  # pragma: no cover - the generators only build satisfiable schemas
            raise RuntimeError(f"json_schema: could not build a valid {kind} instance")
        return {"task": self.name, "prompt": prompt, "answer": _dumps(gold), "schema": schema, "kind": kind}

    # -- verification -----------------------------------------------------------------------------
    def reward_functions(self) -> dict[str, RewardFn]:
        """``schema``: the fine-grained validator reward in [0, 1]."""

        def schema_(completion: str, sample: Mapping[str, Any]) -> float:
            return schema_reward(completion, sample["schema"])

        return {"schema": schema_}

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        """The output validates fully (reward exactly 1.0)."""
        return schema_reward(completion, sample["schema"]) == 1.0

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        """The extracted JSON text decodes (leniently)."""
        if not isinstance(completion, str):
            return False
        try:
            lenient_loads(extract_json_text(completion))
        except DecodeFailure:
            return False
        return True

    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """The gold object in a ```` ```json ```` fenced block."""
        return "```json\n" + str(sample["answer"]) + "\n```"
