"""The cost guard: a cap on concurrent live sessions and a maximum duration.

Every minted session is recorded in the session store with its expiry (the
session TTL, which is also the longest a session may run). A new session is
admitted only while fewer than ``max_concurrent_sessions`` are live; beyond
that the token route answers 429 RATE_LIMITED with ``Retry-After`` set to
the seconds until the oldest live session expires. A reaper stops sessions
past their expiry at the vendor when the provider can (LiveAvatar), so a
browser that never says goodbye does not keep running on the owner's bill.
"""

from __future__ import annotations

import asyncio
import math
import uuid

import structlog

from gateway.avatar.base import STOP_MAX_DURATION, STOP_USER_CLOSED, AvatarProvider, Clock, MintedSession
from gateway.avatar.sessions import SessionRecord, SessionStore
from gateway.errors import ProviderError, RateLimited

log = structlog.get_logger("gateway.avatar")


class SessionGuard:
    def __init__(
        self, provider: AvatarProvider, store: SessionStore, ttl: float, cap: int | None, clock: Clock
    ) -> None:
        self.provider = provider
        self.store = store
        self.ttl = ttl
        self.cap = cap
        self.clock = clock

    async def open(self, avatar_id: str, voice_id: str) -> MintedSession:
        """Reserve a slot, mint the session at the provider, record it."""
        now = self.clock()
        slot = SessionRecord(f"pending:{uuid.uuid4().hex}", self.provider.name, now + self.ttl)
        oldest = await self.store.reserve(slot, now, self.cap)
        if oldest is not None:
            retry = max(1, math.ceil(oldest - now))
            log.warning("avatar_session_cap_reached", cap=self.cap, retry_after=retry)
            raise RateLimited(
                f"Concurrent avatar session limit reached ({self.cap}); retry in {retry}s",
                headers={"Retry-After": str(retry)},
            )
        try:
            minted = await self.provider.create_session(avatar_id, voice_id, self.ttl)
        except BaseException:
            await self.store.release(slot.session_id)
            raise
        record = SessionRecord(minted.session_id, self.provider.name, minted.expires_at)
        await self.store.commit(slot.session_id, record)
        return minted

    async def end(self, session_id: str) -> bool:
        """End a session early: stop it at the vendor, then free its slot.

        If the vendor's stop fails the slot stays taken (the session may still
        be running and billing) and the reaper tries again at expiry.
        """
        record = await self.store.get(session_id)
        if record is None:
            return False
        if self.provider.can_stop:
            await self.provider.stop_session(session_id, STOP_USER_CLOSED)
        released = await self.store.release(session_id)
        log.info("avatar_session_ended", session_id=session_id, provider=record.provider)
        return released

    async def reap(self) -> list[str]:
        """Stop and forget every session past its expiry; returns their ids."""
        expired = await self.store.pop_expired(self.clock())
        stopped = []
        for record in expired:
            if record.session_id.startswith("pending:"):
                continue
            if self.provider.can_stop:
                try:
                    await self.provider.stop_session(record.session_id, STOP_MAX_DURATION)
                except ProviderError as exc:
                    # LiveAvatar also ends it itself at max_session_duration.
                    log.warning("avatar_session_stop_failed", session_id=record.session_id, reason=exc.message)
                    continue
            log.info("avatar_session_expired", session_id=record.session_id, provider=record.provider)
            stopped.append(record.session_id)
        return stopped

    async def run_reaper(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except Exception as exc:  # the store may be briefly down; try again next round
                log.warning("avatar_reaper_failed", error=type(exc).__name__)
