"""Tools the model may call: a registry of typed Python functions and the built-in tools.

A tool's JSON schema comes from its signature (pydantic); bad arguments, exceptions and
timeouts go back to the model as `ok: false` results, never as a failed turn.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, cast, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from pydantic import BaseModel, Field, ValidationError, create_model

from core.messages import ToolCall, ToolSpec

MAX_OUTPUT_CHARS = 8_000


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    ok: bool
    output: str


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    arguments: type[BaseModel]

    @property
    def spec(self) -> ToolSpec:
        """The tool as a model is told about it."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        return ToolSpec(name=self.name, description=self.description, parameters=schema)

    @classmethod
    def from_function(cls, function: Callable[..., Any], *, name: str | None = None) -> Tool:
        hints = get_type_hints(function, include_extras=True)
        fields: dict[str, Any] = {}
        for param in inspect.signature(function).parameters.values():
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (hints.get(param.name, Any), default)
        doc = inspect.getdoc(function) or ""
        tool_name = name or function.__name__
        return cls(
            name=tool_name,
            description=doc.split("\n\n")[0].replace("\n", " "),
            function=function,
            arguments=create_model(f"{tool_name}_arguments", **fields),
        )


class ToolRegistry:
    """The enabled tools, by name; `specs` is what the model is told about."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self.specs: tuple[ToolSpec, ...] = tuple(t.spec for t in self._tools.values())

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def spec_tokens(self, count: Callable[[str], int]) -> int:
        """What declaring the tools costs in the prompt, counted like the messages."""
        return sum(
            count(spec.name) + count(spec.description) + count(json.dumps(spec.parameters))
            for spec in self.specs
        )

    async def run(self, call: ToolCall, *, timeout: float) -> ToolOutcome:
        tool = self._tools.get(call.name)
        if tool is None:
            return ToolOutcome(False, f"unknown tool {call.name!r}; available: {self.names}")
        try:
            arguments = tool.arguments.model_validate_json(call.arguments or "{}")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return ToolOutcome(False, f"invalid arguments for {call.name}: {problems}")
        kwargs = dict(arguments)
        try:
            with anyio.fail_after(timeout):
                if inspect.iscoroutinefunction(tool.function):
                    result = await tool.function(**kwargs)
                else:
                    result = await anyio.to_thread.run_sync(
                        lambda: tool.function(**kwargs), abandon_on_cancel=True
                    )
        except TimeoutError:
            return ToolOutcome(False, f"{call.name} timed out after {timeout:g} s")
        except Exception as exc:
            return ToolOutcome(
                False, f"{call.name} failed: {exc}" if str(exc) else f"{call.name} failed"
            )
        output = result if isinstance(result, str) else str(result)
        if len(output) > MAX_OUTPUT_CHARS:
            output = output[:MAX_OUTPUT_CHARS] + "… (truncated)"
        return ToolOutcome(True, output)

    async def run_all(self, calls: Sequence[ToolCall], *, timeout: float) -> list[ToolOutcome]:
        """Run calls concurrently; results in the order of `calls`."""
        results: list[ToolOutcome] = [ToolOutcome(False, "not run")] * len(calls)

        async def one(index: int, call: ToolCall) -> None:
            results[index] = await self.run(call, timeout=timeout)

        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(one, index, call)
        return results


# ---- built-in tools -------------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _evaluate(node: ast.AST) -> float | int:
    """Walk the AST of an arithmetic expression; anything else is refused (no eval)."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return cast(float | int, node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e6):
            raise ValueError("exponent too large")
        return _BINARY[type(node.op)](left, right)  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))  # type: ignore[no-any-return]
    raise ValueError(f"unsupported expression element: {type(node).__name__}")


def calculator(
    expression: Annotated[
        str, Field(max_length=200, description="Arithmetic, e.g. '(2 + 3) * 4 / 7' or 'sqrt(2)'")
    ],
) -> str:
    """Evaluate an arithmetic expression exactly; use it for any calculation.

    Supports + - * / // % ** and sqrt, abs, round, floor, ceil, log, log10, sin, cos, tan, pi, e.
    """
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from exc
    try:
        value = _evaluate(tree)
    except ZeroDivisionError as exc:
        raise ValueError("division by zero") from exc
    except OverflowError as exc:
        raise ValueError("result too large") from exc
    if isinstance(value, complex):
        # (-8) ** 0.5 is complex in Python; this calculator answers in real numbers only.
        raise ValueError("the result is not a real number")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return f"{expression} = {value}"


def get_current_time(
    timezone: Annotated[
        str, Field(description="IANA time zone, e.g. 'Europe/Oslo' or 'America/New_York'")
    ] = "UTC",
) -> str:
    """Tell the current date and time in a time zone."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {timezone!r}; use an IANA name like Europe/Oslo"
        ) from exc
    now = datetime.now(zone)
    return f"{now:%A %Y-%m-%d %H:%M:%S} {now.tzname()} ({timezone})"


BUILTIN_TOOLS: dict[str, Callable[..., Any]] = {
    "calculator": calculator,
    "get_current_time": get_current_time,
}


def builtin_registry(names: Iterable[str]) -> ToolRegistry:
    """The registry for the TOOLS setting; an unknown name is a configuration error."""
    tools = []
    for name in names:
        if name not in BUILTIN_TOOLS:
            raise ValueError(
                f"TOOLS names an unknown tool {name!r}; known: {sorted(BUILTIN_TOOLS)}"
            )
        tools.append(Tool.from_function(BUILTIN_TOOLS[name]))
    return ToolRegistry(tools)
