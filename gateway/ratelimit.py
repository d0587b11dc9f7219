"""Rate limiting with the ``limits`` library: the one place limits are applied
and the RateLimit headers stamped.

Where: ``limited(route, endpoint)`` wraps each route's endpoint and counts the
request against the route's per-IP and per-credential rules before the
handler runs; a handler that learns the sessionId from the body (chat) calls
``count_session`` for the per-session rules. Each rule is counted exactly
once per request. ``stamp_headers`` (called by the request context's ``send`` wrapper) stamps the tightest
decision's ``RateLimit-Policy`` / ``RateLimit`` headers on *every* response of
a limited route, errors included (a 502 tells the client its budget too).

Algorithm: the moving window (``MovingWindowRateLimiter``): exact, it never
admits more than N requests in any window of the configured length. In Redis
each hit is one Lua script (check and record in one atomic step, no
read-then-write race), so any number of workers and replicas sharing one
Redis admit exactly N. ``limits`` has no token bucket; bursts are shaped by
stacking limits (``10/second;60/minute``). A request must pass every limit of
its route; limits are hit in order and the first refusal ends the check, so a
request refused by a later limit still counted against the earlier ones
(conservative: never more than N admitted by any one limit).

Keys: a rule counts per client IP (default; see gateway/proxies.py for how
the IP is found behind nginx), per credential (a hash of the
``Authorization`` header, never the credential itself) or per sessionId.

Storage failures: every check (all the storage calls of a request's rules) has a
short deadline (``rate_limit.storage_timeout``). When Redis is down or slow the gateway
neither hangs nor answers 500: ``on_storage_error: open`` admits the request,
logs and counts it; ``closed`` answers 503 SERVICE_UNAVAILABLE. Nothing is
cached about the failure, so the next request tries Redis again and the
limiter recovers by itself when Redis returns.

Round trips: ``limits`` offers no call that both counts a hit and reports the
window, so on Redis each rule costs ``hit`` plus ``get_window_stats``, two round
trips. On ``memory://`` the hit reads the window in the same in-process step
(``SweptMemoryStorage.acquire_and_count``): one storage call per rule.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.storage import memory as _memory
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from limits.util import WindowStats
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from gateway import metrics
from gateway.errors import LimiterUnavailable, RateLimited
from gateway.proxies import client_ip
from gateway.settings import RateLimitRule, RateLimitSettings, Route

log = structlog.get_logger("gateway.ratelimit")

T = TypeVar("T")


@dataclass(frozen=True)
class Decision:
    """What the limiter found: the tightest limit's policy and what remains of it."""

    limit: int
    window: int
    remaining: int
    reset: int

    def _values(self) -> tuple[str, str]:
        # draft-ietf-httpapi-ratelimit-headers: one policy item, named by its window.
        return f'"default";q={self.limit};w={self.window}', f'"default";r={self.remaining};t={self.reset}'

    def headers(self) -> dict[str, str]:
        policy, state = self._values()
        return {"RateLimit-Policy": policy, "RateLimit": state}

    def raw_headers(self) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        """``headers()`` as ASGI raw header pairs, for stamping a response start message."""
        policy, state = self._values()
        return (b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode())


def credential_key(authorization: str | None) -> str:
    """A stable, non-reversible key for a credential (keys must not leak it)."""
    if not authorization:
        return "anonymous"
    return hashlib.sha256(authorization.encode()).hexdigest()[:32]


