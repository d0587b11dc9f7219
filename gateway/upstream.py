"""Every outbound call (the chat backend, avatar vendors, health probes) goes
through ``UpstreamClient``: one shared connection pool, one deadline, one place
where upstream failures become ``ProviderError``.

Deadlines: ``timeouts.total`` bounds the whole exchange (connecting, waiting
for a pooled connection, sending, reading and decoding the answer) with one
``asyncio.timeout``; ``timeouts.connect`` is the only other deadline, handed
to the transport for connection setup so a dead host fails fast with its own
message.

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
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from gateway.config import ClientSettings, Timeouts
from gateway.errors import ProviderError
from gateway.transport import AiohttpTransport

ACCEPT_ENCODING = "gzip, deflate"
_INFLATE_STEP = 64 * 1024  # decoded bytes produced per step before yielding to the loop
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    elapsed: float  # seconds, request sent to answer read

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class UpstreamClient:
    """The process-wide upstream client, opened once in the app's lifespan.

    Written against httpx's API (unit tests fake upstreams with pytest-httpx);
    in production its transport is ``AiohttpTransport`` (see transport.py).
    """

    def __init__(self, settings: ClientSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if transport is None:
            transport = AiohttpTransport(settings.max_connections, settings.keepalive_expiry)
        self._http = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
        self.max_response_bytes = settings.max_response_bytes

    async def __aenter__(self) -> UpstreamClient:
        await self._http.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._http.__aexit__(*exc_info)

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
    ) -> Answer:
        """One exchange, read whole (within the size cap) and decoded; ``ProviderError`` on any failure.

        The body is ``json_body`` (encoded here) or raw ``content`` of ``content_type``
        (audio, a multipart form), never both."""
        request_headers = {**(headers or {}), "accept": "application/json", "accept-encoding": ACCEPT_ENCODING}
        if content is not None:
            assert json_body is None, "json_body or content, not both"
            request_headers["content-type"] = content_type or "application/octet-stream"
        if json_body is not None:
            content = json.dumps(json_body, ensure_ascii=False, allow_nan=False).encode()
            request_headers["content-type"] = "application/json"
        request = self._http.build_request(
            method, url, content=content, headers=request_headers, timeout=httpx.Timeout(None, connect=timeouts.connect)
        )
        started = time.perf_counter()
        with map_upstream_errors(provider, timeouts.total):
            async with asyncio.timeout(timeouts.total):
                response = await self._http.send(request, stream=True)
                try:
                    body = await _read(response, provider, self.max_response_bytes)
                finally:
                    await response.aclose()
        return Answer(response.status_code, body, time.perf_counter() - started)

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
        return json.loads(answer.body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        raise ProviderError(f"{provider} answered with a body that is not JSON") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


async def _read(response: httpx.Response, provider: str, limit: int) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    too_large = f"{provider} answer exceeds {limit} bytes"
    chunks: list[bytes] = []
    size = 0
    if encoding in ("", "identity"):
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise ProviderError(too_large)
            chunks.append(chunk)
        return b"".join(chunks)
    if encoding not in _DECODERS:
        raise ProviderError(f"{provider} answered with an unsupported Content-Encoding")
    decoder = zlib.decompressobj(_DECODERS[encoding])
    invalid = f"{provider} answered with a body that is not valid {encoding}"
    async for piece in _inflate(response.aiter_raw(), decoder, invalid):
        size += len(piece)
        if size > limit:
            raise ProviderError(too_large)
        chunks.append(piece)
    return b"".join(chunks)


async def _inflate(raw: AsyncIterator[bytes], decoder: Any, invalid: str) -> AsyncIterator[bytes]:
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
        raise ProviderError(invalid) from None


@contextlib.contextmanager
def map_upstream_errors(provider: str, total: float) -> Iterator[None]:
    """The one place transport failures become ``ProviderError``: httpx's (its own
    transports, pytest-httpx) and aiohttp's (the production transport), and the deadline.

    Order matters: aiohttp's timeouts are also ``TimeoutError``s, and specific
    classes come before their bases."""
    try:
        yield
    except (httpx.ConnectTimeout, aiohttp.ConnectionTimeoutError):
        raise ProviderError(f"{provider} could not be reached: connection timed out") from None
    except (TimeoutError, httpx.TimeoutException):
        raise ProviderError(f"{provider} did not answer within {total:g}s") from None
    except (httpx.ConnectError, aiohttp.ClientConnectorError):
        raise ProviderError(f"{provider} could not be reached: connection refused or host unknown") from None
    except httpx.DecodingError:
        raise ProviderError(f"{provider} answered with a body that could not be decoded") from None
    except aiohttp.ClientResponseError:  # a status line or headers aiohttp could not parse
        raise ProviderError(f"{provider} answered with malformed HTTP") from None
    except (httpx.TransportError, aiohttp.ClientError, OSError):
        # Disconnects, resets, truncated or badly chunked bodies.
        raise ProviderError(f"{provider} closed the connection before answering") from None
