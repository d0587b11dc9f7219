"""The speech-to-text provider interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import GatewayError
from gateway.stt.audio import Audio

SPEECH_PROVIDER = "Speech provider"


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str


@dataclass(frozen=True)
class StreamToken:
    """A short-lived credential the browser streams audio to the vendor with."""

    token: str = field(repr=False)
    expires_in: float  # seconds, as the vendor says


def language_or(value: object, default: str) -> str:
    """A vendor's language code when it gave a usable one, else the configured language."""
    return value.strip() if isinstance(value, str) and value.strip() else default


class SttProvider(Protocol):
    name: str

    async def transcribe(self, audio: Audio) -> Transcript: ...

    async def stream_token(self, ttl: float) -> StreamToken: ...

    async def probe(self) -> bool: ...

    async def close(self) -> None: ...


class NoStreaming(GatewayError):
    """Raised by providers without browser streaming; config refuses the route for them, so never seen."""