class RateLimiter:
    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.storage = open_storage(settings.storage_url)
        self.strategy = MovingWindow(self.storage)
        self.clock = clock
        found = getattr(self.storage, "base_exceptions", ())
        base: tuple[type[Exception], ...] = found if isinstance(found, tuple) else (found,)
        self.errors: tuple[type[Exception], ...] = (TimeoutError, ConnectionError, OSError, *base)
        # Requests admitted without a check because the storage failed (fail-open).
        self.failed_open = 0

    async def check(self, scope: str, rules: tuple[RateLimitRule, ...], keys: dict[str, str]) -> Decision | None:
        """Count one request against ``rules``; raise RateLimited when over a limit.

        ``keys`` maps a key kind (ip, credential, session) to its value; rules
        whose kind is absent are skipped (e.g. session before a session exists).
        """
        if not rules:
            return None
        try:
            # One deadline for the whole check (every rule's storage calls), not one per call.
            return await self._call(self._check(scope, rules, keys))
        except LimiterUnavailable as exc:
            if self.settings.on_storage_error == "closed":
                metrics.LIMITER_STORAGE_ERRORS.labels("refused").inc()
                log.error("ratelimit_storage_unavailable", error=exc.detail, action="refused")
                raise
            self.failed_open += 1
            metrics.LIMITER_STORAGE_ERRORS.labels("admitted").inc()
            log.error(
                "ratelimit_storage_unavailable", error=exc.detail, action="admitted", failed_open=self.failed_open
            )
            return None

    async def _check(self, scope: str, rules: tuple[RateLimitRule, ...], keys: dict[str, str]) -> Decision | None:
        tightest: Decision | None = None
        for rule in rules:
            value = keys.get(rule.key)
            if value is None:
                continue
            for item in rule.items:
                identifiers = (scope, rule.key, value)
                admitted = await self.strategy.hit(item, *identifiers)
                stats = await self.strategy.window_after_hit(item, *identifiers)
                decision = Decision(
                    limit=item.amount,
                    window=item.get_expiry(),
                    remaining=max(0, stats.remaining),
                    reset=max(0, math.ceil(stats.reset_time - self.clock())),
                )
                if not admitted:
                    retry_after = max(1, decision.reset)
                    headers = {**decision.headers(), "Retry-After": str(retry_after)}
                    metrics.RATE_LIMITED.labels(scope).inc()  # scope: the route's path template
                    raise RateLimited(
                        f"Too many requests: limit is {_describe(item)}; retry in {retry_after}s",
                        headers=headers,
                    )
                if tightest is None or decision.remaining < tightest.remaining:
                    tightest = decision
        return tightest

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.settings.storage_timeout):
                return await awaitable
        except TimeoutError:
            raise LimiterUnavailable(detail=f"no answer within {self.settings.storage_timeout:g}s") from None
        except self.errors as exc:
            raise LimiterUnavailable(detail=type(exc).__name__) from None

    @property
    def redis(self) -> Any | None:
        """The storage's redis-py client (Redis storages), for others sharing the same server."""
        return getattr(getattr(self.storage, "bridge", None), "storage", None)

    async def close(self) -> None:
        """Close the storage's connections (Redis); memory storage has none."""
        client = self.redis
        if client is not None and hasattr(client, "aclose"):
            try:
                await client.aclose()
            except Exception as exc:
                log.warning("ratelimit_storage_close_failed", error=type(exc).__name__)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.storage_timeout):
                return bool(await self.storage.check())
        except Exception:
            return False


def open_storage(url: str) -> Storage:
    """``memory://`` or ``redis://...`` (users write the sync names; the asyncio storages
    are ``async+...``). Redis goes through redis-py, the client most deployments know."""
    uri = url if url.startswith("async+") else f"async+{url}"
    if uri.startswith("async+memory://"):
        return SweptMemoryStorage(uri)
    options: dict[str, str] = {}
    if uri.startswith(("async+redis://", "async+rediss://")):
        options["implementation"] = "redispy"
    storage = storage_from_string(uri, **options)
    assert isinstance(storage, Storage)
    return storage


class MovingWindow(MovingWindowRateLimiter):
    """``limits``' moving window, plus the window read that follows a hit.

    On the in-process storage (``SweptMemoryStorage``) ``hit`` reads the window in the
    same step and keeps it for ``window_after_hit``: one storage call per rule. On any
    other storage ``window_after_hit`` is ``get_window_stats`` (Redis: a second round trip).
    The kept window is read right after the hit, with no suspension in between (the
    in-process hit never yields), so no other request's hit can come between them.
    """

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self._memory = storage if isinstance(storage, SweptMemoryStorage) else None
        self._kept: tuple[RateLimitItem, tuple[str, ...], WindowStats] | None = None

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        if self._memory is None:
            return await super().hit(item, *identifiers, cost=cost)
        expiry = item.get_expiry()
        admitted, start, count = self._memory.acquire_and_count(item.key_for(*identifiers), item.amount, expiry, cost)
        self._kept = (item, identifiers, WindowStats(start + expiry, item.amount - count))
        return admitted

    async def window_after_hit(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] is item and kept[1] == identifiers:
            return kept[2]
        return await self.get_window_stats(item, *identifiers)


