"""One structured log line and one set of metrics per turn (Powertools), never per token.

Logged: request id, session id, model, tokens, time to first token, duration, outcome.
Never the prompt at INFO, never a key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.chat import Turn

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
