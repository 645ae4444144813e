"""Tools the model may call: a registry of typed Python functions.

A tool's JSON schema comes from its signature (pydantic); bad arguments, exceptions and
timeouts go back to the model as `ok: false` results, never as a failed turn.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, get_type_hints

import anyio
from pydantic import BaseModel, ValidationError, create_model

from core.model.messages import ToolCall, ToolSpec

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
