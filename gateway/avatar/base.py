"""The avatar provider interface and the vendor client the adapters share.

Transport failures become ``ProviderError`` in ``upstream.py``; this module
adds what vendor answers mean (401/403: the key, 429: the vendor's limits).

Messages name the provider and what went wrong ("Avatar provider liveavatar
rejected the API key (HTTP 401)"), never the URL, the key or a token. Vendor
error texts are not echoed either: they are free-form and could quote the
request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.config import Timeouts
from gateway.errors import ProviderError
from gateway.upstream import UpstreamClient, decode_json

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
    """Calls one vendor's JSON API with its key in a header, through the shared upstream client."""

    name: str
    upstream: UpstreamClient
    base_url: str
    key_header: str
    api_key: str = field(repr=False)
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def label(self) -> str:
        return f"Avatar provider {self.name}"

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = await self.upstream.request(
            method,
            self.base_url.rstrip("/") + path,
            provider=self.label,
            timeouts=self.timeouts,
            json_body=body,
            headers={self.key_header: self.api_key},
        )
        if answer.status in (401, 403):
            raise ProviderError(f"{self.label} rejected the API key (HTTP {answer.status})")
        if answer.status == 429:
            raise ProviderError(f"{self.label} is rate limiting or out of concurrent sessions (HTTP 429)")
        if not answer.ok:
            raise ProviderError(f"{self.label} answered HTTP {answer.status}")
        return decode_json(answer, self.label)

    def malformed(self, what: str) -> ProviderError:
        return ProviderError(f"{self.label} answered with an unexpected shape: {what}")


def nonempty_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
