"""Who a request counts as, for the per-client limits (addresses, proxies, keys)."""

from __future__ import annotations

import json

from starlette.requests import Request

from handlers.security import client_id


def request(
    address: str, *, key: str | None = None, context: dict[str, object] | None = None
) -> Request:
    headers = []
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    if context is not None:
        headers.append((b"x-amzn-request-context", json.dumps(context).encode()))
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/chat",
        "query_string": b"",
        "headers": headers,
        "client": (address, 40000),
    }
    return Request(scope)


def test_an_ipv6_client_counts_by_its_64_so_rotating_addresses_does_not_help() -> None:
    first = client_id(request("2001:db8:1:2::1"), keyed=False, on_lambda=False)
    rotated = client_id(request("2001:db8:1:2:ffff:aaaa:bbbb:cccc"), keyed=False, on_lambda=False)
    other = client_id(request("2001:db8:1:3::1"), keyed=False, on_lambda=False)
    assert first == rotated == "ip:2001:db8:1:2::/64"
    assert other != first


def test_ipv4_and_ipv4_mapped_addresses_count_alike() -> None:
    plain = client_id(request("198.51.100.7"), keyed=False, on_lambda=False)
    mapped = client_id(request("::ffff:198.51.100.7"), keyed=False, on_lambda=False)
    assert plain == mapped == "ip:198.51.100.7"


def test_with_an_access_key_a_client_is_the_key_and_its_address() -> None:
    """Reproduced: with an access key, all key holders shared one bucket, so one could lock
    out the rest. Now the same key from two addresses counts twice."""
    a = client_id(request("198.51.100.7", key="shared-key-123"), keyed=True, on_lambda=False)
    b = client_id(request("203.0.113.9", key="shared-key-123"), keyed=True, on_lambda=False)
    assert a != b
    assert a.startswith("key:") and "shared-key-123" not in a  # hashed, never the key itself


def test_the_lambda_source_ip_is_trusted_only_on_lambda() -> None:
    context = {"http": {"sourceIp": "203.0.113.50"}, "requestId": "r"}
    off = client_id(request("127.0.0.1", context=context), keyed=False, on_lambda=False)
    on = client_id(request("127.0.0.1", context=context), keyed=False, on_lambda=True)
    assert off == "ip:127.0.0.1"
    assert on == "ip:203.0.113.50"
