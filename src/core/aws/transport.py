"""POSTs to one endpoint over http.client, reusing idle keep-alive connections."""

from __future__ import annotations

import http.client
import select
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport:
    """POSTs to one endpoint over http.client, reusing idle keep-alive connections.

    http.client, not urllib3 or httpx: both cost a cold start more to import (urllib3 ~15 ms,
    httpx ~15 ms, plus ~30 ms for httpx's TLS context at construction); this one builds its
    TLS context on the first HTTPS connection.
    """

    MAX_IDLE = 10  # botocore's max_pool_connections

    def __init__(
        self, endpoint: str, *, connect_timeout: float = 3.0, read_timeout: float = 10.0
    ) -> None:
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._path = parts.path or "/"
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._tls: ssl.SSLContext | None = None

    def post(self, headers: Mapping[str, str], body: bytes) -> Response:
        """One POST; OSError and http.client.HTTPException for a failed connection."""
        connection = self._take()
        try:
            connection.request("POST", self._path, body=body, headers=dict(headers))
            answer = connection.getresponse()
            data = answer.read()
        except BaseException:
            connection.close()
            raise
        if answer.will_close:
            connection.close()
        else:
            self._give_back(connection)
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect()
            if not _dropped(connection):
                return connection
            connection.close()  # closed by the server while idle (or frozen, on Lambda)

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(
                self._netloc, timeout=self._connect_timeout, context=self._tls_context()
            )
        else:
            connection = http.client.HTTPConnection(self._netloc, timeout=self._connect_timeout)
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(self._read_timeout)
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                try:  # the CA bundle botocore and httpx use, when installed
                    import certifi

                    cafile: str | None = certifi.where()
                except ImportError:
                    cafile = None
                self._tls = ssl.create_default_context(cafile=cafile)
            return self._tls


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle connection the server has closed reads as ready (EOF); a live one does not."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
