"""Ids of sessions and of their turns: only the server makes them, URL-safe."""

from __future__ import annotations

import re
import secrets
import time

from core.errors import InvalidSessionId

# token_urlsafe(16) is 16 random bytes in unpadded base64url: always 22 characters.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def check_session_id(value: str) -> str:
    if not _SESSION_ID.fullmatch(value):
        raise InvalidSessionId()
    return value


def new_turn_id(now: float | None = None) -> str:
    """URL-safe, time-ordered (hex milliseconds, then 32 random bits): the latest sorts last."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:011x}{secrets.token_hex(4)}"
