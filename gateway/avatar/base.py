"""The avatar provider interface and the one place vendor HTTP failures
become ``ProviderError``.

Messages name the provider and what went wrong ("Avatar provider liveavatar
rejected the API key (HTTP 401)"), never the URL, the key or a token. Vendor
error texts are not echoed either: they are free-form and could quote the
request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from gateway.config import Timeouts
from gateway.errors import ProviderError
from gateway.upstream import _send

STOP_USER_CLOSED = "USER_CLOSED"
STOP_MAX_DURATION = "MAX_DURATION_REACHED"


@dataclass(frozen=True)
class MintedSession:
    session_id: str
    token: str = field(repr=False)
    expires_at: float


class AvatarProvider(Protocol):
    name: str
    #: Whether ``stop_session`` ends a live session at the vendor (and so costs can be cut).
    can_stop: bool

    async def create_session(self, avatar_id: str, voice_id: str, duration: float) -> MintedSession: ...

    async def stop_session(self, session_id: str, reason: str) -> None: ...

    async def probe(self) -> bool: ...


Clock = Callable[[], float]


@dataclass
class VendorClient:
    """Calls one vendor's JSON API with its key in a header."""

    name: str
    http: httpx.AsyncClient
    base_url: str
    key_header: str
    api_key: str = field(repr=False)
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def label(self) -> str:
        return f"Avatar provider {self.name}"

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        t = self.timeouts
        request = self.http.build_request(
            method,
            self.base_url.rstrip("/") + path,
            content=None if body is None else json.dumps(body).encode(),
            headers={
                self.key_header: self.api_key,
                "accept": "application/json",
                **({"content-type": "application/json"} if body is not None else {}),
            },
            timeout=httpx.Timeout(t.total, connect=t.connect, pool=t.total),
        )
        try:
            async with asyncio.timeout(t.total):
                status, raw = await _send(self.http, request, self.label)
        except TimeoutError:
            raise ProviderError(f"{self.label} did not answer within {t.total:g}s") from None
        if status in (401, 403):
            raise ProviderError(f"{self.label} rejected the API key (HTTP {status})")
        if status == 429:
            raise ProviderError(f"{self.label} is rate limiting or out of concurrent sessions (HTTP 429)")
        if not 200 <= status < 300:
            raise ProviderError(f"{self.label} answered HTTP {status}")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ProviderError(f"{self.label} answered with a body that is not JSON") from None

    def malformed(self, what: str) -> ProviderError:
        return ProviderError(f"{self.label} answered with an unexpected shape: {what}")


def nonempty_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
