"""The client every vendor adapter (avatar, speech-to-text) calls its vendor with.

Transport failures become ``ProviderError`` in ``upstream.py``; this module
adds what vendor answers mean (401/403: the key, 429: the vendor's limits).

Messages name the provider and what went wrong ("Avatar provider liveavatar
rejected the API key (HTTP 401)", "Speech provider deepgram answered HTTP
503"), never the URL, the key or a token. Vendor error texts are not echoed
either: they are free-form and could quote the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from gateway.errors import ProviderError
from gateway.settings import Timeouts
from gateway.upstream import UpstreamClient, decode_json


@dataclass
class VendorClient:
    """Calls one vendor's API with its key in a header, through the shared upstream client."""

    name: str
    upstream: UpstreamClient
    base_url: str
    key_header: str
    api_key: str = field(repr=False)
    timeouts: Timeouts = field(default_factory=Timeouts)
    kind: str = "Avatar provider"  # how messages name the provider: "<kind> <name>"
    key_scheme: str = ""  # put before the key: "Token " (Deepgram), "Bearer " (OpenAI)
    too_many: str = "is rate limiting or out of concurrent sessions"  # what a 429 means for this vendor

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> Any:
        """The decoded JSON answer. ``params`` values may be lists (repeated keys: ``keyterm=a&keyterm=b``)."""
        url = (self.base_url.rstrip("/") + path) if path.startswith("/") else path
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        headers = {self.key_header: self.key_scheme + self.api_key} if self.api_key else {}
        answer = await self.upstream.request(
            method,
            url,
            provider=self.label,
            timeouts=timeouts or self.timeouts,
            json_body=body,
            headers=headers,
            content=content,
            content_type=content_type,
        )
        if answer.status in (401, 403):
            raise ProviderError(f"{self.label} rejected the API key (HTTP {answer.status})")
        if answer.status == 429:
            raise ProviderError(f"{self.label} {self.too_many} (HTTP 429)")
        if not answer.ok:
            raise ProviderError(f"{self.label} answered HTTP {answer.status}")
        return decode_json(answer, self.label)

    def malformed(self, what: str) -> ProviderError:
        return ProviderError(f"{self.label} answered with an unexpected shape: {what}")


def nonempty_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
