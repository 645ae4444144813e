"""Session ids: only the server makes them, 128 random bits, URL-safe."""

from __future__ import annotations

import re
import secrets

from core.errors import InvalidSessionId

# token_urlsafe(16) is 16 random bytes in unpadded base64url: always 22 characters.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def check_session_id(value: str) -> str:
    if not _SESSION_ID.fullmatch(value):
        raise InvalidSessionId()
    return value
