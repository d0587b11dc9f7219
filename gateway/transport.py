"""An httpx transport that sends requests through an aiohttp connection pool.

Why: httpx's default transport (httpcore) slows down as concurrency rises:
a pool lock and per-request connection scans (encode/httpx#3215; a fix in
httpcore was merged and then reverted). Measured on a 2-core machine, a
proxy on it falls to about 0.1x direct throughput at 200 concurrent
connections against a 0.5 s backend, while aiohttp's pool stays above 0.9x
(see bench/README.md). The gateway is written against httpx's API and its
unit tests fake upstreams with pytest-httpx; only the transport is swapped.

``httpx-aiohttp`` does the same, but maps aiohttp's exceptions loosely (a
dropped connection becomes ``ConnectTimeout``); the gateway's error messages
depend on that mapping, so the ~100 lines live here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

_CHUNK = 64 * 1024


@contextlib.contextmanager
def _map_aiohttp_exceptions() -> Iterator[None]:
    # Order matters: the specific subclasses come before their bases.
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timeout") from exc
    except aiohttp.SocketTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "read timeout") from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.TimeoutException(str(exc) or "timeout") from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected") from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.ReadError(str(exc)) from exc
    except aiohttp.ClientResponseError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx.NetworkError(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _map_aiohttp_exceptions():
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        # release() returns the connection to the pool once the body is read;
        # if it was not read to the end the connection is closed instead.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over one ``aiohttp.ClientSession``.

    Honours httpx's ``connect`` and ``read`` timeouts; the gateway enforces
    its total deadline around the whole exchange.
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
                # httpx decodes Content-Encoding itself; decoding here too would do it twice.
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
        with _map_aiohttp_exceptions():
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
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
