"""Logging: LOG_LEVEL for the project's own loggers only, every line through the redactor.

`logging.basicConfig(level=LOG_LEVEL)` would set the root logger, so at DEBUG botocore logged
request bodies (prompts) and signed headers (credentials), and a Secrets Manager response (the
API key). Here the root logger stays at WARNING, the AWS and HTTP client libraries never go
below WARNING whatever LOG_LEVEL says, and one redacting filter sits in front of every handler
the app writes through (its own, uvicorn's, Powertools').
"""

from __future__ import annotations

import logging

from core.redaction import RedactingFilter, Redactor

# The project's own loggers: the app's, the core's modules, the handlers' modules.
PROJECT_LOGGERS = ("sse_chat_agent", "core", "handlers")
# Powertools' structured logger is named after the service; TurnTelemetry sets its level.
POWERTOOLS_LOGGER = "sse-chat-agent"
# Libraries whose DEBUG output carries request bodies, headers or credentials.
QUIET_LOGGERS = (
    "botocore",
    "boto3",
    "urllib3",
    "s3transfer",
    "httpx",
    "httpcore",
    "mangum",
    "aws_lambda_powertools",
)
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
FORMAT = "%(levelname)s %(name)s %(message)s"

_handler: logging.Handler | None = None
_filter: RedactingFilter | None = None


def configure_logging(level: str, redactor: Redactor) -> None:
    """Set up logging once per process (calling again updates the level and the redactor)."""
    global _handler, _filter
    if _filter is None:
        _filter = RedactingFilter(redactor)
    _filter.redactor = redactor
    if _handler is None:
        # One handler, kept across calls: Powertools marks the root's handlers to skip its
        # records (it prints them itself), and a replaced handler would lose that mark.
        _handler = logging.StreamHandler()
        _handler.setFormatter(logging.Formatter(FORMAT))
        _handler.addFilter(_filter)
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
    root.setLevel(logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.level, logging.WARNING))
    for name in (POWERTOOLS_LOGGER, *UVICORN_LOGGERS):
        guard(logging.getLogger(name))


def guard(logger: logging.Logger) -> None:
    """Put the redacting filter on a logger and on each handler it has now."""
    if _filter is None:
        return
    for target in (logger, *logger.handlers):
        if _filter not in target.filters:
            target.addFilter(_filter)
