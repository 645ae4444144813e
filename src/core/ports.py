"""The two ports of the core: a streaming chat model and a session store."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.events import Reasoning, Token, ToolCallStarted, Usage
from core.messages import Message, Page, Session, ToolCall, ToolSpec


@dataclass(frozen=True, slots=True)
class Completion:
    """The model's step ended; tool calls are whole here, arguments assembled."""

    finish_reason: str
    usage: Usage | None = field(default_factory=Usage)  # None: the provider reported none
    tool_calls: tuple[ToolCall, ...] = ()


# A model streams the turn's own events (text, reasoning, a tool call starting), then ends its
# step with a Completion, which only the turn sees.
ModelEvent = Token | Reasoning | ToolCallStarted | Completion


class ChatModel(Protocol):
    """A streaming chat model. Failures raise `core.errors.UpstreamError` subclasses."""

    @property
    def name(self) -> str: ...

    def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        deadline: float | None = None,
    ) -> AsyncGenerator[ModelEvent, None]:
        """Stream one model step; ends with exactly one `Completion`.

        `deadline` is a `time.monotonic()` instant: no wait may run past it (`UpstreamTimeout`).
        """
        ...


def is_simulated(model: object) -> bool:
    """True for a stand-in that is no real model (it sets `simulated = True`): clients are told."""
    return getattr(model, "simulated", False) is True


class SessionStore(Protocol):
    """Conversation storage: one record per message, appended under a sequence number.

    Invariants every adapter keeps:
    - `append` is atomic (all messages or none) and conditional: a taken sequence number
      raises `SessionConflict`, so concurrent writers never overwrite each other.
    - `lock` is a lease: a crashed holder blocks the session only until `lease_seconds` pass.
    - expired sessions (and expired message records) are invisible on read, even where the
      backing store deletes them late.
    """

    async def create(
        self,
        session_id: str,
        *,
        title: str,
        now: float,
        owner: str | None = None,
        lease_seconds: float = 0.0,
    ) -> None:
        """A new, empty session; with `owner`, its turn lease already taken (as `lock` would,
        in the same write); `SessionConflict` if the id is live."""
        ...

    async def load(self, session_id: str, *, now: float, limit: int | None = None) -> Session:
        """The session with its last `limit` messages, oldest first; `SessionNotFound`."""
        ...

    async def page(
        self, session_id: str, *, now: float, limit: int, before: int | None = None
    ) -> Page:
        """The newest `limit` live messages stored before sequence `before` (all when None),
        oldest first, with the cursor of the page before; `SessionNotFound`."""
        ...

    async def lock(self, session_id: str, *, owner: str, now: float, lease_seconds: float) -> None:
        """Take the session's turn lease; `SessionBusy` if another owner holds it."""
        ...

    async def unlock(self, session_id: str, *, owner: str) -> None: ...

    async def append(
        self, session_id: str, messages: Sequence[Message], *, seq: int, now: float
    ) -> int:
        """Store `messages` at `seq`, `seq + 1`, ...; return the next free sequence."""
        ...

    async def delete(self, session_id: str, *, now: float) -> None:
        """Forget the session and its messages; `SessionNotFound` if unknown or expired."""
        ...

    async def aclose(self) -> None: ...
