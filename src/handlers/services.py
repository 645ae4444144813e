"""Builds the adapters Settings asks for; the only place that picks concrete classes."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from pydantic import SecretStr

from core.ports import ChatModel, SessionStore
from core.rate_limit import InProcessRateLimiter, RateLimiter
from core.redaction import process_redactor
from core.settings import Settings
from core.simulated_model import SimulatedChatModel
from core.turn_log import TurnLog

if TYPE_CHECKING:
    from core.dynamodb_table import DynamoDBTable

SECRET_MAX_AGE_SECONDS = 300

logger = logging.getLogger("sse_chat_agent")


def build_model(settings: Settings) -> ChatModel:
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
        api_key=partial(_api_key, settings),
        max_tokens=settings.max_tokens,
        first_token_timeout=settings.first_token_timeout_seconds,
        idle_timeout=settings.idle_timeout_seconds,
        reasoning_history=settings.reasoning_history,
        reasoning_effort=settings.reasoning_effort,
        redactor=process_redactor(),
    )


async def _api_key(settings: Settings) -> str | None:
    """OPENAI_API_KEY, else the OPENAI_API_KEY_SECRET secret."""
    return await configured_secret(settings.openai_api_key, settings.openai_api_key_secret)


async def access_key(settings: Settings) -> str | None:
    """ACCESS_KEY, else the ACCESS_KEY_SECRET secret; None: the URL is open."""
    return await configured_secret(settings.access_key, settings.access_key_secret)


async def configured_secret(value: SecretStr | None, secret_id: str | None) -> str | None:
    """A secret given directly, else read from Secrets Manager by id (lazily, cached, never
    logged); None when neither is configured."""
    if value is not None:
        return value.get_secret_value()
    if not secret_id:
        return None
    return await read_secret(secret_id)


async def read_secret(secret_id: str) -> str:
    """A Secrets Manager string through Powertools Parameters: fetched lazily, cached 5 min.

    The value joins the process's redactor before anything else sees it.
    """
    import anyio
    from aws_lambda_powertools.utilities import parameters

    value = await anyio.to_thread.run_sync(
        lambda: parameters.get_secret(secret_id, max_age=SECRET_MAX_AGE_SECONDS)
    )
    secret = str(value).strip()
    process_redactor().add(secret)
    return secret


def build_table(settings: Settings) -> DynamoDBTable | None:
    """The DynamoDB table and client every DynamoDB adapter shares; None off DynamoDB."""
    if settings.session_store != "dynamodb":
        return None
    from core.dynamodb_table import DynamoDBTable

    return DynamoDBTable(settings.sessions_table)


def build_rate_limiter(settings: Settings, table: DynamoDBTable | None) -> RateLimiter:
    """Counters in DynamoDB, shared by every instance, beside DynamoDB sessions (Lambda);
    in this process otherwise."""
    if table is not None:
        from core.dynamodb_rate_limit import DynamoDBRateLimiter

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
        from core.memory_store import MemorySessionStore

        return MemorySessionStore(ttl_seconds=settings.session_ttl_seconds)
    if table is not None:
        from core.dynamodb_store import DynamoDBSessionStore

        return DynamoDBSessionStore(
            table.name, ttl_seconds=settings.session_ttl_seconds, table=table
        )
    from core.sqlite_store import SQLiteSessionStore

    return SQLiteSessionStore(settings.sqlite_path, ttl_seconds=settings.session_ttl_seconds)


async def warm_up(settings: Settings, table: DynamoDBTable | None) -> None:
    """On Lambda, do at init what the first request would otherwise pay for.

    Init runs before the Web Adapter's readiness check passes, on the full CPU share, and
    ahead of any user's request: import botocore and build the DynamoDB client, import
    Powertools' Logger and Metrics, and fetch (and cache) the secrets. Off Lambda nothing
    happens, so `make serve` and the tests start as fast as before. A failure here is logged
    by type only and left for the request to meet (and report) again.
    """
    if not settings.on_lambda:
        return
    import anyio

    def imports_and_client() -> None:
        import aws_lambda_powertools.metrics  # noqa: F401  (the package brings Logger too)

        if table is not None:
            table.client()

    try:
        await anyio.to_thread.run_sync(imports_and_client)
        await _api_key(settings)
        await access_key(settings)
    except Exception as exc:
        logger.warning("warm-up incomplete: %s", type(exc).__name__)


def build_turn_log(settings: Settings, table: DynamoDBTable | None) -> TurnLog:
    """The turn log beside the sessions: same table, same file, or this process's memory."""
    ttl = settings.turn_events_ttl_seconds
    if table is not None:
        from core.turn_log_dynamodb import DynamoDBTurnLog

        return DynamoDBTurnLog(table, ttl_seconds=ttl)
    if settings.session_store == "sqlite":
        from core.turn_log_sqlite import SQLiteTurnLog

        return SQLiteTurnLog(settings.sqlite_path, ttl_seconds=ttl)
    from core.turn_log_memory import MemoryTurnLog

    return MemoryTurnLog(ttl_seconds=ttl)
