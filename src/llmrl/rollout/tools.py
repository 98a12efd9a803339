"""Tools for multi-turn episodes: calls parsed from the policy's turn, executed, results shown as ``tool`` messages.

Two call formats:

* ``chat`` — the Hermes / Qwen format of chat templates with tool support:
  ``<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call>``; the tools' JSON
  schemas are passed to ``apply_chat_template(tools=...)`` (the template shows them to the model) and each
  result is a ``{"role": "tool", "content": result}`` message (Qwen2.5 renders it as ``<tool_response>``).
* ``tags`` — a plain-tag format for tiny models without a chat template: ``<calc>2+3</calc>`` (calculator),
  ``<python>print(1)</python>`` (python); each result is a tool message ``<result>5</result>``, appended as
  text without a template.

A closing tag may be missing at the end of the turn (the policy stopped on it as a stop string, which the
sampler cuts from the text). Malformed calls (bad JSON, unknown tool, bad arguments) and failing tools give
an ``error: ...`` result, never an exception. Built in: ``calculator`` (arithmetic evaluated on the ``ast``,
no ``eval``) and ``python`` (the program runs in :func:`llmrl.rollout.sandbox.run_python`).
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llmrl.core.registry import Registry
from llmrl.core.types import Sample
from llmrl.rollout.multiturn import ENVIRONMENTS, Observation, StepResult


class ToolError(ValueError):
    """A tool could not do what it was asked (its message becomes the ``error: ...`` result)."""


class Tool:
    """A named tool: ``tool(arguments) -> result text``; ``tag`` and ``argument``: the plain-tag format
    ``<tag>...</tag>`` fills argument ``argument``."""

    name = ""
    tag = ""
    argument = ""
    description = ""

    def __call__(self, arguments: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        """The JSON schema (OpenAI / Hugging Face function format) the chat template shows."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": {self.argument: {"type": "string"}},
                           "required": [self.argument]}}}

    def _text(self, arguments: Mapping[str, Any]) -> str:
        value = arguments.get(self.argument)
        if not isinstance(value, str):
            raise ToolError(f"{self.name} needs a string argument {self.argument!r}, got {dict(arguments)!r}")
        return value


TOOLS: Registry[Callable[..., Tool]] = Registry("tool")
"""Name → tool class, built as ``cls(**options)`` (``rollout.env_options.tools`` / ``tool_options``)."""


