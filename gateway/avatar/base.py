"""The avatar provider interface. The vendor client the adapters call their
vendors with lives in ``gateway/vendor.py``, shared with speech-to-text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.vendor import VendorClient, nonempty_string

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

__all__ = ["AvatarProvider", "Clock", "MintedSession", "VendorClient", "nonempty_string"]
