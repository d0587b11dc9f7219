"""Rate limiting with the ``limits`` library, in front of every route.

Algorithm: the moving window (``MovingWindowRateLimiter``): exact, it never
admits more than N requests in any window of the configured length, and in
Redis each hit is one Lua script, so the check and the increment are one
atomic operation (no read-then-write race, cf. APISIX #12592, Kong #11846).
``limits`` has no token bucket; bursts are shaped by stacking limits
(``10/second;60/minute``). A request must pass every limit of its route;
the limits are hit in order and the first that refuses ends the check.

Keys: a rule counts per client IP (default), per credential (a hash of the
``Authorization`` header, never the credential itself) or per sessionId.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from gateway.config import RateLimitRule, RateLimitSettings
from gateway.errors import RateLimited, ServiceUnavailable

log = structlog.get_logger("gateway.ratelimit")

# A limiter that cannot answer within this long is treated as unavailable.
STORAGE_TIMEOUT = 0.5


@dataclass(frozen=True)
class Decision:
    """What the limiter found: the tightest limit's policy and what remains of it."""

    limit: int
    window: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        # draft-ietf-httpapi-ratelimit-headers: one policy item, named by its window.
        return {
            "RateLimit-Policy": f'"default";q={self.limit};w={self.window}',
            "RateLimit": f'"default";r={self.remaining};t={self.reset}',
        }


def credential_key(authorization: str | None) -> str:
    """A stable, non-reversible key for a credential (keys must not leak it)."""
    if not authorization:
        return "anonymous"
    return hashlib.sha256(authorization.encode()).hexdigest()[:32]


class RateLimiter:
    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.time) -> None:
        self.storage: Storage = storage_from_string(_async_uri(settings.storage_url))
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.clock = clock

    async def check(self, scope: str, rules: tuple[RateLimitRule, ...], keys: dict[str, str]) -> Decision | None:
        """Count one request against ``rules``; raise RateLimited when over a limit.

        ``keys`` maps a key kind (ip, credential, session) to its value; rules
        whose kind is absent are skipped (e.g. session before a session exists).
        """
        tightest: Decision | None = None
        for rule in rules:
            value = keys.get(rule.key)
            if value is None:
                continue
            for item in rule.items:
                identifiers = (scope, rule.key, value)
                admitted = await self._call(self.strategy.hit(item, *identifiers))
                stats = await self._call(self.strategy.get_window_stats(item, *identifiers))
                decision = Decision(
                    limit=item.amount,
                    window=item.get_expiry(),
                    remaining=max(0, stats.remaining),
                    reset=max(0, math.ceil(stats.reset_time - self.clock())),
                )
                if not admitted:
                    retry_after = max(1, decision.reset)
                    headers = {**decision.headers(), "Retry-After": str(retry_after)}
                    raise RateLimited(
                        f"Too many requests: limit is {_describe(item)}; retry in {retry_after}s",
                        headers=headers,
                    )
                if tightest is None or decision.remaining < tightest.remaining:
                    tightest = decision
        return tightest

    async def _call(self, coro):  # type: ignore[no-untyped-def]
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT):
                return await coro
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.error("ratelimit_storage_unavailable", error=type(exc).__name__)
            raise ServiceUnavailable("Rate limiter is unavailable; try again shortly") from None


def _describe(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.amount} per {item.multiples} {unit}s" if item.multiples > 1 else f"{item.amount} per {unit}"


def _async_uri(url: str) -> str:
    # Users write redis://...; limits' asyncio storages are named async+redis://.
    return url if url.startswith("async+") else f"async+{url}"
