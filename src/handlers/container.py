"""The composition root: every service the app uses, built from Settings in one place.

`build_services(settings)` picks the concrete adapters (model, sessions, turn log, quota,
tools, telemetry); tests pass fakes for any of them. `handlers.app.create_app` only wires what
this returns into routes and middleware.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr

from core.model.port import ChatModel
from core.model.simulated import SimulatedChatModel
from core.quota.memory import InProcessRateLimiter
from core.quota.port import RateLimiter
from core.redaction import process_redactor
from core.sessions.port import SessionStore
from core.settings import Settings
from core.tools.builtins import builtin_registry
from core.tools.registry import ToolRegistry
from core.turns.live import LogPolicy
from core.turns.log import TurnLog
from handlers.telemetry import TurnTelemetry

if TYPE_CHECKING:
    from core.aws.client import SecretsManagerClient
    from core.aws.dynamodb import DynamoDBTable

SECRET_MAX_AGE_SECONDS = 300

logger = logging.getLogger("sse_chat_agent")


@dataclass(slots=True)
class Services:
    """What the app runs on; closed together when the app stops."""

    settings: Settings
    model: ChatModel
    sessions: SessionStore
    turn_log: TurnLog
    rate_limiter: RateLimiter
    tools: ToolRegistry
    telemetry: TurnTelemetry
    log_policy: LogPolicy
    secrets: Secrets
    table: DynamoDBTable | None = None  # shared by the DynamoDB adapters; closed last

    async def aclose(self) -> None:
        await self.turn_log.aclose()
        await self.sessions.aclose()
        if self.table is not None:
            await self.table.aclose()
        aclose = getattr(self.model, "aclose", None)
        if aclose is not None:
            await aclose()
        self.secrets.close()


def build_services(
    settings: Settings,
    *,
    model: ChatModel | None = None,
    sessions: SessionStore | None = None,
    turn_log: TurnLog | None = None,
    rate_limiter: RateLimiter | None = None,
    tools: ToolRegistry | None = None,
    log_policy: LogPolicy | None = None,
    secrets: Secrets | None = None,
) -> Services:
    """Every service Settings asks for; an argument given (a fake, in tests) is used instead."""
    table = build_table(settings)
    secrets = secrets or Secrets(settings)
    if turn_log is None:
        # An injected store (a fake) gets the in-process log; otherwise the store's own kind.
        from core.turns.memory import MemoryTurnLog

        turn_log = (
            MemoryTurnLog(ttl_seconds=settings.turn_events_ttl_seconds)
            if sessions is not None
            else build_turn_log(settings, table)
        )
    return Services(
        settings=settings,
        model=model or build_model(settings, secrets),
        sessions=sessions or build_store(settings, table),
        turn_log=turn_log,
        rate_limiter=rate_limiter or build_rate_limiter(settings, table),
        tools=tools if tools is not None else builtin_registry(settings.tool_names),
        telemetry=TurnTelemetry(
            settings.log_level,
            # EMF metrics on Lambda (CloudWatch parses them from the log); off locally unless
            # asked.
            emit_metrics=settings.on_lambda or settings.emit_metrics,
            namespace=settings.powertools_metrics_namespace,
        ),
        log_policy=log_policy or LogPolicy(),
        secrets=secrets,
        table=table,
    )


def build_model(settings: Settings, secrets: Secrets) -> ChatModel:
    """The OpenAI adapter; with no key configured, the in-process simulated model (and then
    httpx is never imported: ~15 ms of a cold start)."""
    if settings.use_simulator:
        return SimulatedChatModel(token_delay_ms=settings.simulator_token_delay_ms)
    import httpx

    from handlers.openai_model import Model

    timeout = httpx.Timeout(
        connect=settings.connect_timeout_seconds, read=None, write=30.0, pool=30.0
    )
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    return Model(
        httpx.AsyncClient(timeout=timeout, limits=limits),
        base_url=settings.openai_base_url,
        model=settings.openai_model,
        api_key=secrets.api_key,
        max_tokens=settings.max_tokens,
        first_token_timeout=settings.first_token_timeout_seconds,
        idle_timeout=settings.idle_timeout_seconds,
        reasoning_history=settings.reasoning_history,
        reasoning_effort=settings.reasoning_effort,
        redactor=process_redactor(),
    )


class Secrets:
    """The two secrets, each given directly (a setting) or read by id (`read`: Secrets Manager
    unless a test gives another) and then kept SECRET_MAX_AGE_SECONDS, so a rotated secret is
    picked up within that time. A value read joins the process's redactor before anything else
    sees it. None: not configured."""

    def __init__(
        self, settings: Settings, read: Callable[[str], Awaitable[str]] | None = None
    ) -> None:
        self._settings = settings
        self._read = read or self._from_secrets_manager
        self._client: SecretsManagerClient | None = None
        self._kept: dict[str, tuple[str, float]] = {}  # secret id -> (value, read at)

    async def api_key(self) -> str | None:
        """OPENAI_API_KEY, else the OPENAI_API_KEY_SECRET secret."""
        return await self._get(self._settings.openai_api_key, self._settings.openai_api_key_secret)

    async def access_key(self) -> str | None:
        """ACCESS_KEY, else the ACCESS_KEY_SECRET secret; None: the URL is open."""
        return await self._get(self._settings.access_key, self._settings.access_key_secret)

    async def _get(self, value: SecretStr | None, secret_id: str | None) -> str | None:
        if value is not None:
            return value.get_secret_value()
        if not secret_id:
            return None
        kept = self._kept.get(secret_id)
        if kept is not None and time.monotonic() - kept[1] < SECRET_MAX_AGE_SECONDS:
            return kept[0]
        secret = (await self._read(secret_id)).strip()
        process_redactor().add(secret)
        self._kept[secret_id] = (secret, time.monotonic())
        return secret

    async def _from_secrets_manager(self, secret_id: str) -> str:
        """GetSecretValue, off the event loop (the client is core.aws's, like DynamoDB's)."""
        import anyio.to_thread

        from core.aws import config

        def read() -> str:
            if self._client is None:
                self._client = config.secrets_manager(self._settings)
            return self._client.get_secret_string(secret_id)

        return await anyio.to_thread.run_sync(read)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def build_table(settings: Settings) -> DynamoDBTable | None:
    """The DynamoDB table and client every DynamoDB adapter shares; None off DynamoDB."""
    if settings.session_store != "dynamodb":
        return None
    from core.aws.dynamodb import DynamoDBTable

    return DynamoDBTable(settings.sessions_table, settings=settings)


def build_rate_limiter(settings: Settings, table: DynamoDBTable | None) -> RateLimiter:
    """Counters in DynamoDB, shared by every instance, beside DynamoDB sessions (Lambda);
    in this process otherwise."""
    if table is not None:
        from core.quota.dynamodb import DynamoDBRateLimiter

        return DynamoDBRateLimiter(
            table,
            per_minute=settings.rate_limit_per_minute,
            daily_tokens=settings.daily_token_quota,
            global_daily_tokens=settings.global_daily_token_quota,
        )
    return InProcessRateLimiter(
        per_minute=settings.rate_limit_per_minute,
        daily_tokens=settings.daily_token_quota,
        global_daily_tokens=settings.global_daily_token_quota,
    )


def build_store(settings: Settings, table: DynamoDBTable | None) -> SessionStore:
    if settings.session_store == "memory":
        from core.sessions.memory import MemorySessionStore

        return MemorySessionStore(ttl_seconds=settings.session_ttl_seconds)
    if table is not None:
        from core.sessions.dynamodb import DynamoDBSessionStore

        return DynamoDBSessionStore(
            table.name, ttl_seconds=settings.session_ttl_seconds, table=table
        )
    from core.sessions.sqlite import SQLiteSessionStore

    return SQLiteSessionStore(settings.sqlite_path, ttl_seconds=settings.session_ttl_seconds)


async def warm_up(services: Services) -> None:
    """On Lambda, do at init what the first request would otherwise pay for.

    Init runs before the Web Adapter's readiness check passes, on the full CPU share, and
    ahead of any user's request: connect to DynamoDB (the client, TLS, the credentials), import
    Powertools' Logger and Metrics, and fetch (and cache) the secrets. Off Lambda nothing
    happens, so `make serve` and the tests start as fast as before. A failure here is logged
    by type only and left for the request to meet (and report) again.
    """
    if not services.settings.on_lambda:
        return
    # Imported on the event loop, not in a worker thread: nothing else runs during init
    # (uvicorn accepts no request before the lifespan has started), and imports in a thread
    # took ~25 ms longer (measured on the artifact, bench/cold_start.py).
    import aws_lambda_powertools.metrics  # noqa: F401  (the package brings Logger too)

    steps = [services.secrets.api_key, services.secrets.access_key]
    if services.table is not None:
        steps.insert(0, services.table.connect)
    for step in steps:  # each on its own: one failing leaves the others warm
        try:
            await step()
        except Exception as exc:
            logger.warning("warm-up incomplete: %s", type(exc).__name__)


def build_turn_log(settings: Settings, table: DynamoDBTable | None) -> TurnLog:
    """The turn log beside the sessions: same table, same file, or this process's memory."""
    ttl = settings.turn_events_ttl_seconds
    if table is not None:
        from core.turns.dynamodb import DynamoDBTurnLog

        return DynamoDBTurnLog(table, ttl_seconds=ttl)
    if settings.session_store == "sqlite":
        from core.turns.sqlite import SQLiteTurnLog

        return SQLiteTurnLog(settings.sqlite_path, ttl_seconds=ttl)
    from core.turns.memory import MemoryTurnLog

    return MemoryTurnLog(ttl_seconds=ttl)
