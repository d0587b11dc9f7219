"""Rate limits: keys, stacked limits, headers, Retry-After with injected time, Redis shared by
two gateway processes (exactness), and Redis failing mid-test (fail-open / fail-closed)."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import limits.aio.storage.memory
import pytest
from pytest_httpx import HTTPXMock
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.errors import RateLimited, ServiceUnavailable
from gateway.ratelimit import RateLimiter
from gateway.settings import RateLimitRule, RateLimitSettings
from tests.conftest import BACKEND_URL, BASE_YAML, free_port, make_settings, serve
from tests.services import Redis, gateway_process

ANSWER = {"response": "ok", "sources": []}


def rules(text: str) -> tuple[RateLimitRule, ...]:
    settings = make_settings(chat_extra=f"    rate_limit: {text}")
    return settings.routes[0].rate_limits


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """One injected clock for the limiter and for limits' memory storage."""
    now = [1_000_000.0]
    monkeypatch.setattr(limits.aio.storage.memory, "time", types.SimpleNamespace(time=lambda: now[0]))
    return now


async def test_retry_after_is_the_real_wait(clock: list[float]) -> None:
    limiter = RateLimiter(RateLimitSettings(), clock=lambda: clock[0])
    rule = rules("2/minute")
    await limiter.check("/c", rule, {"ip": "a"})  # t = 0
    clock[0] += 10
    decision = await limiter.check("/c", rule, {"ip": "a"})  # t = 10
    assert decision is not None
    assert decision.headers() == {"RateLimit-Policy": '"default";q=2;w=60', "RateLimit": '"default";r=0;t=50'}
    clock[0] += 15  # t = 25: the first hit leaves the window at t = 60
    with pytest.raises(RateLimited) as refused:
        await limiter.check("/c", rule, {"ip": "a"})
    assert refused.value.headers["Retry-After"] == "35"
    assert refused.value.message == "Too many requests: limit is 2 per minute; retry in 35s"
    clock[0] += 35.5  # t = 60.5: admitted again, exactly when promised
    assert await limiter.check("/c", rule, {"ip": "a"}) is not None


async def test_the_memory_sweep_forgets_expired_keys_and_keeps_live_ones(clock: list[float]) -> None:
    limiter = RateLimiter(RateLimitSettings(), clock=lambda: clock[0])
    rule = rules("2/minute")
    await limiter.check("/c", rule, {"ip": "old"})  # t = 0
    clock[0] += 45
    await limiter.check("/c", rule, {"ip": "live"})  # t = 45
    await limiter.check("/c", rule, {"ip": "live"})
    clock[0] += 30  # t = 75: "old" left its window, "live" has not
    await limiter.storage.sweep()  # type: ignore[attr-defined]
    keys = limiter.storage.events  # type: ignore[attr-defined]
    assert [k for k in keys if "old" in k] == [] and len([k for k in keys if "live" in k]) == 1
    with pytest.raises(RateLimited):  # the live key still counts both hits
        await limiter.check("/c", rule, {"ip": "live"})
    assert await limiter.check("/c", rule, {"ip": "old"}) is not None  # a fresh window


async def test_stacked_limits_shape_bursts(clock: list[float]) -> None:
    limiter = RateLimiter(RateLimitSettings(), clock=lambda: clock[0])
    rule = rules("2/second;5/minute")
    admitted = 0
    for _second in range(10):
        for _ in range(3):
            try:
                await limiter.check("/c", rule, {"ip": "a"})
                admitted += 1
            except RateLimited:
                pass
        clock[0] += 1
    assert admitted == 5  # 2 + 2 + 1 within the minute, never 3 in one second
    with pytest.raises(RateLimited) as refused:
        await limiter.check("/c", rule, {"ip": "a"})
    assert refused.value.message.startswith("Too many requests: limit is 5 per minute")


async def test_the_tightest_limit_is_reported(clock: list[float]) -> None:
    limiter = RateLimiter(RateLimitSettings(), clock=lambda: clock[0])
    decision = await limiter.check("/c", rules("10/second;3/minute"), {"ip": "a"})
    assert decision is not None and (decision.limit, decision.remaining, decision.window) == (3, 2, 60)


async def test_keys_are_independent(clock: list[float]) -> None:
    limiter = RateLimiter(RateLimitSettings(), clock=lambda: clock[0])
    rule = rules("1/minute")
    await limiter.check("/c", rule, {"ip": "a"})
    await limiter.check("/c", rule, {"ip": "b"})  # another client
    await limiter.check("/other", rule, {"ip": "a"})  # another route
    with pytest.raises(RateLimited):
        await limiter.check("/c", rule, {"ip": "a"})


