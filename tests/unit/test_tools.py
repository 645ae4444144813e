"""The tool registry and the built-in tools."""

from __future__ import annotations

import time

import anyio
import pytest

from core.model.messages import ToolCall
from core.model.openai import tool_json
from core.tools.builtins import builtin_registry, calculator, get_current_time
from core.tools.registry import Tool, ToolOutcome, ToolRegistry


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("6*7", "42"),
        ("(2 + 3) * 4 / 8", "2.5"),
        ("2**10", "1024"),
        ("sqrt(16)", "4"),
        ("-3 + 1", "-2"),
        ("7 // 2 + 7 % 2", "4"),
        ("2^3", "8"),
    ],
)
def test_calculator_evaluates_arithmetic(expression: str, expected: str) -> None:
    assert calculator(expression) == f"{expression} = {expected}"


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('id')",
        "open('/etc/passwd')",
        "x + 1",
        "1/0",
        "9**9**9",
        "(1).__class__",
        "lambda: 1",
        "[1, 2]",
        "'a' * 3",
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expression: str) -> None:
    with pytest.raises(ValueError):
        calculator(expression)


def test_current_time_in_a_zone() -> None:
    assert "(Europe/Oslo)" in get_current_time("Europe/Oslo")
    with pytest.raises(ValueError, match="unknown time zone"):
        get_current_time("Mars/Olympus")


def test_schema_comes_from_the_signature() -> None:
    [spec] = builtin_registry(["calculator"]).specs
    assert spec.name == "calculator" and spec.description.startswith("Evaluate")
    assert spec.parameters["required"] == ["expression"]
    assert spec.parameters["properties"]["expression"]["type"] == "string"
    assert builtin_registry(["get_current_time"]).specs[0].parameters.get("required") in (None, [])


def test_the_openai_adapter_declares_tools_as_functions() -> None:
    [spec] = builtin_registry(["calculator"]).specs
    assert tool_json(spec) == {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


def test_unknown_tool_name_in_settings_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown tool"):
        builtin_registry(["calculator", "rm_rf"])


async def test_bad_arguments_unknown_tools_and_exceptions_are_tool_errors() -> None:
    def boom(x: int) -> str:
        """Always fails."""
        raise RuntimeError("kaput")

    registry = ToolRegistry([Tool.from_function(calculator), Tool.from_function(boom)])
    malformed = await registry.run(ToolCall("1", "calculator", '{"expression": '), timeout=1)
    wrong_type = await registry.run(ToolCall("2", "boom", '{"x": "not a number"}'), timeout=1)
    unknown = await registry.run(ToolCall("3", "nope", "{}"), timeout=1)
    failing = await registry.run(ToolCall("4", "boom", '{"x": 1}'), timeout=1)
    assert not malformed.ok and "invalid arguments" in malformed.output
    assert not wrong_type.ok and "x" in wrong_type.output
    assert not unknown.ok and "unknown tool 'nope'" in unknown.output
    assert not failing.ok and failing.output == "boom failed: kaput"


async def test_a_slow_tool_times_out_and_parallel_calls_run_concurrently() -> None:
    async def slow(seconds: float) -> str:
        """Sleeps."""
        await anyio.sleep(seconds)
        return "slept"

    registry = ToolRegistry([Tool.from_function(slow)])
    start = time.monotonic()
    results = await registry.run_all(
        [ToolCall(str(i), "slow", '{"seconds": 0.3}') for i in range(5)]
        + [ToolCall("late", "slow", '{"seconds": 5}')],
        timeout=0.6,
    )
    elapsed = time.monotonic() - start
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert "timed out" in results[-1].output
    assert elapsed < 1.5  # 5 x 0.3 s in sequence would be 1.5 s, plus the 0.6 s timeout


async def test_sync_tools_run_off_the_event_loop() -> None:
    def blocking() -> str:
        """Blocks its thread."""
        time.sleep(0.2)
        return "done"

    registry = ToolRegistry([Tool.from_function(blocking)])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(10):
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        result = await registry.run(ToolCall("1", "blocking", "{}"), timeout=2)
    assert result.ok and ticks == 10


async def test_a_complex_result_is_a_clear_error_not_ok() -> None:
    """Reproduced: `(-8)**0.5` came back `ok: true` as a complex number."""
    registry = builtin_registry(["calculator"])
    outcome = await registry.run(
        ToolCall("c1", "calculator", '{"expression": "(-8)**0.5"}'), timeout=5
    )
    assert outcome == ToolOutcome(False, "calculator failed: the result is not a real number")
    assert calculator("8**0.5").startswith("8**0.5 = 2.828")
