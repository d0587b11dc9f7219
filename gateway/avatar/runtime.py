"""Wiring: the provider chosen in the config, the signer, the store and the
reaper, opened once in the app's lifespan (lifespan state ``avatar``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.avatar.base import AvatarProvider, Clock, VendorClient
from gateway.avatar.guard import SessionGuard
from gateway.avatar.heygen import HeyGenProvider
from gateway.avatar.liveavatar import LiveAvatarProvider
from gateway.avatar.local import LocalProvider
from gateway.avatar.sessions import SessionStore, open_session_store, store_url
from gateway.health import CachedProbe
from gateway.settings import AVATAR_BASE_URLS, AvatarSettings, HealthSettings, Settings
from gateway.signing import Signer, ephemeral_secret
from gateway.upstream import UpstreamClient

log = structlog.get_logger("gateway.avatar")


@dataclass
class AvatarRuntime:
    settings: AvatarSettings
    provider: AvatarProvider
    store: SessionStore
    guard: SessionGuard
    signer: Signer

    def probe(self, health: HealthSettings) -> CachedProbe:
        async def probe() -> bool:
            async with asyncio.timeout(health.probe_timeout):
                return await self.provider.probe()

        return CachedProbe(probe, health.cache_seconds)


def build_provider(settings: AvatarSettings, http: UpstreamClient, signer: Signer, clock: Clock) -> AvatarProvider:
    if settings.provider == "local":
        return LocalProvider(signer, clock)
    assert settings.api_key is not None  # config guarantees it for vendor providers
    base_url = settings.base_url or AVATAR_BASE_URLS[settings.provider]
    if settings.provider == "liveavatar":
        vendor = VendorClient("liveavatar", http, base_url, "X-API-KEY", settings.api_key, settings.timeouts)
        return LiveAvatarProvider(vendor, clock, settings.mode)
    vendor = VendorClient("heygen", http, base_url, "x-api-key", settings.api_key, settings.timeouts)
    return HeyGenProvider(vendor, clock)


@contextlib.asynccontextmanager
async def open_avatar(
    settings: Settings, http: UpstreamClient, clock: Clock | None = None, shared_redis: tuple[str, Any] | None = None
) -> AsyncIterator[AvatarRuntime | None]:
    """``shared_redis``: the rate limiter's (url, client), reused when the session store is the same server."""
    if not settings.uses_avatar:
        yield None
        return
    clock = clock or time.time
    avatar = settings.avatar
    secret: str | None = avatar.signing_secret
    if not secret:
        secret = ephemeral_secret()
        log.warning(
            "avatar_signing_secret_ephemeral",
            detail="avatar.signing_secret is not set: using a random secret for this process only. Tokens die "
            "with the process and replicas or workers reject each other's chatTokens. Set GATEWAY_SIGNING_SECRET.",
        )
    if any(r.handler == "token" for r in settings.routes) and not settings.auth.api_keys:
        log.warning(
            "token_route_without_api_keys",
            detail="auth.api_keys is empty: every call to the token route is refused with 401. Set GATEWAY_API_KEYS.",
        )
    signer = Signer(secret, clock)
    provider = build_provider(avatar, http, signer, clock)
    store = open_session_store(
        store_url(avatar.session_store, settings.rate_limit.storage_url), avatar.session_store_timeout, shared_redis
    )
    guard = SessionGuard(provider, store, avatar.session_ttl, avatar.max_concurrent_sessions, clock)
    reaper = asyncio.ensure_future(guard.run_reaper(avatar.reap_interval))
    try:
        yield AvatarRuntime(avatar, provider, store, guard, signer)
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await store.close()
