"""Tests for the SchemaBench-style ``json_schema`` task (Schema RL, arXiv:2502.18878)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from llmrl.rewards.schema import schema_reward
from llmrl.tasks.base import TASKS, split_of
from llmrl.tasks.json_schema import KINDS, JsonSchemaTask


def _fence(doc: Any) -> str:
    return "```json\n" + json.dumps(doc, ensure_ascii=False) + "\n```"


def _deep_path(doc: Any) -> list[Any]:
    """Path to the deepest-first nested value (length >= 1) of ``doc``, following first children."""
    path: list[Any] = []
    node = doc
    while isinstance(node, dict | list) and node:
        key = next(iter(node)) if isinstance(node, dict) else 0
        path.append(key)
        node = node[key]
    return path


def _set(doc: Any, path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


@pytest.mark.parametrize("kind", KINDS)
def test_demonstrations_score_one(kind: str) -> None:
    task = JsonSchemaTask(kinds=[kind])
    samples = task.samples(200, seed=1)
    fns = task.reward_functions()
    for s in samples:
        assert s["kind"] == kind and s["task"] == "json_schema"
        assert "```json" in s["prompt"]
        jsonschema.Draft202012Validator(s["schema"]).validate(json.loads(s["answer"]))
        demo = task.demonstration(s)
        assert fns["schema"](demo, s) == 1.0
        assert task.is_correct(demo, s) and task.is_well_formed(demo, s)


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_nested_field_is_partial(kind: str) -> None:
    task = JsonSchemaTask(kinds=[kind])
    for s in task.samples(100, seed=2):
        gold = json.loads(s["answer"])
        path = _deep_path(gold)
        assert path
        _set(gold, path, None)  # no generated schema allows null: a wrong type in a nested field
        r = schema_reward(_fence(gold), s["schema"])
        assert 0.0 < r < 1.0
        assert task.is_well_formed(_fence(gold), s) and not task.is_correct(_fence(gold), s)
        # root-level errors score 0: wrong root type, missing required top-level key
        assert schema_reward(_fence([gold]), s["schema"]) == 0.0
        first_required = s["schema"]["required"][0]
        gold.pop(first_required)
        assert schema_reward(_fence(gold), s["schema"]) == 0.0


def test_garbage_is_not_well_formed() -> None:
    task = JsonSchemaTask()
    s = task.samples(1)[0]
    assert not task.is_well_formed("```json\n{]\n```", s)
    assert not task.is_correct("no json here", s)
    assert task.reward_functions()["schema"]("{]", s) == 0.0


def _const_path(schema: dict[str, Any]) -> list[str]:
    path: list[str] = []
    while "const" not in schema:
        key = next(iter(schema["properties"]))
        path.append(key)
        schema = schema["properties"][key]
    return path


def test_escape_requires_exact_escaping() -> None:
    task = JsonSchemaTask(kinds=["escape"])
    for s in task.samples(100, seed=3):
        gold = json.loads(s["answer"])
        path = _const_path(s["schema"])
        node = gold
        for key in path:
            node = node[key]
        text = node
        assert '"' in text and "\\" in text and text in s["prompt"]
        # unescaped: the raw text pasted between quotes
        marker = "__RAW_TEXT_MARKER__"
        _set(gold, path, marker)
        raw = _fence(gold).replace(f'"{marker}"', f'"{text}"')
        assert schema_reward(raw, s["schema"]) < 1.0 and not task.is_correct(raw, s)
        # altered: one character dropped, or quotes left unescaped-but-valid (backslashes doubled only)
        _set(gold, path, text[:-1])
        assert 0.0 < schema_reward(_fence(gold), s["schema"]) < 1.0
        _set(gold, path, text.replace("\\", "/"))
        assert not task.is_correct(_fence(gold), s)


def test_deterministic_disjoint_and_json_round_trip() -> None:
    task = JsonSchemaTask()
    train = task.samples(500, "train", seed=0)
    test = task.samples(100, "test", seed=0)
    assert train == JsonSchemaTask().samples(500, "train", seed=0)
    assert train != task.samples(500, "train", seed=1)
    train_prompts = {s["prompt"] for s in train}
    assert len(train_prompts) == 500 and not train_prompts & {s["prompt"] for s in test}
    assert all(split_of(s["prompt"]) == "test" for s in test)
    assert json.loads(json.dumps(train + test)) == train + test
    assert {s["kind"] for s in train} == set(KINDS)


def test_registered_and_options() -> None:
    assert isinstance(TASKS.get("json_schema")(kinds=["complex"]), JsonSchemaTask)
    for bad in ([], "complex", ["complex", "complex"], ["nope"], 3):
        with pytest.raises(ValueError):
            JsonSchemaTask(kinds=bad)  # type: ignore[arg-type]
    for depth in (-1, 5, 1.5, True):
        with pytest.raises(ValueError):
            JsonSchemaTask(max_depth=depth)  # type: ignore[arg-type]
    deep = JsonSchemaTask(kinds=["complex"], max_depth=0).samples(20)
    assert all(json.loads(s["answer"]) is not None for s in deep)