class SweptMemoryStorage(MemoryStorage):
    """``limits``' asyncio memory storage with a cheaper expiry.

    Its own expiry task restarts after every hit and walks *every* key, handing each
    key's list to a worker thread (``asyncio.to_thread``) to bisect it: with a distinct
    key per visitor (tens of thousands a minute at load) the event loop spent more time
    on those thread hops than on the hits (bench/README.md, issue 17). Here a sweep runs
    at most every ``SWEEP_SECONDS``, in the loop, dropping keys whose entries have all
    expired and trimming the others, a bounded slice of keys between yields. Counting is
    ``limits``' arithmetic, unchanged; ``acquire_and_count`` does its hit and its window
    read in one step (``MovingWindow``). (``_MemoryStorage__schedule_expiry`` is the name-mangled
    private hook its hits call; tests/test_ratelimit.py checks the sweep.)
    """

    SWEEP_SECONDS = 5.0
    _SLICE = 2000  # keys per step between yields to the loop

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri, **options)
        self._next_sweep = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        now = _memory.time.time()  # type: ignore[attr-defined]  # limits' clock (tests replace it)
        if now < self._next_sweep or (self.timer is not None and not self.timer.done()):
            return
        self._next_sweep = now + self.SWEEP_SECONDS
        self.timer = asyncio.create_task(self.sweep())

    def acquire_and_count(self, key: str, limit: int, expiry: int, amount: int = 1) -> tuple[bool, float, int]:
        """``acquire_entry`` and then ``get_moving_window`` of ``limits``' memory storage, in
        one synchronous step: (admitted, start of the window, entries in it). The same
        arithmetic as theirs; with no await inside, the key's lock is never needed."""
        if amount > limit:
            admitted = False
        else:
            self._schedule_sweep()
            events = self.events.setdefault(key, [])
            timestamp = _memory.time.time()  # type: ignore[attr-defined]
            entry = events[limit - amount] if len(events) > limit - amount else None
            admitted = not (entry and entry.atime >= timestamp - expiry)
            if admitted:
                events[:0] = [_memory.Entry(expiry)] * amount
        timestamp = _memory.time.time()  # type: ignore[attr-defined]
        if events := self.events.get(key, []):
            oldest = bisect.bisect_left(events, -(timestamp - expiry), key=lambda entry: -entry.atime)
            return admitted, events[oldest - 1].atime, oldest
        return admitted, timestamp, 0

    async def sweep(self) -> None:
        """Forget what has expired: whole keys, and the expired tail of the others."""
        now = _memory.time.time()  # type: ignore[attr-defined]
        for n, key in enumerate(list(self.events)):
            if n and n % self._SLICE == 0:
                await asyncio.sleep(0)
            events = self.events.get(key)
            if not events or events[0].expiry <= now:  # newest first: all of them expired
                self.events.pop(key, None)
                self.locks.pop(key, None)
            elif events[-1].expiry <= now:
                self.events[key] = [e for e in events if e.expiry > now]
        for key in [k for k, at in self.expirations.items() if at <= now]:
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            self.locks.pop(key, None)


def _describe(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.amount} per {item.multiples} {unit}s" if item.multiples > 1 else f"{item.amount} per {unit}"


# -- applying limits to routes ------------------------------------------------------


Endpoint = Callable[[Request], Awaitable[Response]]


def limited(route: Route, endpoint: Endpoint) -> Endpoint:
    """``endpoint`` behind the route's per-IP and per-credential limits."""
    if not route.rate_limits:
        return endpoint

    async def guarded(request: Request) -> Response:
        keys = {"ip": client_ip(request), "credential": credential_key(request.headers.get("authorization"))}
        await _count(request, route, keys)
        return await endpoint(request)

    return guarded


async def count_session(request: Request, route: Route, session_id: str) -> None:
    """Count the request against the route's per-session limits, once its sessionId is known."""
    await _count(request, route, {"session": session_id})


async def _count(request: Request, route: Route, keys: dict[str, str]) -> None:
    limiter: RateLimiter = request.state.limiter
    state = request.scope["state"]
    decision = await limiter.check(route.path, route.rate_limits, keys)
    if decision is not None:
        previous = state.get("ratelimit")
        if previous is None or decision.remaining < previous.remaining:
            state["ratelimit"] = decision


def stamp_headers(state: dict[str, Any], message: Message) -> None:
    """Stamp the tightest decision's headers on a response start message of a limited
    route, whatever produced it (handler, error boundary). A refusal (429) carries its own.

    Called from the one ``send`` wrapper of ``middleware.RequestContextMiddleware`` (no
    middleware layer of its own: every resumption of a handler walks each layer's frame)."""
    decision: Decision | None = state.get("ratelimit")
    if decision is None:
        return
    headers = message.get("headers") or []
    if not any(name == b"ratelimit" for name, _ in headers):
        policy, remaining = decision.raw_headers()
        kept = [h for h in headers if h[0] != b"ratelimit-policy"]
        message["headers"] = [*kept, policy, remaining]
