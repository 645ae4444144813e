"""Reading a turn from its log: replay, then follow by polling, wherever the producer runs.

A reader on another instance polls (consistent reads, `poll_seconds` apart). A producer that
has not renewed its lease for `lost_after_seconds` is declared lost by the first reader that
notices (a conditional write, one winner); that reader stores the partial reply recovered from
the log as `interrupted` and releases the session (its lease owner is the turn id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import anyio

from core.events import Done, Event, Failed, Reasoning, Token, ToolResult
from core.model.messages import Message
from core.sessions.port import SessionStore
from core.turns.codec import decode_event
from core.turns.live import INTERRUPTED, LogPolicy
from core.turns.log import TurnLog, TurnRead, visible

logger = logging.getLogger("sse_chat_agent")


def has_ended(read: TurnRead, after: int) -> bool:
    """The turn ended and nothing is left after position `after`."""
    record = read.record
    if record.state == "finished":
        return record.end is not None and after >= record.end
    if record.state == "lost":
        return record.end is not None and after > record.end  # the error event is end + 1
    return False


async def follow_log(
    log: TurnLog,
    sessions: SessionStore,
    first: TurnRead,
    *,
    after: int,
    policy: LogPolicy,
) -> AsyncIterator[tuple[int, Event]]:
    """`(position, event)` after `after`, starting from the read `first`, to the terminal one."""
    session_id, turn_id = first.record.session_id, first.record.turn_id
    position = after
    read: TurnRead | None = first
    while read is not None:
        read = visible(read)
        for number, encoded in read.events:
            if number <= position:
                continue
            position = number
            event = decode_event(encoded)
            yield number, event
            if isinstance(event, Done | Failed):
                return
        record = read.record
        if record.state == "finished":
            return
        if record.state == "lost":
            if record.end is not None and position <= record.end:
                yield record.end + 1, Failed(INTERRUPTED)
            return
        now = time.time()
        if now > record.lease_until + policy.lost_after_seconds:
            if await log.declare_lost(session_id, turn_id, now=now, end=position):
                logger.warning("a turn's producer was lost; its reply so far is stored")
                await recover_lost(log, sessions, session_id, turn_id, end=position)
        else:
            await anyio.sleep(policy.poll_seconds)
        read = await log.read(session_id, turn_id, after=position, now=time.time())


async def recover_lost(
    log: TurnLog, sessions: SessionStore, session_id: str, turn_id: str, *, end: int
) -> None:
    """Store the reply of a lost turn as its log holds it (text after the last tool result)
    as `interrupted`, and release the session; failures are logged, never raised."""
    try:
        read = await log.read(session_id, turn_id, after=0, now=time.time())
        text: list[str] = []
        thoughts: list[str] = []
        for number, encoded in read.events if read is not None else []:
            if number > end:
                break
            event = decode_event(encoded)
            if isinstance(event, ToolResult):
                text, thoughts = [], []
            elif isinstance(event, Token):
                text.append(event.text)
            elif isinstance(event, Reasoning):
                thoughts.append(event.text)
        now = time.time()
        session = await sessions.load(session_id, now=now, limit=1)
        reply = Message(
            role="assistant",
            content="".join(text),
            status="interrupted" if text or thoughts else "failed",
            created_at=now,
            reasoning="".join(thoughts),
        )
        await sessions.append(session_id, [reply], seq=session.next_seq, now=now)
    except Exception as exc:
        logger.warning("could not store a lost turn's reply: %s", type(exc).__name__)
    try:
        await sessions.unlock(session_id, owner=turn_id)
    except Exception as exc:
        logger.warning("could not release a lost turn's session: %s", type(exc).__name__)
