"""The circuit breaker with its clock injected: opens, fails fast, half-opens, closes."""

from __future__ import annotations

import pytest
from pytest_httpx import HTTPXMock

from gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from gateway.errors import CircuitOpen, ProviderError, UpstreamFailed
from gateway.settings import BreakerSettings
from tests.conftest import make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, failures: int = 3, cooldown: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker("/api/chat", BreakerSettings(failures=failures, cooldown=cooldown), "Chat backend", clock)


def fail(b: CircuitBreaker, exc: Exception | None = None) -> None:
    with pytest.raises(ProviderError), b.admit():
        raise exc or UpstreamFailed("down")


def succeed(b: CircuitBreaker) -> None:
    with b.admit():
        pass


def test_opens_after_the_configured_run_of_failures_and_fails_fast() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b)
    fail(b)
    assert b.state == CLOSED
    fail(b)
    assert b.state == OPEN
    clock.now += 10
    with pytest.raises(CircuitOpen) as caught:
        b.admit()
    assert caught.value.message == "Chat backend is failing; not called for another 20.0s (circuit breaker open)"


def test_a_success_resets_the_run() -> None:
    b = breaker(Clock())
    fail(b)
    fail(b)
    succeed(b)
    fail(b)
    fail(b)
    assert b.state == CLOSED


def test_answers_of_the_wrong_shape_do_not_open_it() -> None:
    b = breaker(Clock(), failures=1)
    fail(b, ProviderError("Chat backend answer has nothing at 'response', expected a string"))
    assert b.state == CLOSED


def test_half_opens_after_the_cooldown_and_one_probe_at_a_time() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    fail(b)
    clock.now += 30
    assert b.state == HALF_OPEN
    probe = b.admit()
    with pytest.raises(CircuitOpen) as caught:
        b.admit()  # a second caller while the probe is in flight
    assert "one probe request is checking" in caught.value.message
    with probe:
        pass
    assert b.state == CLOSED
    succeed(b)


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    fail(b)
    clock.now += 30
    fail(b)
    assert b.state == OPEN
    clock.now += 29
    with pytest.raises(CircuitOpen):
        b.admit()
    clock.now += 1
    assert b.state == HALF_OPEN


def test_an_abandoned_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    fail(b)
    clock.now += 30
    with pytest.raises(KeyboardInterrupt), b.admit():  # cancelled: the client went away
        raise KeyboardInterrupt
    succeed(b)
    assert b.state == CLOSED


def test_through_the_app_open_breaker_fails_fast_takes_the_fallback_and_shows_in_health(
    client_for, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url="http://backend.test/api/chat", status_code=500, is_reusable=True)
    settings = make_settings(chat_extra="""      breaker: {failures: 2, cooldown: 60s}
    fallback_response: One moment please.""")
    client = client_for(settings)
    assert client.get("/api/health").json()["breakers"] == {"/api/chat": "closed"}
    for _ in range(2):
        assert client.post("/api/chat", json={"message": "hi"}).json()["fallback"] is True
    posts = [r for r in httpx_mock.get_requests() if r.method == "POST"]
    assert len(posts) == 2
    r = client.post("/api/chat", json={"message": "hi", "sessionId": "s"})
    assert r.status_code == 200 and r.headers["x-gateway-fallback"] == "true"
    assert r.json() == {"response": "One moment please.", "sources": [], "sessionId": "s", "fallback": True}
    assert len([r for r in httpx_mock.get_requests() if r.method == "POST"]) == 2  # not called: failed fast
    assert client.get("/api/health").json()["breakers"] == {"/api/chat": "open"}
