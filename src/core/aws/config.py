"""Where the AWS clients connect, and as whom: from Settings when they say (Lambda sets
AWS_REGION and the credentials; tests and DynamoDB Local set AWS_ENDPOINT_URL_DYNAMODB), else
from botocore's own configuration chain, imported only then (profiles, SSO, container and
instance roles, FIPS and dual-stack endpoints, partitions added after this was written).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.aws.client import (
    DYNAMODB,
    MAX_ATTEMPTS,
    SECRETS_MANAGER,
    DynamoDBClient,
    SecretsManagerClient,
    Service,
)
from core.aws.failures import AwsUnreachable
from core.aws.sigv4 import Credentials
from core.settings import Settings

if TYPE_CHECKING:
    from botocore.session import Session

# The services' endpoints in the partitions with Function URLs and the Lambda Web Adapter
# (botocore/data/partitions.json: regionRegex and dnsSuffix).
_PARTITIONS = (
    (re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$"), "amazonaws.com"),
    (re.compile(r"^us\-gov\-\w+\-\d+$"), "amazonaws.com"),
    (re.compile(r"^cn\-\w+\-\d+$"), "amazonaws.com.cn"),
)


@dataclass(frozen=True, slots=True)
class Connection:
    endpoint: str
    region: str
    credentials: Callable[[], Credentials]


def dynamodb(settings: Settings, *, max_attempts: int = MAX_ATTEMPTS) -> DynamoDBClient:
    """A DynamoDB client configured as Settings (else botocore's chain) says."""
    connection = resolve(settings, DYNAMODB)
    return DynamoDBClient(
        endpoint=connection.endpoint,
        region=connection.region,
        credentials=connection.credentials,
        max_attempts=max_attempts,
    )


def secrets_manager(settings: Settings) -> SecretsManagerClient:
    """A Secrets Manager client configured as Settings (else botocore's chain) says."""
    connection = resolve(settings, SECRETS_MANAGER)
    return SecretsManagerClient(
        endpoint=connection.endpoint, region=connection.region, credentials=connection.credentials
    )


def resolve(settings: Settings, service: Service) -> Connection:
    """The endpoint, region and credentials for `service`; AwsUnreachable when no region or
    no credentials can be found."""
    botocore = _Botocore()
    region = settings.aws_region or settings.aws_default_region or botocore.region()
    if not region:
        raise AwsUnreachable("no AWS region: set AWS_REGION")
    return Connection(
        endpoint=_endpoint(settings, service, region) or botocore.endpoint(service, region),
        region=region,
        credentials=_static(settings) or botocore.credentials(),
    )


def _endpoint(settings: Settings, service: Service, region: str) -> str | None:
    if not settings.aws_ignore_configured_endpoint_urls:
        explicit = {
            DYNAMODB: settings.aws_endpoint_url_dynamodb,
            SECRETS_MANAGER: settings.aws_endpoint_url_secrets_manager,
        }.get(service) or settings.aws_endpoint_url
        if explicit:
            return explicit
    if settings.aws_use_fips_endpoint or settings.aws_use_dualstack_endpoint:
        return None
    for pattern, suffix in _PARTITIONS:
        if pattern.match(region):
            return f"https://{service.signing_name}.{region}.{suffix}"
    return None


def _static(settings: Settings) -> Callable[[], Credentials] | None:
    key, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    if key is None or secret is None:
        return None
    token = settings.aws_session_token
    fixed = Credentials(
        key.get_secret_value(),
        secret.get_secret_value(),
        token.get_secret_value() if token is not None else None,
    )
    return lambda: fixed


class _Botocore:
    """botocore's session, made on first need (off Lambda; ~60 ms to import)."""

    def __init__(self) -> None:
        self._session: Session | None = None

    def session(self) -> Session:
        if self._session is None:
            from botocore.session import Session

            self._session = Session()
        return self._session

    def region(self) -> str | None:
        region: Any = self.session().get_config_variable("region")
        return str(region) if region else None

    def endpoint(self, service: Service, region: str) -> str:
        client: Any = self.session().create_client(service.signing_name, region_name=region)
        return str(client.meta.endpoint_url)

    def credentials(self) -> Callable[[], Credentials]:
        found = self.session().get_credentials()  # refreshes itself before it expires
        if found is None:
            raise AwsUnreachable("no AWS credentials found")

        def current() -> Credentials:
            frozen = found.get_frozen_credentials()
            return Credentials(frozen.access_key or "", frozen.secret_key or "", frozen.token)

        return current
