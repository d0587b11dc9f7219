"""The cost guard: the concurrent-session cap, the maximum duration and the
reaper's stop call, with time injected (never slept), on memory and on a real
Redis; plus the session stores themselves."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from pytest_httpx import HTTPXMock

from gateway.avatar.base import MintedSession
from gateway.avatar.guard import SessionGuard
from gateway.avatar.sessions import MemoryStore, RedisStore, SessionRecord, SessionStore, store_url
from gateway.errors import ProviderError, RateLimited, ServiceUnavailable
from tests.services import Redis
from tests.tokens_support import (  # noqa: F401  (fixtures)
    BODY,
    LIVEAVATAR,
    START,
    VENDOR_KEY,
    FakeClock,
    auth,
    clock_fixture,
    token_client_fixture,
    token_settings,
)

TOKEN = "/api/get-access-token"


class FakeProvider:
    """A unit-test provider: mints numbered sessions, records stops."""

    name = "fake"

    def __init__(self, clock: FakeClock, can_stop: bool = True, fail: bool = False) -> None:
        self.clock = clock
        self.can_stop = can_stop
        self.fail = fail
        self.minted = 0
        self.stopped: list[tuple[str, str]] = []

    async def create_session(self, avatar_id: str, voice_id: str, duration: float) -> MintedSession:
        if self.fail:
            raise ProviderError("Avatar provider fake answered HTTP 500")
        self.minted += 1
        return MintedSession(f"s{self.minted}", f"token-{self.minted}", self.clock() + duration)

    async def stop_session(self, session_id: str, reason: str) -> None:
        self.stopped.append((session_id, reason))

    async def probe(self) -> bool:
        return True


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server = Redis(tmp_path)
    server.start()
    try:
        s = RedisStore(server.url, prefix="test:")
        yield s
        await s.close()
    finally:
        server.stop()


async def test_cap_admits_exactly_n_then_retry_after_the_oldest(store: SessionStore) -> None:
    clock = FakeClock()
    provider = FakeProvider(clock)
    guard = SessionGuard(provider, store, ttl=300, cap=3, clock=clock)
    for step in range(3):
        await guard.open("a", "v")
        clock.advance(10 * (step + 1))  # sessions expire at START+300, +310, +330
    assert clock.now == START + 60
    with pytest.raises(RateLimited) as refused:
        await guard.open("a", "v")
    assert refused.value.message == "Concurrent avatar session limit reached (3); retry in 240s"
    assert refused.value.headers == {"Retry-After": "240"}
    assert provider.minted == 3  # the vendor was not even asked
    assert await store.live(clock()) == 3
    clock.now = START + 300  # the first one is past its maximum duration
    minted = await guard.open("a", "v")
    assert minted.session_id == "s4"


async def test_reaper_stops_expired_sessions_once(store: SessionStore) -> None:
    clock = FakeClock()
    provider = FakeProvider(clock)
    guard = SessionGuard(provider, store, ttl=60, cap=None, clock=clock)
    await guard.open("a", "v")
    clock.advance(30)
    await guard.open("a", "v")
    assert await guard.reap() == [] and provider.stopped == []
    clock.advance(30)  # s1 reaches its maximum duration exactly
    assert await guard.reap() == ["s1"]
    assert provider.stopped == [("s1", "MAX_DURATION_REACHED")]
    assert await guard.reap() == []  # never stopped twice
    clock.advance(1000)
    assert await guard.reap() == ["s2"]
    assert await store.live(clock()) == 0


async def test_failed_mint_releases_the_reserved_slot(store: SessionStore) -> None:
    clock = FakeClock()
    provider = FakeProvider(clock, fail=True)
    guard = SessionGuard(provider, store, ttl=60, cap=1, clock=clock)
    for _ in range(3):
        with pytest.raises(ProviderError):
            await guard.open("a", "v")
    assert await store.live(clock()) == 0


async def test_end_stops_and_frees(store: SessionStore) -> None:
    clock = FakeClock()
    provider = FakeProvider(clock)
    guard = SessionGuard(provider, store, ttl=60, cap=1, clock=clock)
    await guard.open("a", "v")
    assert await guard.end("s1") is True
    assert provider.stopped == [("s1", "USER_CLOSED")]
    assert await guard.end("s1") is False
    assert (await guard.open("a", "v")).session_id == "s2"


async def test_concurrent_opens_never_exceed_the_cap(store: SessionStore) -> None:
    clock = FakeClock()
    provider = FakeProvider(clock)
    guards = [SessionGuard(provider, store, ttl=60, cap=3, clock=clock) for _ in range(4)]  # "replicas"
    results = await asyncio.gather(*(g.open("a", "v") for g in guards for _ in range(5)), return_exceptions=True)
    assert sum(isinstance(r, MintedSession) for r in results) == 3
    assert sum(isinstance(r, RateLimited) for r in results) == 17


async def test_two_replicas_sharing_redis_admit_exactly_the_cap(tmp_path) -> None:
    server = Redis(tmp_path)
    server.start()
    stores = [RedisStore(server.url, prefix="shared:") for _ in range(2)]
    try:
        clock = FakeClock()
        provider = FakeProvider(clock)  # one vendor, so session ids are unique
        guards = [SessionGuard(provider, s, ttl=60, cap=3, clock=clock) for s in stores]
        results = await asyncio.gather(*(g.open("a", "v") for g in guards for _ in range(10)), return_exceptions=True)
        assert sum(isinstance(r, MintedSession) for r in results) == 3
        # Expired sessions are handed to exactly one replica's reaper.
        clock.advance(60)
        reaped = await asyncio.gather(*(g.reap() for g in guards))
        assert sorted(len(r) for r in reaped) in ([0, 3], [1, 2]) and sum(len(r) for r in reaped) == 3
    finally:
        for s in stores:
            await s.close()
        server.stop()


async def test_redis_down_is_503_not_500(tmp_path) -> None:
    server = Redis(tmp_path)
    store = RedisStore(server.url)  # never started
    try:
        guard = SessionGuard(FakeProvider(FakeClock()), store, ttl=60, cap=3, clock=FakeClock())
        with pytest.raises(ServiceUnavailable) as down:
            await guard.open("a", "v")
        assert down.value.message == "Avatar session store is unavailable; try again shortly"
    finally:
        await store.close()


def test_record_round_trip_and_store_url_defaults() -> None:
    record = SessionRecord("s-1", "liveavatar", 12.5)
    assert SessionRecord.loads(record.dumps()) == record
    assert store_url(None, "memory://") == "memory://"
    assert store_url(None, "redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert store_url(None, "async+redis://h:1/0") == "redis://h:1/0"
    assert store_url(None, "memcached://h:11211") == "memory://"
    assert store_url("memory://", "redis://h/0") == "memory://"


# -- through the app, with LiveAvatar faked -------------------------------------------------

LA_SETTINGS = {"provider": "liveavatar", "api_key": "${LIVEAVATAR_API_KEY}", "session_ttl": "5m",
               "max_concurrent_sessions": 2}


def la_ok(n: int) -> dict:
    return {"code": 100, "data": {"session_id": f"la-{n}", "session_token": f"la-token-{n}"}}


def test_app_cap_429_and_expiry_stop_at_liveavatar(token_client, clock, httpx_mock: HTTPXMock) -> None:
    for n in (1, 2, 3):
        httpx_mock.add_response(url=f"{LIVEAVATAR}/v1/sessions/token", json=la_ok(n))
    client = token_client(avatar=LA_SETTINGS)
    assert client.post(TOKEN, json=BODY, headers=auth()).json()["sessionId"] == "la-1"
    clock.advance(100)
    assert client.post(TOKEN, json=BODY, headers=auth()).json()["sessionId"] == "la-2"
    refused = client.post(TOKEN, json=BODY, headers=auth())
    assert refused.status_code == 429
    assert refused.json() == {"error": {"code": "RATE_LIMITED",
                                        "message": "Concurrent avatar session limit reached (2); retry in 200s"}}
    assert refused.headers["retry-after"] == "200"
    assert len(httpx_mock.get_requests(url=f"{LIVEAVATAR}/v1/sessions/token")) == 2

    # la-1 reaches its maximum duration: the reaper (run here directly) stops it at LiveAvatar.
    httpx_mock.add_response(url=f"{LIVEAVATAR}/v1/sessions/stop", json={"code": 100, "data": None})
    clock.advance(200)
    guard = client.app_state["avatar"].guard
    assert client.portal.call(guard.reap) == ["la-1"]
    stop = httpx_mock.get_request(url=f"{LIVEAVATAR}/v1/sessions/stop")
    assert json.loads(stop.content) == {"session_id": "la-1", "reason": "MAX_DURATION_REACHED"}
    assert stop.headers["x-api-key"] == VENDOR_KEY
    assert client.post(TOKEN, json=BODY, headers=auth()).json()["sessionId"] == "la-3"


def test_end_route_stops_at_liveavatar_and_keeps_slot_if_stop_fails(
    token_client, clock, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=f"{LIVEAVATAR}/v1/sessions/token", json=la_ok(1))
    client = token_client(avatar={**LA_SETTINGS, "max_concurrent_sessions": 1, "require_session_token": True})
    minted = client.post(TOKEN, json=BODY, headers=auth()).json()
    bearer = {"Authorization": f"Bearer {minted['chatToken']}"}

    httpx_mock.add_response(url=f"{LIVEAVATAR}/v1/sessions/stop", status_code=503)
    r = client.post("/api/sessions/end", headers=bearer)
    assert r.status_code == 502
    assert r.json()["error"]["message"] == "Avatar provider liveavatar answered HTTP 503"
    assert client.post(TOKEN, json=BODY, headers=auth()).status_code == 429  # may still be running: slot kept

    httpx_mock.add_response(url=f"{LIVEAVATAR}/v1/sessions/stop", json={"code": 100})
    r = client.post("/api/sessions/end", headers=bearer)
    assert r.json() == {"success": True, "sessionId": "la-1", "ended": True}
    stops = httpx_mock.get_requests(url=f"{LIVEAVATAR}/v1/sessions/stop")
    assert json.loads(stops[-1].content) == {"session_id": "la-1", "reason": "USER_CLOSED"}


@pytest.fixture
def redis(tmp_path) -> Iterator[Redis]:
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_replicas_share_sessions_through_redis(token_client, redis: Redis) -> None:
    # (Defaulting to the limiter's Redis is covered by the store_url test above.)
    settings = {"max_concurrent_sessions": 1, "session_store": redis.url}

    first = token_client(token_settings(settings))
    second = token_client(token_settings(settings))
    assert isinstance(first.app_state["avatar"].store, RedisStore)
    assert first.post(TOKEN, json=BODY, headers=auth()).status_code == 200
    # Another replica sharing the same Redis sees the slot taken.
    assert second.post(TOKEN, json=BODY, headers=auth()).status_code == 429


def test_session_store_shares_the_limiters_redis_client(token_client, redis: Redis) -> None:
    # One Redis server by default: one client (and pool) for the limiter and the session guard.
    client = token_client(token_settings(top={"rate_limit": {"storage": redis.url}}))
    store, limiter = client.app_state["avatar"].store, client.app_state["limiter"]
    assert isinstance(store, RedisStore) and limiter.redis is not None
    assert store._redis is limiter.redis
    assert client.post(TOKEN, json=BODY, headers=auth()).status_code == 200


def test_background_reaper_stops_expired_sessions(token_client, clock, httpx_mock: HTTPXMock) -> None:
    """The lifespan's reaper runs on its own; we wait for the stop call it makes
    (an event, not a duration) after moving the injected clock past expiry."""
    httpx_mock.add_response(url=f"{LIVEAVATAR}/v1/sessions/token", json=la_ok(1))
    httpx_mock.add_response(url=f"{LIVEAVATAR}/v1/sessions/stop", json={"code": 100})
    client = token_client(avatar={**LA_SETTINGS, "reap_interval": "10ms"})
    assert client.post(TOKEN, json=BODY, headers=auth()).status_code == 200
    clock.advance(300)
    store = client.app_state["avatar"].store
    deadline = time.monotonic() + 10
    while client.portal.call(store.live, 0.0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.portal.call(store.live, 0.0) == 0
    stop = httpx_mock.get_request(url=f"{LIVEAVATAR}/v1/sessions/stop")
    assert json.loads(stop.content) == {"session_id": "la-1", "reason": "MAX_DURATION_REACHED"}
