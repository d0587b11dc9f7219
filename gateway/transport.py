"""An httpx transport that sends requests through an aiohttp connection pool.

Why: httpx's default transport (httpcore) slows down as concurrency rises:
a pool lock and per-request connection scans (encode/httpx#3215; a fix in
httpcore was merged and then reverted). Measured on a 2-core machine, a
proxy on it falls to about 0.1x direct throughput at 200 concurrent
connections against a 0.5 s backend, while aiohttp's pool stays above 0.9x
(see bench/README.md). The gateway is written against httpx's API and its
unit tests fake upstreams with pytest-httpx; only the transport is swapped.

``httpx-aiohttp`` does the same, but maps aiohttp's exceptions loosely (a
dropped connection becomes ``ConnectTimeout``). This transport maps none:
aiohttp's exceptions propagate as they are, and ``upstream.map_upstream_errors``
turns them (and httpx's, for httpx's own transports) into ``ProviderError``
in one place. It decodes nothing either: ``upstream`` reads raw bytes and
decodes them under its size cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
import yarl

_CHUNK = 64 * 1024


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_chunked(_CHUNK):
            yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            # Left early (a client went away, a deadline fired): close the connection now,
            # so the backend sees it at once and stops generating for nobody (issue 13).
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over one ``aiohttp.ClientSession``.

    Honours httpx's ``connect`` timeout (connection setup); the gateway
    enforces its total deadline around the whole exchange (upstream.py).
    """

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

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        session = self._get_session()
        content = await request.aread()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        # aiohttp sets these itself from the body it sends.
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
        response = await session.request(
            request.method,
            # encoded=True: httpx already percent-encoded the URL; yarl must not decode %3A and the like.
            yarl.URL(str(request.url), encoded=True),
            headers=headers,
            data=content or None,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout.get("connect")),
        )
        return httpx.Response(
            status_code=response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_ResponseStream(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