# ------------------------------------------------------------------------------------------ calculator
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def calculate(expression: str, *, max_chars: int = 200, max_digits: int = 100) -> int | float:
    """The value of an arithmetic expression: numbers, ``+ - * / // % **``, unary ``+ -`` and parentheses,
    evaluated on its ``ast`` (no ``eval``). Raises :class:`ToolError` for anything else, division by zero,
    results over ``max_digits`` digits (and powers that would make them) or non-finite floats."""
    if len(expression) > max_chars:
        raise ToolError(f"expression longer than {max_chars} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from e
    limit = 10**max_digits

    def check(v: int | float) -> int | float:
        if isinstance(v, complex):  # a negative number to a fractional power
            raise ToolError("result is not a real number")
        if isinstance(v, float) and not math.isfinite(v):
            raise ToolError("result is not a finite number")
        if abs(v) >= limit:
            raise ToolError(f"result has more than {max_digits} digits")
        return v

    def ev(node: ast.AST) -> int | float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return check(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return check(_UNARY[type(node.op)](ev(node.operand)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(a) > 1 and abs(b) * math.log10(abs(a)) >= max_digits:
                raise ToolError(f"result has more than {max_digits} digits")
            try:
                return check(_BINARY[type(node.op)](a, b))
            except ZeroDivisionError:
                raise ToolError("division by zero") from None
            except OverflowError:
                raise ToolError("result is not a finite number") from None
        raise ToolError(f"unsupported syntax: {ast.dump(node)[:60]}")

    return ev(tree.body)


def format_number(value: int | float) -> str:
    """``5`` for 5 and 5.0; ``2.5`` for 2.5; floats with 12 significant digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value) if isinstance(value, int) else f"{value:.12g}"


@TOOLS.register("calculator")
class Calculator(Tool):
    """Arithmetic (:func:`calculate`): argument ``expression``; tag ``<calc>``."""

    name, tag, argument = "calculator", "calc", "expression"
    description = "Evaluate an arithmetic expression (+ - * / // % ** and parentheses) and return its value."

    def __init__(self, *, max_chars: int = 200, max_digits: int = 100) -> None:
        self.max_chars, self.max_digits = max_chars, max_digits

    def __call__(self, arguments: Mapping[str, Any]) -> str:
        return format_number(calculate(self._text(arguments), max_chars=self.max_chars, max_digits=self.max_digits))


@TOOLS.register("python")
class PythonTool(Tool):
    """Runs a Python program in the sandbox (:func:`llmrl.rollout.sandbox.run_python`) and returns its standard
    output, with the end of its standard error and the limit that stopped it when it failed. Argument
    ``code``; tag ``<python>``. ``cpu_seconds`` / ``wall_seconds`` / ``memory_mb``: the sandbox limits."""

    name, tag, argument = "python", "python", "code"
    description = "Run a Python program and return what it prints."

    def __init__(self, *, cpu_seconds: float = 2.0, wall_seconds: float = 5.0, memory_mb: int = 256) -> None:
        from llmrl.rollout.sandbox import Limits  # imported only where this tool is used

        self.limits = Limits(cpu_seconds=cpu_seconds, wall_seconds=wall_seconds, memory_mb=memory_mb)

    def __call__(self, arguments: Mapping[str, Any]) -> str:
        from llmrl.rollout.sandbox import run_python

        res = run_python(self._text(arguments), limits=self.limits)
        if res.returncode == 0 and res.limit is None:
            return res.stdout
        why = f" (stopped by the {res.limit} limit)" if res.limit else f" (exit status {res.returncode})"
        return f"{res.stdout}error{why}: {res.stderr.strip()[-300:]}"


# ------------------------------------------------------------------------------------- parsing
@dataclass
class ToolCall:
    """One parsed call: the tool's name and arguments, or why it is malformed (``error``)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


_CHAT_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)


def _chat_call(body: str) -> ToolCall:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        return ToolCall("?", error=f"tool call is not valid JSON ({e.msg} at character {e.pos})")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return ToolCall("?", error='a tool call is a JSON object {"name": ..., "arguments": {...}}')
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            args = None
    if not isinstance(args, dict):
        return ToolCall(obj["name"], error="tool call arguments must be a JSON object")
    return ToolCall(obj["name"], args)


def parse_tool_calls(text: str, tools: Mapping[str, Tool], fmt: Literal["chat", "tags"]) -> list[ToolCall]:
    """The tool calls of one policy turn, in order (see the module docstring for the formats)."""
    if fmt == "chat":
        return [_chat_call(m.group(1).strip()) for m in _CHAT_CALL.finditer(text)]
    if fmt != "tags":
        raise ValueError(f"tool call format must be 'chat' or 'tags', got {fmt!r}")
    found: list[tuple[int, ToolCall]] = []
    for tool in tools.values():
        pattern = re.compile(rf"<{re.escape(tool.tag)}>(.*?)(?:</{re.escape(tool.tag)}>|\Z)", re.DOTALL)
        found += [(m.start(), ToolCall(tool.name, {tool.argument: m.group(1)})) for m in pattern.finditer(text)]
    return [c for _, c in sorted(found, key=lambda x: x[0])]


def execute(call: ToolCall, tools: Mapping[str, Tool], max_chars: int = 1000) -> str:
    """The result text of a call (at most ``max_chars`` characters): the tool's output, or ``error: ...`` for a
    malformed call, an unknown tool or a tool that failed. Never raises for anything the policy wrote."""
    if call.error is not None:
        out = f"error: {call.error}"
    elif call.name not in tools:
        out = f"error: unknown tool {call.name!r}; tools: {', '.join(sorted(tools))}"
    else:
        try:
            out = tools[call.name](call.arguments)
        except ToolError as e:
            out = f"error: {e}"
        except Exception as e:  # a tool's own bug must not end the training run
            out = f"error: {type(e).__name__}: {e}"
    return out if len(out) <= max_chars else out[: max_chars - 3] + "..."


def build_tools(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Tool]:
    """``{name: TOOLS[name](**options[name])}``; unknown names and options fail with the valid ones."""
    options = dict(options or {})
    unknown = set(options) - set(names)
    if unknown:
        raise ValueError(f"tool_options for tools not in tools: {sorted(unknown)}")
    out: dict[str, Tool] = {}
    for name in names:
        try:
            cls = TOOLS.get(name)
        except KeyError as e:
            raise ValueError(f"tools: {e.args[0]}") from None
        try:
            out[name] = cls(**dict(options.get(name, {})))
        except TypeError as e:
            raise ValueError(f"tool_options.{name}: {e}") from None
    if not out:
        raise ValueError("tools: give at least one tool")
    return out


# ------------------------------------------------------------------------------------- environment
@ENVIRONMENTS.register("tool_use")
class ToolUseEnvironment:
    """A task solved with tools: every policy turn that makes tool calls gets their results (tool messages)
    and another turn; the first turn without a call is the answer and ends the episode (the task's reward
    judges it). ``tools``: names in :data:`TOOLS`; ``format``: ``chat`` or ``tags`` (module docstring);
    ``max_calls``: turns with calls before the episode is ended; ``malformed_reward``: the environment's
    reward per malformed call or unknown tool (e.g. −0.1; 0 = none); ``hint``: append a one-line description
    of the tag format to the prompt (tags format); ``result_chars``: longest result shown."""

    def __init__(self, task: Any, *, tools: Sequence[str] = ("calculator",), format: str = "chat",
                 tool_options: Mapping[str, Mapping[str, Any]] | None = None, max_calls: int = 4,
                 malformed_reward: float = 0.0, hint: bool = False, result_chars: int = 1000) -> None:
        if format not in ("chat", "tags"):
            raise ValueError(f"format must be 'chat' or 'tags', got {format!r}")
        if isinstance(tools, str):
            raise ValueError(f"tools must be a list of names, got the string {tools!r}")
        if max_calls < 1 or result_chars < 16:
            raise ValueError(f"max_calls must be >= 1 and result_chars >= 16, got {max_calls}, {result_chars}")
        self.task, self.format = task, format
        self.toolbox = build_tools(list(tools), tool_options)
        self.tools = [t.schema() for t in self.toolbox.values()] if format == "chat" else None
        self.max_calls, self.malformed_reward = max_calls, float(malformed_reward)
        self.hint, self.result_chars = hint, result_chars
        self.calls = 0

    def hint_text(self) -> str:
        """The one-line tool description ``hint`` appends (tags format)."""
        return " Tools: " + "; ".join(f"<{t.tag}>{t.argument}</{t.tag}> ({t.description})"
                                      for t in self.toolbox.values())

    def reset(self, sample: Sample) -> Observation:
        self.calls = 0
        prompt = sample["prompt"]
        if not self.hint:
            return prompt
        if isinstance(prompt, str):
            return prompt + self.hint_text()
        msgs = [dict(m) for m in prompt]
        msgs[-1]["content"] = str(msgs[-1]["content"]) + self.hint_text()
        return msgs

    def step(self, action: str) -> StepResult:
        calls = parse_tool_calls(action, self.toolbox, self.format)  # type: ignore[arg-type]
        if not calls:
            return StepResult(done=True, info={"calls": 0})
        self.calls += 1
        results = [execute(c, self.toolbox, self.result_chars) for c in calls]
        bad = sum(c.error is not None or c.name not in self.toolbox for c in calls)
        wrap = "<result>{}</result>" if self.format == "tags" else "{}"
        obs = [{"role": "tool", "name": c.name, "content": wrap.format(r)} for c, r in zip(calls, results)]
        return StepResult(observations=obs, reward=self.malformed_reward * bad, done=self.calls >= self.max_calls,
                          info={"calls": len(calls), "malformed": bad, "results": results})
