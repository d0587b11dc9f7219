"""The connection pools under ``upstream.UpstreamClient``: how bytes reach a backend.

Production speaks to one ``aiohttp`` connection pool directly (``AiohttpPool``).
Why aiohttp: httpx's default transport (httpcore) slows down as concurrency
rises, a pool lock and per-request connection scans (encode/httpx#3215; a fix
in httpcore was merged and then reverted): measured on a 2-core machine, a proxy
on it falls to about 0.1x direct throughput at 200 concurrent connections
against a 0.5 s backend, while aiohttp's pool stays above 0.9x. Why directly:
the gateway used to keep httpx's API over that pool, and building and sending an
``httpx.Request`` (URL model, header model, cookie jar, redirect and auth loops)
cost more than aiohttp's own work; a profile under load put a quarter of the
event loop's time there (bench/README.md, issue 17).

Tests inject an httpx transport instead (``create_app(settings,
transport=httpx.AsyncHTTPTransport())``, faked by pytest-httpx): ``HttpxPool``
sends through an ``httpx.AsyncClient`` on it. Both pools hand back an
``Exchange`` (status, headers, the raw body in pieces, close) and map no
exception: aiohttp's and httpx's propagate as they are, and
``upstream.map_upstream_errors`` turns both into ``ProviderError`` in one
place. Neither decodes the body: ``upstream`` reads raw bytes and decodes them
under its size cap.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
import httpx
import yarl

_CHUNK = 64 * 1024


class Exchange(Protocol):
    """An answer whose head has arrived: status, headers (case-insensitive), then the raw body."""

    status: int
    headers: Mapping[str, str]

    def raw(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class Pool(Protocol):
    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None, connect: float | None
    ) -> Exchange: ...

    async def aclose(self) -> None: ...


# -- production: aiohttp ------------------------------------------------------------


class _AiohttpExchange:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def raw(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_chunked(_CHUNK):
            yield chunk

    async def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            # Left early (a client went away, a deadline fired): close the connection now,
            # so the backend sees it at once and stops generating for nobody (issue 13).
            self._response.close()


@functools.lru_cache(maxsize=1024)
def _url(url: str) -> yarl.URL:
    # Percent-encoded the way httpx encodes a URL (spaces, non-ASCII, IDNA hosts), then handed
    # to yarl as encoded: yarl must not decode %3A and the like (a sessionId placed in a path).
    return yarl.URL(str(httpx.URL(url)), encoded=True)


@functools.lru_cache(maxsize=64)
def _timeout(connect: float | None) -> aiohttp.ClientTimeout:
    # Only connection setup; the gateway enforces its own deadlines around the exchange (upstream.py).
    return aiohttp.ClientTimeout(total=None, sock_connect=connect)


class AiohttpPool:
    """One ``aiohttp.ClientSession``: ``max_connections`` connections, kept alive ``keepalive_expiry``."""

    def __init__(self, max_connections: int = 1000, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the running event loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive_expiry,
                # The gateway calls a handful of backends: cache DNS answers.
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # upstream.py decodes Content-Encoding itself, under its size cap.
                auto_decompress=False,
                # Cookies from one visitor's backend answer must never reach another's request.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None, connect: float | None
    ) -> Exchange:
        response = await self._get_session().request(
            method, _url(url), headers=headers, data=content or None, allow_redirects=False, timeout=_timeout(connect)
        )
        return _AiohttpExchange(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# -- injected (tests): httpx --------------------------------------------------------


class _HttpxExchange:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def raw(self) -> AsyncIterator[bytes]:
        return self._response.aiter_raw()

    async def close(self) -> None:
        await self._response.aclose()


class HttpxPool:
    """An ``httpx.AsyncClient`` on an injected transport (pytest-httpx fakes httpx's own)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None, connect: float | None
    ) -> Exchange:
        request = self._client.build_request(
            method, url, content=content, headers=headers, timeout=httpx.Timeout(None, connect=connect)
        )
        return _HttpxExchange(await self._client.send(request, stream=True))

    async def aclose(self) -> None:
        await self._client.aclose()
