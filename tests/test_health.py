"""GET /api/health: provider values, overall status, probe caching."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pytest_httpx import HTTPXMock

from gateway.health import CONNECTED, DISCONNECTED, CachedProbe, overall_status
from tests.conftest import BACKEND_URL, make_settings

STT = "http://stt.test/health"
AVATAR = "http://avatar.test/health"


def with_providers() -> str:
    return f"health: {{stt_url: '{STT}', avatar_url: '{AVATAR}', cache: 1h}}\n"


def settings_with(health_yaml: str = ""):
    from tests.conftest import BASE_YAML

    return make_settings(yaml_text=health_yaml + BASE_YAML.format(url=BACKEND_URL, chat_extra=""))


def test_backend_reachable_and_others_not_configured(client_for, httpx_mock: HTTPXMock) -> None:
    # A chat endpoint answering 405 to a GET is up; the probe never sends a chat turn.
    httpx_mock.add_response(url=BACKEND_URL, method="GET", status_code=405)
    r = client_for().get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["providers"] == {"llm": "connected", "stt": "not_configured", "avatar": "not_configured"}
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 20
    assert r.headers["cache-control"] == "no-store"


def test_backend_down_is_503_down(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=BACKEND_URL)
    r = client_for().get("/api/health")
    assert r.status_code == 503
    assert r.json()["status"] == "down"
    assert r.json()["providers"]["llm"] == "disconnected"


def test_backend_5xx_counts_as_disconnected(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, status_code=502)
    assert client_for().get("/api/health").json()["providers"]["llm"] == "disconnected"


def test_other_provider_down_is_degraded(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, status_code=200)
    httpx_mock.add_response(url=STT, status_code=200)
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=AVATAR)
    r = client_for(settings_with(with_providers())).get("/api/health")
    assert r.status_code == 200
    assert r.json()["status"] == "degraded"
    assert r.json()["providers"] == {"llm": "connected", "stt": "connected", "avatar": "disconnected"}


def test_probe_results_are_cached(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, status_code=200)
    client = client_for()
    for _ in range(10):
        assert client.get("/api/health").json()["providers"]["llm"] == "connected"
    assert len(httpx_mock.get_requests()) == 1


@pytest.mark.parametrize(
    ("providers", "expected"),
    [
        ({"llm": CONNECTED, "stt": "not_configured", "avatar": "not_configured"}, ("ok", 200)),
        ({"llm": CONNECTED, "stt": DISCONNECTED, "avatar": CONNECTED}, ("degraded", 200)),
        ({"llm": DISCONNECTED, "stt": CONNECTED, "avatar": CONNECTED}, ("down", 503)),
    ],
)
def test_overall_status(providers: dict[str, str], expected: tuple[str, int]) -> None:
    assert overall_status(providers) == expected


async def test_cached_probe_expires_and_is_single_flight() -> None:
    now = [0.0]
    calls = 0
    release = asyncio.Event()

    async def probe() -> bool:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls == 1

    cached = CachedProbe(probe, ttl=5, clock=lambda: now[0])
    waiters = [asyncio.create_task(cached.status()) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert set(await asyncio.gather(*waiters)) == {CONNECTED}
    assert calls == 1
    now[0] = 4.9
    assert await cached.status() == CONNECTED and calls == 1
    now[0] = 5.1
    assert await cached.status() == DISCONNECTED and calls == 2


async def test_a_probe_that_raises_is_disconnected() -> None:
    async def probe() -> bool:
        raise OSError("boom")

    assert await CachedProbe(probe, ttl=1).status() == DISCONNECTED
