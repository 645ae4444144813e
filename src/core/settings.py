"""All configuration, from the environment. Field names are the env vars of template.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


class Settings(BaseSettings):
    """Explicit arguments beat the environment: `Settings(openai_model="x")`."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_file=None)

    # The model.
    openai_api_key: SecretStr | None = None
    openai_api_key_secret: str | None = Field(
        default=None, description="Secrets Manager id of the API key (used on Lambda)"
    )
    openai_base_url: str = DEFAULT_OPENAI_BASE_URL
    openai_model: str = "gpt-4.1-mini"
    system_prompt: str = "You are a helpful, concise assistant."
    max_tokens: int = Field(default=1024, ge=1)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    first_token_timeout_seconds: float = Field(default=60.0, gt=0)
    reasoning_history: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="when to send stored reasoning back to the provider (reasoning_content)",
    )
    reasoning_effort: str = Field(default="", description="sent as reasoning_effort when set")
    idle_timeout_seconds: float = Field(default=30.0, gt=0)

    # Sessions.
    session_store: Literal["sqlite", "dynamodb", "memory"] = "sqlite"
    sessions_table: str = "sse-chat-sessions"
    sqlite_path: str = ".data/sessions.db"
    session_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    turn_events_ttl_seconds: int = Field(
        default=3600, ge=60, description="how long a turn's events stay resumable after it ends"
    )
    history_messages: int = Field(
        default=200, ge=2, description="most messages loaded as history (then CONTEXT_TOKENS)"
    )
    context_tokens: int = Field(
        default=0, ge=0, description="the model's context window in tokens; 0: by model family"
    )

    # Tools and roles.
    tools: str = "calculator,get_current_time"
    max_tool_steps: int = Field(default=5, ge=0)
    tool_timeout_seconds: float = Field(default=10.0, gt=0)

    # Limits and safety.
    max_prompt_chars: int = Field(default=16_000, ge=1)
    turn_timeout_seconds: float = Field(default=120.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0, le=15)
    access_key: SecretStr | None = None
    access_key_secret: str | None = Field(
        default=None, description="Secrets Manager id of ACCESS_KEY (used on Lambda)"
    )
    rate_limit_per_minute: int = Field(default=30, ge=0, description="0 turns the limit off")
    daily_token_quota: int = Field(default=0, ge=0, description="0 turns the quota off")
    global_daily_token_quota: int = Field(
        default=0, ge=0, description="tokens per UTC day across all clients; 0 turns it off"
    )
    send_timeout_seconds: float = Field(
        default=30.0, gt=0, description="a client whose send is blocked this long is dropped"
    )
    max_body_bytes: int | None = Field(
        default=None, ge=1024, description="request body limit; default derived from the prompt"
    )

    # HTTP.
    cors_allow_origins: str = ""
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    forwarded_allow_ips: str = Field(
        default="", description="proxies whose X-Forwarded-For is trusted; empty: none"
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a new connection must send its request head in time"
    )
    limit_concurrency: int = Field(
        default=1000, ge=1, description="connections + requests at once before 503s (uvicorn)"
    )
    emit_metrics: bool = Field(default=False, description="EMF metrics off Lambda too")
    powertools_metrics_namespace: str = "SseChatAgent"
    # Set by Lambda itself: where its request context and deadline headers can be trusted.
    aws_lambda_function_name: str | None = None

    # AWS credentials (Lambda sets all three), also redacted wherever they might show.
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    # Where the AWS clients connect (core.aws.config, the SDKs' own variables). What is
    # not set here comes from botocore's configuration chain (profiles, SSO, instance roles).
    aws_region: str | None = None
    aws_default_region: str | None = None
    aws_endpoint_url_dynamodb: str | None = None
    aws_endpoint_url_secrets_manager: str | None = None
    aws_endpoint_url: str | None = None
    aws_ignore_configured_endpoint_urls: bool = False
    aws_use_fips_endpoint: bool = False
    aws_use_dualstack_endpoint: bool = False

    # The built-in simulator (used when no API key is configured).
    simulator_token_delay_ms: float = Field(default=25.0, ge=0)

    @field_validator(
        "openai_api_key", "openai_api_key_secret", "access_key", "access_key_secret", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`ACCESS_KEY=` (empty) means no key, as if it were not set at all."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def tool_names(self) -> list[str]:
        return [name.strip() for name in self.tools.split(",") if name.strip()]

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_allow_origins.split(",") if o.strip()]

    @property
    def on_lambda(self) -> bool:
        return bool(self.aws_lambda_function_name)

    @property
    def body_limit(self) -> int:
        """MAX_BODY_BYTES, else room for a MAX_PROMPT_CHARS prompt written as JSON escapes
        (`\\ud83d\\ude00`: 12 bytes for one character) plus the other fields."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_prompt_chars * 12 + 16 * 1024

    @property
    def url_limit(self) -> int:
        """The longest request head the server buffers: a MAX_PROMPT_CHARS `GET ?prompt=`
        (up to 12 bytes a character once percent-encoded) plus headers."""
        return self.max_prompt_chars * 12 + 16 * 1024

    @property
    def secret_values(self) -> list[str]:
        """Every configured secret value, for redaction (Secrets Manager values come later)."""
        secrets = (
            self.openai_api_key,
            self.access_key,
            self.aws_access_key_id,
            self.aws_secret_access_key,
            self.aws_session_token,
        )
        return [s.get_secret_value() for s in secrets if s is not None]

    @property
    def use_simulator(self) -> bool:
        """No key and no other server configured: the built-in simulator answers."""
        return (
            self.openai_api_key is None
            and not self.openai_api_key_secret
            and self.openai_base_url == DEFAULT_OPENAI_BASE_URL
        )
