"""Typed errors in the domain's words, translated once: to HTTP statuses by one table in
`handlers.errors`, to `{"error"}` events mid-stream. They carry no HTTP codes.

ChatError
├── RequestError                 bad input, refused before any model call
│   ├── InvalidRequest           malformed or missing input
│   ├── InvalidSessionId
│   ├── UnknownRole
│   ├── PromptTooLong
│   ├── MessageTooLarge          one message over the store's item limit
│   ├── Unauthorized             no or wrong access key
│   ├── SessionNotFound          unknown or expired
│   ├── TurnNotFound             an event id naming no live or kept turn
│   ├── SessionBusy              another turn holds the session
│   └── RateLimited              with retry_after
├── SessionConflict              a sequence number was taken by a concurrent writer
├── ReplyTooLong                 the reply outgrew what one stored message may hold
├── TooManyToolCalls             the model asked for more tool calls in one step than allowed
├── StoreError                   the session store failed or kept throttling
└── UpstreamError                the model provider failed (an `{"error"}` event)
    ├── UpstreamAuthError        401/403: the provider rejected the API key
    ├── UpstreamRateLimited      429 after retries
    ├── UpstreamUnavailable      5xx or connection failure after retries
    ├── UpstreamRejected         other 4xx (bad request, unknown model, ...)
    │   └── ContextTooLong       the request is over the model's context window
    ├── UpstreamProtocolError    a chunk that is not JSON, a body that ends early
    └── UpstreamTimeout          no first token / a gap between chunks too long
        └── TurnDeadline         the turn ran out of time (TURN_TIMEOUT_SECONDS / Lambda)
"""

from __future__ import annotations


class ChatError(Exception):
    """Base of every error the project raises on purpose; `str(exc)` is safe to show users."""


class RequestError(ChatError):
    pass


class InvalidRequest(RequestError):
    pass


class InvalidSessionId(RequestError):
    def __init__(self) -> None:
        super().__init__("malformed session id")


class UnknownRole(RequestError):
    pass


class PromptTooLong(RequestError):
    pass


class MessageTooLarge(RequestError):
    """One message is over `core.sessions.rules.MAX_MESSAGE_BYTES` (a DynamoDB item: 400 KB)."""

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"message too large to store: {size_bytes} bytes (limit {limit_bytes})")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class Unauthorized(RequestError):
    pass


class SessionNotFound(RequestError):
    def __init__(self, session_id: str = "") -> None:
        super().__init__("unknown or expired session")
        self.session_id = session_id


class TurnNotFound(RequestError):
    def __init__(self) -> None:
        super().__init__("unknown or expired turn")


class SessionBusy(RequestError):
    def __init__(self) -> None:
        super().__init__("another turn is in progress on this session; retry when it ends")


class RateLimited(RequestError):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionConflict(ChatError):
    pass


class StoreError(ChatError):
    pass


class ReplyTooLong(ChatError):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"the reply grew past the {limit_bytes}-byte limit of a stored message; "
            "ask for a shorter answer"
        )


class TooManyToolCalls(ChatError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the model asked for more than {limit} tool calls in one step; ask a simpler question"
        )


class UpstreamError(ChatError):
    pass


class UpstreamAuthError(UpstreamError):
    pass


class UpstreamRateLimited(UpstreamError):
    pass


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamRejected(UpstreamError):
    pass


class ContextTooLong(UpstreamRejected):
    def __init__(self, message: str, *, window: int | None = None) -> None:
        super().__init__(message)
        self.window = window  # the context window the provider stated, if it did


class UpstreamProtocolError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class TurnDeadline(UpstreamTimeout):
    def __init__(self) -> None:
        super().__init__("time limit reached")
