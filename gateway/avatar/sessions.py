"""Where minted sessions are recorded: the cost guard's shared state.

A session occupies a slot until its expiry. ``reserve`` admits a new slot
only while fewer than ``cap`` sessions are live (expiry in the future), as
one atomic step: in Redis a Lua script over a sorted set (score = expiry),
so replicas sharing the store can never admit more than the cap between
them (no read-then-write race). The slot is reserved *before* the vendor is
called, then ``commit`` renames it to the vendor's session id, or
``release`` frees it if minting failed.

``pop_expired`` removes and returns sessions past their expiry, atomically,
so with several replicas each expired session is stopped by exactly one.

Stores: ``memory://`` (one process) and ``redis://`` / ``rediss://`` /
``unix://`` (shared; redis.asyncio).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from gateway.errors import SessionStoreUnavailable

log = structlog.get_logger("gateway.avatar")

DEFAULT_PREFIX = "smarteravatar:avatar:"


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    provider: str
    expires_at: float

    def dumps(self) -> str:
        return json.dumps({"session_id": self.session_id, "provider": self.provider, "expires_at": self.expires_at})

    @classmethod
    def loads(cls, raw: str | bytes) -> SessionRecord:
        data = json.loads(raw)
        return cls(str(data["session_id"]), str(data["provider"]), float(data["expires_at"]))


class SessionStore(Protocol):
    async def reserve(self, record: SessionRecord, now: float, cap: int | None) -> float | None:
        """Record ``record`` unless ``cap`` live sessions exist; then return the
        earliest expiry among them (when a slot frees up) instead."""

    async def commit(self, slot: str, record: SessionRecord) -> None:
        """Replace the reserved ``slot`` by ``record``."""

    async def get(self, session_id: str) -> SessionRecord | None: ...

    async def release(self, session_id: str) -> bool:
        """Forget a session; True if it was recorded."""

    async def pop_expired(self, now: float, limit: int = 100) -> list[SessionRecord]: ...

    async def live(self, now: float) -> int: ...

    async def close(self) -> None: ...


class MemoryStore:
    """One process's sessions; operations never await, so each is atomic."""

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}

    async def reserve(self, record: SessionRecord, now: float, cap: int | None) -> float | None:
        live = [r.expires_at for r in self._records.values() if r.expires_at > now]
        if cap is not None and len(live) >= cap:
            return min(live)
        self._records[record.session_id] = record
        return None

    async def commit(self, slot: str, record: SessionRecord) -> None:
        self._records.pop(slot, None)
        self._records[record.session_id] = record

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    async def release(self, session_id: str) -> bool:
        return self._records.pop(session_id, None) is not None

    async def pop_expired(self, now: float, limit: int = 100) -> list[SessionRecord]:
        expired = sorted((r for r in self._records.values() if r.expires_at <= now), key=lambda r: r.expires_at)
        for record in expired[:limit]:
            del self._records[record.session_id]
        return expired[:limit]

    async def live(self, now: float) -> int:
        return sum(1 for r in self._records.values() if r.expires_at > now)

    async def close(self) -> None:
        return None


# KEYS: zset (session id -> expiry), hash (session id -> record JSON)
_RESERVE = """
local live = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
local cap = tonumber(ARGV[2])
if cap >= 0 and live >= cap then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return oldest[2]
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
return false
"""
_COMMIT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1
"""
_RELEASE = """
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
_POP_EXPIRED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local data = redis.call('HGET', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if data then table.insert(out, data) end
end
return out
"""


class RedisStore:
    """``client``: a redis.asyncio client to share (the rate limiter's, when both use
    the same server), or None to open one for ``url``; only an own client is closed."""

    def __init__(
        self, url: str, timeout: float = 0.5, prefix: str = DEFAULT_PREFIX, client: Any | None = None
    ) -> None:
        import redis.asyncio as redis

        self._owns = client is None
        self._redis: Any = client or redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        self._timeout = timeout
        self._keys = [f"{prefix}sessions", f"{prefix}records"]
        self._reserve = self._redis.register_script(_RESERVE)
        self._commit = self._redis.register_script(_COMMIT)
        self._release = self._redis.register_script(_RELEASE)
        self._pop_expired = self._redis.register_script(_POP_EXPIRED)

    def __repr__(self) -> str:
        return "RedisStore(url='**********')"

    async def reserve(self, record: SessionRecord, now: float, cap: int | None) -> float | None:
        args: list[str | int] = [
            repr(now), -1 if cap is None else cap, repr(record.expires_at), record.session_id, record.dumps()
        ]
        oldest = await self._call(self._reserve(keys=self._keys, args=args))
        return None if oldest is None else float(oldest)

    async def commit(self, slot: str, record: SessionRecord) -> None:
        args = [slot, repr(record.expires_at), record.session_id, record.dumps()]
        await self._call(self._commit(keys=self._keys, args=args))

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = await self._call(self._redis.hget(self._keys[1], session_id))
        return None if raw is None else SessionRecord.loads(raw)

    async def release(self, session_id: str) -> bool:
        return bool(await self._call(self._release(keys=self._keys, args=[session_id])))

    async def pop_expired(self, now: float, limit: int = 100) -> list[SessionRecord]:
        raws = await self._call(self._pop_expired(keys=self._keys, args=[repr(now), limit]))
        return [SessionRecord.loads(raw) for raw in raws]

    async def live(self, now: float) -> int:
        return int(await self._call(self._redis.zcount(self._keys[0], f"({now!r}", "+inf")))

    async def close(self) -> None:
        if self._owns:
            await self._redis.aclose()

    async def _call(self, coro: Any) -> Any:
        import redis.exceptions

        try:
            async with asyncio.timeout(self._timeout * 2):
                return await coro
        except (TimeoutError, OSError, redis.exceptions.RedisError) as exc:
            raise SessionStoreUnavailable(detail=type(exc).__name__) from None


def open_session_store(url: str, timeout: float = 0.5, shared: tuple[str, Any] | None = None) -> SessionStore:
    """``shared``: (url, client) of a Redis client already open; reused when ``url`` is the same."""
    if url.startswith("memory://"):
        return MemoryStore()
    if shared is not None and shared[0].removeprefix("async+") == url and shared[1] is not None:
        return RedisStore(url, timeout, client=shared[1])
    return RedisStore(url, timeout)


def store_url(session_store: str | None, limiter_url: str) -> str:
    """The configured store, else the limiter's storage when it is Redis (shared
    across replicas already), else memory."""
    if session_store:
        return session_store
    url = limiter_url.removeprefix("async+")
    return url if url.startswith(("redis://", "rediss://", "unix://")) else "memory://"
