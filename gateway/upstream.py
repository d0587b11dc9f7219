"""Calling upstream services: the one shared client and the one place where
upstream failures become ``ProviderError``.

Messages say what went wrong (refused, timed out, HTTP 503, not JSON) and
which kind of provider failed, never the URL or the credentials.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from gateway.config import ClientSettings, Upstream
from gateway.errors import ProviderError
from gateway.transport import AiohttpTransport

# An answer bigger than this is not a chat answer; refuse it rather than buffer it.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


def create_client(settings: ClientSettings, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The process-wide upstream client, opened once in the app's lifespan."""
    if transport is None:
        transport = AiohttpTransport(settings.max_connections, settings.keepalive_expiry)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)


async def post_json(
    client: httpx.AsyncClient,
    upstream: Upstream,
    body: dict[str, Any],
    *,
    provider: str,
    headers: dict[str, str] | None = None,
) -> tuple[Any, float]:
    """POST ``body`` to ``upstream`` and return ``(decoded JSON, seconds taken)``.

    ``connect`` bounds connection setup; ``total`` bounds the whole exchange,
    including reading the answer.
    """
    t = upstream.timeouts
    request = client.build_request(
        "POST",
        upstream.url,
        content=json.dumps(body, ensure_ascii=False).encode(),
        headers={**upstream.headers, **(headers or {}), **_JSON_HEADERS},
        timeout=httpx.Timeout(t.total, connect=t.connect, pool=t.total),
    )
    started = time.perf_counter()
    try:
        async with asyncio.timeout(t.total):
            status, raw = await _send(client, request, provider)
    except TimeoutError:
        raise ProviderError(f"{provider} did not answer within {t.total:g}s") from None
    elapsed = time.perf_counter() - started
    if not 200 <= status < 300:
        raise ProviderError(f"{provider} answered HTTP {status}")
    try:
        return json.loads(raw), elapsed
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProviderError(f"{provider} answered with a body that is not JSON") from None


async def _send(client: httpx.AsyncClient, request: httpx.Request, provider: str) -> tuple[int, bytes]:
    try:
        response = await client.send(request, stream=True)
        try:
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise ProviderError(f"{provider} answer exceeds {MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)
        finally:
            await response.aclose()
    except httpx.ConnectTimeout:
        raise ProviderError(f"{provider} could not be reached: connection timed out") from None
    except httpx.TimeoutException:
        raise TimeoutError from None
    except httpx.ConnectError:
        raise ProviderError(f"{provider} could not be reached: connection refused or host unknown") from None
    except httpx.DecodingError:
        raise ProviderError(f"{provider} answered with a body that could not be decoded") from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.NetworkError):
        raise ProviderError(f"{provider} closed the connection before answering") from None
    except httpx.HTTPError:
        raise ProviderError(f"{provider} request failed") from None
