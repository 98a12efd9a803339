"""Tools: the safe calculator, the sandboxed Python tool, call parsing in both formats, the tool_use environment."""

from __future__ import annotations

import pytest

from llmrl.core.errors import ConfigError
from llmrl.rollout.multiturn import ENVIRONMENTS, environment_factory
from llmrl.rollout.tools import (
    ToolCall,
    ToolError,
    ToolUseEnvironment,
    build_tools,
    calculate,
    execute,
    format_number,
    parse_tool_calls,
)
from llmrl.tasks import get_task

TASK = get_task("arithmetic", digits=2, ops=["+"])


@pytest.mark.parametrize("expr,value", [("2+3*4", 14), ("(1+2)/4", 0.75), ("7//2", 3), ("7%4", 3), ("-3**2", -9),
                                        ("2**10", 1024), (" 1.5*2 ", 3.0), ("+4--2", 6)])
def test_calculator_values(expr, value):
    assert calculate(expr) == value


@pytest.mark.parametrize("expr,why", [("__import__('os').system('ls')", "unsupported syntax"), ("1/0", "division by zero"),
                                      ("9**9**9", "more than 100 digits"), ("a+1", "unsupported syntax"),
                                      ("(-8)**0.5", "not a real number"), ("1+", "not an arithmetic expression"),
                                      ("1" * 201, "longer than 200"), ("[1][0]", "unsupported syntax"),
                                      ("True+1", "unsupported syntax"), ("1e300*1e10", "more than 100 digits")])
def test_calculator_refuses(expr, why):
    with pytest.raises(ToolError, match=why):
        calculate(expr)


def test_format_number():
    assert [format_number(v) for v in (5, 5.0, 2.5, 1 / 3, -7)] == ["5", "5", "2.5", "0.333333333333", "-7"]


def test_parse_chat_format():
    tools = build_tools(["calculator"])
    text = ('thinking <tool_call>\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n</tool_call>'
            '<tool_call>{bad json</tool_call><tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1\\"}"}'
            '</tool_call><tool_call>["x"]</tool_call><tool_call>{"name": "calculator", "arguments": 3}'
            '</tool_call><tool_call>{"name": "calculator", "arguments": {"expression": "4"}}')  # last one unclosed
    calls = parse_tool_calls(text, tools, "chat")
    assert [c.name for c in calls] == ["calculator", "?", "calculator", "?", "calculator", "calculator"]
    assert calls[0].arguments == {"expression": "2+3"} and calls[2].arguments == {"expression": "1"}
    assert "not valid JSON" in calls[1].error and "JSON object" in calls[3].error and "arguments" in calls[4].error
    assert calls[5].arguments == {"expression": "4"}
    assert parse_tool_calls("the answer is 5", tools, "chat") == []


def test_parse_tag_format_keeps_the_order():
    tools = build_tools(["calculator", "python"])
    calls = parse_tool_calls("a <python>print(1)</python> b <calc>2+3</calc> c <calc>4*5", tools, "tags")
    assert [(c.name, c.arguments) for c in calls] == [("python", {"code": "print(1)"}),
                                                      ("calculator", {"expression": "2+3"}),
                                                      ("calculator", {"expression": "4*5"})]
    with pytest.raises(ValueError, match="'chat' or 'tags'"):
        parse_tool_calls("x", tools, "xml")  # type: ignore[arg-type]


def test_execute_never_raises():
    tools = build_tools(["calculator"])
    assert execute(ToolCall("calculator", {"expression": "6*7"}), tools) == "42"
    assert execute(ToolCall("calculator", {"expression": "1/0"}), tools) == "error: division by zero"
    assert execute(ToolCall("calculator", {"expr": "1"}), tools).startswith("error: calculator needs a string")
    assert execute(ToolCall("search", {"q": "x"}), tools) == "error: unknown tool 'search'; tools: calculator"
    assert execute(ToolCall("?", error="bad"), tools) == "error: bad"
    assert len(execute(ToolCall("calculator", {"expression": "9" * 90}), tools, max_chars=20)) == 20


def test_python_tool_runs_in_the_sandbox():
    tools = build_tools(["python"], {"python": {"cpu_seconds": 1, "wall_seconds": 5}})
    assert execute(ToolCall("python", {"code": "print(6*7)"}), tools) == "42\n"
    out = execute(ToolCall("python", {"code": "print('a')\nraise SystemExit('boom')"}), tools)
    assert out.startswith("a\nerror (exit status 1): ") and "boom" in out
    out = execute(ToolCall("python", {"code": "while True: pass"}), tools)
    assert "stopped by the" in out  # the cpu (or wall) limit ended it; the caller goes on


def test_tool_use_environment_steps():
    env = ToolUseEnvironment(TASK, tools=["calculator"], format="chat", max_calls=2, malformed_reward=-0.5)
    assert env.tools == [build_tools(["calculator"])["calculator"].schema()]
    assert env.reset({"prompt": "What is 2+3?"}) == "What is 2+3?"
    r = env.step('<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call>'
                 '<tool_call>{"name": "nope", "arguments": {}}</tool_call>')
    assert not r.done and r.reward == -0.5 and r.info["malformed"] == 1
    assert r.observations == [{"role": "tool", "name": "calculator", "content": "5"},
                              {"role": "tool", "name": "nope", "content": "error: unknown tool 'nope'; tools: calculator"}]
    assert env.step("<tool_call>{oops</tool_call>").done  # the second turn with calls: max_calls reached
    assert env.reset({"prompt": "q"}) == "q" and env.step("5").done  # no call: the answer, the end


def test_tool_use_tags_and_hint():
    env = ToolUseEnvironment(TASK, tools=["calculator"], format="tags", hint=True)
    assert env.tools is None  # no schemas for the template in the tag format
    assert env.reset({"prompt": "2+3="}) == "2+3= Tools: <calc>expression</calc> (" + env.toolbox["calculator"].description + ")"
    msgs = env.reset({"prompt": [{"role": "user", "content": "2+3?"}]})
    assert msgs[0]["content"].startswith("2+3? Tools: <calc>")
    assert env.step("<calc>2+3</calc>").observations == [{"role": "tool", "name": "calculator", "content": "<result>5</result>"}]


def test_bad_tool_configuration_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"rollout.env_options: environment 'tool_use': tools: unknown tool 'calculater'"):
        environment_factory("tool_use", TASK, {"tools": ["calculater"]})
    with pytest.raises(ConfigError, match="rollout.env_options.*tool_options.python"):
        environment_factory("tool_use", TASK, {"tools": ["python"], "tool_options": {"python": {"cpu": 1}}})
    with pytest.raises(ConfigError, match="rollout.env_options.*unexpected keyword argument 'colour'"):
        environment_factory("tool_use", TASK, {"colour": "red"})
    with pytest.raises(ConfigError, match="rollout.env: unknown environment 'retyr'; did you mean 'retry'"):
        environment_factory("retyr", TASK)
    make = environment_factory("tool_use", TASK, {"format": "tags"})
    assert make() is not make() and isinstance(make(), ENVIRONMENTS.get("tool_use"))