def test_limit_by_credential(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER, is_reusable=True)
    client = client_for(chat_extra="    rate_limit: {limit: 2/minute, key: credential}")
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    assert [client.post("/api/chat", json={"message": "q"}, headers=alice).status_code for _ in range(3)] == [200, 200, 429]
    assert client.post("/api/chat", json={"message": "q"}, headers=bob).status_code == 200


def test_limit_by_session(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER, is_reusable=True)
    client = client_for(chat_extra="    rate_limit: [{limit: 2/minute, key: session}, 100/minute]")
    send = lambda s: client.post("/api/chat", json={"message": "q", "sessionId": s}).status_code  # noqa: E731
    assert [send("s1"), send("s1"), send("s1"), send("s2")] == [200, 200, 429, 200]


# -- Redis ------------------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()


def backend_app() -> Starlette:
    async def chat(request):  # type: ignore[no-untyped-def]
        return JSONResponse(ANSWER)

    return Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])


@pytest.mark.integration
async def test_two_gateway_processes_sharing_redis_admit_exactly_the_limit(redis: Redis, tmp_path: Path) -> None:
    with serve(backend_app()) as backend:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            # closed + a generous deadline: a storage failure would show as a 503, never as
            # a silently admitted request, so the counts below test the algorithm alone.
            f"rate_limit: {{storage: '{redis.url}', on_storage_error: closed, storage_timeout: 10s}}\n"
            + BASE_YAML.format(url=f"{backend}/api/chat", chat_extra="    rate_limit: 60/minute")
        )
        ports = [free_port(), free_port()]
        with gateway_process(config, ports[0]), gateway_process(config, ports[1]):
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(f"http://127.0.0.1:{ports[i % 2]}/api/chat", json={"message": f"q{i}"})
                        for i in range(200)
                    )
                )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 60
    assert statuses.count(429) == 140
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"RATE_LIMITED"}
    # Requests alternated between the processes: unshared budgets would have admitted 120.
    assert all(int(r.headers["retry-after"]) > 0 for r in responses if r.status_code == 429)


def redis_yaml(redis: Redis, mode: str) -> str:
    return BASE_YAML.format(url="http://backend.test/api/chat", chat_extra="    rate_limit: 5/minute").replace(
        "server: {log_format: json}",
        f"server: {{log_format: json}}\nrate_limit: {{storage: '{redis.url}', on_storage_error: {mode}, storage_timeout: 200ms}}",
    )


@pytest.mark.integration
def test_fail_closed_then_recovers(redis: Redis, client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER, is_reusable=True)
    client = client_for(make_settings(yaml_text=redis_yaml(redis, "closed")))
    assert client.post("/api/chat", json={"message": "q"}).status_code == 200
    redis.stop()
    r = client.post("/api/chat", json={"message": "q"})
    assert r.status_code == 503
    assert r.json() == {"error": {"code": "SERVICE_UNAVAILABLE", "message": "Rate limiter is unavailable; try again shortly"}}
    redis.start()  # same port, empty state
    statuses = [client.post("/api/chat", json={"message": "q"}).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


@pytest.mark.integration
def test_fail_open_admits_counts_and_recovers(
    redis: Redis, client_for, httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str]
) -> None:
    httpx_mock.add_response(json=ANSWER, is_reusable=True)
    client = client_for(make_settings(yaml_text=redis_yaml(redis, "open")))
    assert client.post("/api/chat", json={"message": "q"}).status_code == 200
    redis.stop()
    assert [client.post("/api/chat", json={"message": "q"}).status_code for _ in range(8)] == [200] * 8
    assert client.app_state["limiter"].failed_open == 8  # type: ignore[attr-defined]
    assert '"action": "admitted"' in capsys.readouterr().err
    redis.start()
    statuses = [client.post("/api/chat", json={"message": "q"}).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


async def test_slow_storage_times_out_instead_of_hanging(clock: list[float]) -> None:
    limiter = RateLimiter(RateLimitSettings(on_storage_error="closed", storage_timeout=0.05))

    async def never(*args: object, **kwargs: object) -> bool:
        await asyncio.sleep(3600)
        return True

    limiter.strategy.hit = never  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailable):
        await limiter.check("/c", rules("1/minute"), {"ip": "a"})


def test_rate_limit_headers_are_on_error_responses_too(client_for, httpx_mock: HTTPXMock) -> None:
    # A 502 (and any other failure) still tells the client where its budget stands.
    httpx_mock.add_response(url=BACKEND_URL, method="POST", status_code=503)
    r = client_for(chat_extra="    rate_limit: 5/minute").post("/api/chat", json={"message": "hi"})
    assert r.status_code == 502
    assert r.headers["ratelimit-policy"] == '"default";q=5;w=60'
    assert r.headers["ratelimit"].startswith('"default";r=4;t=')
