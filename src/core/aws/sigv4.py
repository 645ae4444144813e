"""AWS Signature Version 4 for one kind of request: a JSON POST to an AWS service.

Hand-written rather than botocore's `SigV4Auth` because botocore's signer comes with botocore:
importing it costs ~40 ms of a Lambda cold start, and the whole SDK (session, models, client)
~100 ms, as much as the whole margin the cold-start target leaves over a bare FastAPI app
(README Performance). The algorithm is AWS's published one, for the simplest case (no query string,
a single path, every header given here signed); tests/unit/test_aws_client.py checks it against
botocore's signer, header for header, on generated requests.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key pair and, for temporary credentials (Lambda's), the session token."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


def sign_post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    credentials: Credentials,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """`headers` plus Host, X-Amz-Date, the session token and Authorization for a POST of
    `body` to `url`. Every header in `headers` is signed: pass only the ones to sign."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    parts = urlsplit(url)
    signed = {name.lower(): value for name, value in headers.items()}
    signed["host"] = _host(parts.scheme, parts.hostname or "", parts.port)
    signed["x-amz-date"] = stamp
    if credentials.token:
        signed["x-amz-security-token"] = credentials.token
    names = sorted(signed)
    canonical = "\n".join(
        [
            "POST",
            quote(parts.path or "/", safe="/~"),
            "",  # no query string
            "".join(f"{name}:{' '.join(signed[name].split())}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + credentials.secret_key).encode()
    for part in (stamp[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return {**signed, "authorization": authorization}


def _host(scheme: str, hostname: str, port: int | None) -> str:
    """The Host header as signed: the port only when it is not the scheme's default."""
    if ":" in hostname:
        hostname = f"[{hostname}]"  # an IPv6 literal
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return hostname
    return f"{hostname}:{port}"
