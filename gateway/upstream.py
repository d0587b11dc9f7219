"""Every outbound call (the chat backend, avatar vendors, health probes) goes
through ``UpstreamClient``: one shared connection pool, one set of deadlines,
one place where upstream failures become ``ProviderError``.

``stream()`` is the one exchange: the answer's status and headers, then its
body as decoded pieces as they arrive. ``request()`` is ``stream()`` read whole.

Deadlines (``Timeouts``), each named in the error when it fires (issue 13;
one timeout for connect+send+read is too coarse, APISIX #12072):

- ``connect``: connection setup, handed to the transport, so a dead host fails fast;
- ``first_byte``: from the start of the exchange to the first byte of the body
  (a model that takes long to start talking);
- ``idle``: the longest gap between two pieces of the body (a stream that stalls);
- ``total``: the whole exchange (connecting, waiting for a pooled connection,
  sending, reading and decoding), one ``asyncio.timeout``.

Retries: only a connection that could not be established (refused, connect
timeout: nothing was sent) is retried, ``retries.attempts`` times with full
jitter backoff, inside ``total``. Once a request may have reached the backend it
is never sent again: a chat turn is not idempotent (it may be billed, recorded).

Answers: read as raw bytes and decoded here, not by httpx, so that the size
cap (``client.max_response_bytes``) applies to the *decoded* size: a gzip
bomb of a few KB on the wire is refused once it inflates past the cap, and it
is inflated in bounded steps that yield to the event loop, so one hostile
backend cannot stall other requests (issue 11). One layer of ``gzip`` or
``deflate`` is accepted; stacked or unknown encodings are refused.

Messages say what went wrong (refused, timed out, HTTP 503, not JSON) and
which provider failed, never the URL or the credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import structlog

from gateway import metrics
from gateway.breaker import CircuitBreaker
from gateway.errors import ProviderError, UpstreamFailed
from gateway.settings import BreakerSettings, ClientSettings, Retries, Timeouts
from gateway.transport import AiohttpPool, Exchange, HttpxPool, Pool

log = structlog.get_logger("gateway.upstream")

ACCEPT_ENCODING = "gzip, deflate"
NO_RETRIES = Retries(attempts=0)
_INFLATE_STEP = 64 * 1024  # decoded bytes produced per step before yielding to the loop
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Failures that mean no connection was made, so nothing was sent: safe to retry.
_NOT_CONNECTED = (httpx.ConnectError, httpx.ConnectTimeout, aiohttp.ClientConnectorError,
                  aiohttp.ConnectionTimeoutError)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    elapsed: float  # seconds, request sent to answer read
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Stream:
    """An answer being read: its status and headers, then ``async for piece in stream``
    (decoded bytes as they arrive, under the size cap and the first-byte and idle deadlines)."""

    def __init__(self, exchange: Exchange, provider: str, limit: int, timeouts: Timeouts, started: float) -> None:
        self.status = exchange.status
        self.headers = exchange.headers
        self._exchange = exchange
        self._provider = provider
        self._limit = limit
        self._timeouts = timeouts
        self._started = started  # loop time the exchange began: the first-byte deadline counts from it

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def __aiter__(self) -> AsyncIterator[bytes]:
        provider, limit = self._provider, self._limit
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        raw = self._timed(self._exchange.raw())
        if encoding in ("", "identity"):
            pieces = raw
        elif encoding in _DECODERS:
            pieces = _inflate(raw, zlib.decompressobj(_DECODERS[encoding]), provider, encoding)
        else:
            metrics.upstream_failed(provider, "invalid_body")
            raise ProviderError(f"{provider} answered with an unsupported Content-Encoding")
        size = 0
        async for piece in pieces:
            size += len(piece)
            if size > limit:
                metrics.upstream_failed(provider, "too_large")
                raise ProviderError(f"{provider} answer exceeds {limit} bytes")
            yield piece

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self])

    async def _timed(self, raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        name, limit, since = "first_byte", self._timeouts.first_byte, self._started
        while True:
            try:
                chunk = await _within(self._provider, name, limit, since, anext(raw))
            except StopAsyncIteration:
                return
            yield chunk
            name, limit, since = "idle", self._timeouts.idle, loop.time()


async def _within(provider: str, name: str, limit: float | None, since: float, awaitable: Any) -> Any:
    """Await under the ``name`` deadline (``since + limit``); the total deadline, outside, covers the rest."""
    if limit is None:
        return await awaitable
    try:
        async with asyncio.timeout_at(since + limit) as deadline:
            return await awaitable
    except TimeoutError:
        if not deadline.expired():
            raise
        metrics.upstream_failed(provider, f"{name}_timeout")
        if name == "first_byte":
            raise UpstreamFailed(f"{provider} sent nothing within {limit:g}s (first_byte timeout)") from None
        raise UpstreamFailed(f"{provider} went silent for {limit:g}s mid-answer (idle timeout)") from None


class UpstreamClient:
    """The process-wide upstream client, opened once in the app's lifespan.

    In production it speaks to one aiohttp connection pool directly; given an httpx
    ``transport`` (unit tests: pytest-httpx), it sends through httpx on it instead.
    Everything above the pool (deadlines, retries, decoding, the size cap, the
    exception mapping) is the same for both (see transport.py).
    """

    def __init__(
        self,
        settings: ClientSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        breaker_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool: Pool = (
            AiohttpPool(settings.max_connections, settings.keepalive_expiry)
            if transport is None
            else HttpxPool(transport)
        )
        self.max_response_bytes = settings.max_response_bytes
        self._breaker_clock = breaker_clock
        self._breakers: dict[str, CircuitBreaker] = {}

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._pool.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        provider: str,
        timeouts: Timeouts,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        retries: Retries = NO_RETRIES,
    ) -> Answer:
        """One exchange, read whole (within the size cap) and decoded; ``ProviderError`` on any failure.

        The body is ``json_body`` (encoded here) or raw ``content`` of ``content_type``
        (audio, a multipart form), never both."""
        started = time.perf_counter()
        async with self.stream(
            method, url, provider=provider, timeouts=timeouts, json_body=json_body, headers=headers,
            content=content, content_type=content_type, retries=retries,
        ) as answer:
            body = await answer.read()
        return Answer(answer.status, body, time.perf_counter() - started, answer.headers)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        provider: str,
        timeouts: Timeouts,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        retries: Retries = NO_RETRIES,
        accept: str = "application/json",
    ) -> AsyncIterator[Stream]:
        """One exchange: ``async with upstream.stream(...) as answer: async for piece in answer``.
        Leaving the block early (a client that went away) closes the connection at once."""
        request_headers = {**(headers or {}), "accept": accept, "accept-encoding": ACCEPT_ENCODING}
        if content is not None:
            assert json_body is None, "json_body or content, not both"
            request_headers["content-type"] = content_type or "application/octet-stream"
        if json_body is not None:
            content = json.dumps(json_body, ensure_ascii=False, allow_nan=False).encode()
            request_headers["content-type"] = "application/json"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with map_upstream_errors(provider, timeouts):
            async with asyncio.timeout(timeouts.total):
                exchange = await _within(
                    provider, "first_byte", timeouts.first_byte, started,
                    self._send(method, url, request_headers, content, timeouts.connect, provider, retries),
                )
                try:
                    yield Stream(exchange, provider, self.max_response_bytes, timeouts, started)
                finally:
                    await exchange.close()
                    metrics.observe_upstream(provider, loop.time() - started, exchange.status)

    async def _send(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None, connect: float | None,
        provider: str, retries: Retries,
    ) -> Exchange:
        for attempt in range(retries.attempts + 1):
            try:
                return await self._pool.send(method, url, headers, content, connect)
            except _NOT_CONNECTED as exc:
                if attempt == retries.attempts or isinstance(exc, aiohttp.ClientSSLError):
                    raise
            # Full jitter (every client backs off by a random share of the window), so a
            # backend coming back is not hit by all waiting requests in the same instant.
            delay = random.uniform(0, retries.backoff * 2**attempt)
            log.info("upstream_retry", provider=provider, attempt=attempt + 1, delay_ms=round(delay * 1000, 1))
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        """The circuit breakers made so far, by upstream name (route path)."""
        return self._breakers

    def breaker(self, name: str, settings: BreakerSettings | None, provider: str) -> CircuitBreaker | None:
        """The circuit breaker of the upstream ``name`` (a route path), made on first use; None when off."""
        if settings is None:
            return None
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = CircuitBreaker(name, settings, provider, self._breaker_clock)
        return breaker

    async def probe(self, url: str, timeout: float) -> bool:
        """Reachable means any HTTP answer below 500: a chat endpoint that says 405
        to a GET is up, and a probe must never send a real (billable) chat turn."""
        try:
            answer = await self.request("GET", url, provider="probe", timeouts=Timeouts(timeout, timeout))
        except ProviderError:
            return False
        return answer.status < 500


def decode_json(answer: Answer, provider: str) -> Any:
    """The answer's JSON value; ``ProviderError`` when it is not JSON the gateway can pass on
    (malformed, NaN/Infinity, numbers beyond a double or Python's digit limit, nesting too deep)."""
    try:
        return parse_json(answer.body, f"{provider} answered with a body that is not JSON")
    except ProviderError:
        metrics.upstream_failed(provider, "invalid_body")
        raise


def parse_json(data: bytes | str, failure: str) -> Any:
    """Strict JSON (see ``decode_json``) from any part of an answer; ``ProviderError(failure)`` if it is not."""
    try:
        # What json.loads does, with a decoder built once (json.loads with hooks builds one per call).
        if isinstance(data, str):
            if data.startswith("\ufeff"):
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
            text = data
        else:
            text = data.decode(json.detect_encoding(data), "surrogatepass")
        return _STRICT_JSON.decode(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        raise ProviderError(failure) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


_STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


async def _inflate(raw: AsyncIterator[bytes], decoder: Any, provider: str, encoding: str) -> AsyncIterator[bytes]:
    """Decode in steps of at most ``_INFLATE_STEP`` output bytes, yielding to the loop between steps."""
    try:
        async for chunk in raw:
            data = chunk
            while data:
                piece = decoder.decompress(data, _INFLATE_STEP)
                data = decoder.unconsumed_tail
                if piece:
                    yield piece
                    await asyncio.sleep(0)
        tail = decoder.flush()
        if tail:
            yield tail
    except zlib.error:
        metrics.upstream_failed(provider, "invalid_body")
        raise ProviderError(f"{provider} answered with a body that is not valid {encoding}") from None


@contextlib.contextmanager
def map_upstream_errors(provider: str, timeouts: Timeouts) -> Iterator[None]:
    """The one place transport failures become ``ProviderError``: httpx's (its own
    transports, pytest-httpx) and aiohttp's (the production transport), and the total
    deadline (``first_byte`` and ``idle`` are named where they are enforced, ``_within``).
    All of them are ``UpstreamFailed``: the backend is unreachable or broken, which
    counts against its circuit breaker.

    Order matters: aiohttp's timeouts are also ``TimeoutError``s, and specific
    classes come before their bases. Each failure is counted by kind (gateway/metrics.py)."""
    try:
        yield
    except (httpx.ConnectTimeout, aiohttp.ConnectionTimeoutError):
        metrics.upstream_failed(provider, "connect_timeout")
        raise UpstreamFailed(
            f"{provider} could not be reached: connection timed out after {timeouts.connect:g}s (connect timeout)"
        ) from None
    except (TimeoutError, httpx.TimeoutException):
        metrics.upstream_failed(provider, "timeout")
        raise UpstreamFailed(f"{provider} did not answer within {timeouts.total:g}s (total timeout)") from None
    except (httpx.ConnectError, aiohttp.ClientConnectorError):
        metrics.upstream_failed(provider, "connect_refused")
        raise UpstreamFailed(f"{provider} could not be reached: connection refused or host unknown") from None
    except httpx.DecodingError:
        metrics.upstream_failed(provider, "invalid_body")
        raise ProviderError(f"{provider} answered with a body that could not be decoded") from None
    except aiohttp.ClientResponseError:  # a status line or headers aiohttp could not parse
        metrics.upstream_failed(provider, "malformed_http")
        raise UpstreamFailed(f"{provider} answered with malformed HTTP") from None
    except (httpx.TransportError, aiohttp.ClientError, OSError):
        # Disconnects, resets, truncated or badly chunked bodies.
        metrics.upstream_failed(provider, "disconnected")
        raise UpstreamFailed(f"{provider} closed the connection before answering") from None
