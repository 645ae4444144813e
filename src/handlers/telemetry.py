"""Telemetry: the process's logging, and one log line and one set of metrics per turn.

Logging: LOG_LEVEL for the project's own loggers only, every line through the redactor.
`logging.basicConfig(level=LOG_LEVEL)` would set the root logger, so at DEBUG botocore logged
request bodies (prompts) and signed headers (credentials), and a Secrets Manager response (the
API key). Here the root logger stays at WARNING, the AWS and HTTP client libraries never go
below WARNING whatever LOG_LEVEL says, and one redacting filter sits in front of every handler
the app writes through (its own, uvicorn's, Powertools').

Turns (Powertools), never per token: request id, session id, model, tokens, time to first
token, duration, outcome. Never the prompt at INFO, never a key.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from core.chat.turn import Turn
from core.redaction import RedactingFilter, Redactor

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics

SERVICE = "sse-chat-agent"
NAMESPACE = "SseChatAgent"


class TurnTelemetry:
    """Built lazily: Powertools costs ~50 ms to import, which the cold path does not need."""

    def __init__(
        self, log_level: str, *, emit_metrics: bool = False, namespace: str = NAMESPACE
    ) -> None:
        self._level = log_level.upper()
        self._emit_metrics = emit_metrics
        self._namespace = namespace
        self._logger: Logger | None = None
        self._metrics: Metrics | None = None

    @property
    def logger(self) -> Logger:
        if self._logger is None:
            from aws_lambda_powertools import Logger

            self._logger = Logger(service=SERVICE, level=self._level)
        return self._logger

    @property
    def metrics(self) -> Metrics:
        if self._metrics is None:
            from aws_lambda_powertools import Metrics

            self._metrics = Metrics(
                namespace=self._namespace,
                service=SERVICE,
            )
        return self._metrics

    def record(self, turn: Turn, *, request_id: str, duration: float) -> None:
        outcome = turn.outcome
        fields: dict[str, Any] = {
            "request_id": request_id,
            "session_id": turn.session_id,
            "model": turn.model.name,
            "outcome": outcome.status,
            "chunks_out": outcome.chunks_out,
            "prompt_tokens": outcome.usage.prompt_tokens,
            "completion_tokens": outcome.usage.completion_tokens,
            "time_to_first_token_ms": _ms(outcome.first_token_seconds),
            "duration_ms": _ms(duration),
        }
        if outcome.error:
            fields["error"] = outcome.error
            self.logger.warning("turn failed", extra=fields)
        else:
            self.logger.info("turn", extra=fields)
        if not self._emit_metrics:
            return
        from aws_lambda_powertools.metrics import MetricUnit

        metrics = self.metrics
        if outcome.status == "complete":
            metrics.add_metric("TurnsCompleted", MetricUnit.Count, 1)
        else:
            metrics.add_metric("TurnsFailed", MetricUnit.Count, 1)
        # Tokens as the provider bills them (or the estimate, when it reports none).
        metrics.add_metric("TokensOut", MetricUnit.Count, outcome.usage.completion_tokens)
        if outcome.first_token_seconds is not None:
            ttft = outcome.first_token_seconds * 1000
            metrics.add_metric("TimeToFirstToken", MetricUnit.Milliseconds, ttft)
        metrics.flush_metrics()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# ---- logging -------------------------------------------------------------------------------
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
