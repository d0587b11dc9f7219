"""The gateway under a real uvicorn server, forwarding over its real (aiohttp) transport
to a real backend server on loopback. No fakes between the two processes' sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.app import create_app
from tests.conftest import free_port, make_settings, serve

pytestmark = pytest.mark.integration


class Backend:
    """A customer backend on loopback whose behaviour each test chooses."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.mode = "ok"

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.seen.append({"body": body, "headers": dict(request.headers)})
        if self.mode == "slow":
            await asyncio.sleep(3)
        if self.mode == "error":
            return JSONResponse({"detail": "db down at 10.0.0.7"}, status_code=500)
        if self.mode == "html":
            return Response("<html>maintenance</html>", media_type="text/html")
        if self.mode == "wrong-shape":
            return JSONResponse({"answer": "hi"})
        return JSONResponse(
            {"response": f"You asked: {body['message']}", "sources": [{"title": "FAQ", "url": "https://example.com/faq"}]}
        )

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/chat", self.chat, methods=["POST"])])


@pytest.fixture
def backend() -> Iterator[tuple[Backend, str]]:
    b = Backend()
    with serve(b.app()) as url:
        yield b, f"{url}/api/chat"


@pytest.fixture
def gateway(backend: tuple[Backend, str]) -> Iterator[str]:
    _, url = backend
    with serve(create_app(make_settings(url=url))) as gw:
        yield gw


def test_round_trip_through_real_servers(backend: tuple[Backend, str], gateway: str) -> None:
    b, _ = backend
    r = httpx.post(
        f"{gateway}/api/chat",
        json={"message": "Do you ship to Canada?", "history": [{"role": "user", "content": "hi"}]},
        headers={"X-Request-ID": "int-1"},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["response"] == "You asked: Do you ship to Canada?"
    assert body["sources"] == [{"title": "FAQ", "url": "https://example.com/faq"}]
    assert r.headers["x-request-id"] == "int-1"
    (seen,) = b.seen
    assert seen["body"] == {
        "message": "Do you ship to Canada?",
        "sessionId": body["sessionId"],
        "context": {"history": [{"role": "user", "content": "hi"}]},
    }
    assert seen["headers"]["x-request-id"] == "int-1"
    assert seen["headers"]["content-type"] == "application/json"


async def test_concurrent_requests_all_answered(backend: tuple[Backend, str], gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, limits=httpx.Limits(max_connections=50)) as client:
        responses = await asyncio.gather(
            *(client.post("/api/chat", json={"message": f"q{i}", "sessionId": f"s{i}"}) for i in range(50))
        )
    assert [r.status_code for r in responses] == [200] * 50
    assert sorted(r.json()["response"] for r in responses) == sorted(f"You asked: q{i}" for i in range(50))
    assert all(r.json()["sessionId"] == f"s{i}" for i, r in enumerate(responses))


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error", "Chat backend answered HTTP 500"),
        ("html", "Chat backend answered with a body that is not JSON"),
        ("wrong-shape", "Chat backend answer has nothing at 'response', expected a string"),
        ("slow", "Chat backend did not answer within 2s (total timeout)"),
    ],
)
def test_backend_failures_over_the_wire(backend: tuple[Backend, str], gateway: str, mode: str, message: str) -> None:
    b, _ = backend
    b.mode = mode
    r = httpx.post(f"{gateway}/api/chat", json={"message": "hi"}, timeout=10)
    assert r.status_code == 502
    assert r.json() == {"error": {"code": "PROVIDER_ERROR", "message": message}}
    assert "10.0.0.7" not in r.text and "127.0.0.1" not in r.text


def test_backend_not_listening() -> None:
    url = f"http://127.0.0.1:{free_port()}/api/chat"
    with serve(create_app(make_settings(url=url))) as gw:
        r = httpx.post(f"{gw}/api/chat", json={"message": "hi"})
        assert r.status_code == 502
        assert r.json() == {
            "error": {"code": "PROVIDER_ERROR", "message": "Chat backend could not be reached: connection refused or host unknown"}
        }
        health = httpx.get(f"{gw}/api/health")
        assert health.status_code == 503
        assert health.json()["providers"]["llm"] == "disconnected"


def test_health_against_a_live_backend(backend: tuple[Backend, str], gateway: str) -> None:
    r = httpx.get(f"{gateway}/api/health")
    assert r.status_code == 200
    assert json.loads(r.text)["providers"]["llm"] == "connected"


def test_oversized_body_is_refused_over_the_wire(gateway: str) -> None:
    r = httpx.post(
        f"{gateway}/api/chat",
        content=b'{"message": "' + b"x" * 100_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
