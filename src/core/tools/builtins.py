"""The built-in tools, named by the TOOLS setting: an exact calculator and the current time.

A new tool is a typed function here (its docstring and annotations become its schema) and an
entry in `BUILTIN_TOOLS`.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from core.tools.registry import Tool, ToolRegistry

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
