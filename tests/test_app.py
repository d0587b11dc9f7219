"""The app around the handlers: unknown paths, wrong methods, crashes, rate limits, logs."""

from __future__ import annotations

import json

import pytest
from pytest_httpx import HTTPXMock

from gateway import app as app_module
from gateway import chat as chat_module
from gateway.settings import HANDLERS, Route
from tests.conftest import BACKEND_URL

ANSWER = {"response": "ok", "sources": []}


def log_events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_unknown_path_is_404_in_the_envelope(client_for) -> None:
    r = client_for().get("/api/nope")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "NOT_FOUND", "message": "No route for /api/nope"}}


def test_wrong_method_is_405_with_allow(client_for) -> None:
    r = client_for().get("/api/chat")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json() == {"error": {"code": "METHOD_NOT_ALLOWED", "message": "Method GET is not allowed on /api/chat"}}


def test_unexpected_exception_is_500_without_internals(
    client_for, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bug inside the real chat handler (not a swapped-in handler): mapping the body crashes.
    def broken(*args: object) -> dict:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(chat_module, "build_backend_body", broken)
    r = client_for().post("/api/chat", json={"message": "hi"}, headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "INTERNAL_ERROR", "message": "Internal error; reference req-500"}}
    assert "hunter2" not in r.text
    assert r.headers["x-request-id"] == "req-500"
    events = log_events(capsys.readouterr().err)
    crash = next(e for e in events if e["event"] == "unhandled_exception")
    assert crash["request_id"] == "req-500"
    assert "RuntimeError" in crash["exception"]
    access = next(e for e in events if e["event"] == "request")
    assert access["status"] == 500


def test_sixty_first_chat_request_in_a_minute_is_rate_limited(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, json=ANSWER, is_reusable=True)
    client = client_for()
    for i in range(60):
        r = client.post("/api/chat", json={"message": f"q{i}"})
        assert r.status_code == 200, (i, r.text)
    assert r.headers["ratelimit-policy"] == '"default";q=60;w=60'
    assert r.headers["ratelimit"].startswith('"default";r=0;t=')
    r = client.post("/api/chat", json={"message": "one too many"})
    assert r.status_code == 429
    assert r.json() == {
        "error": {"code": "RATE_LIMITED", "message": f"Too many requests: limit is 60 per minute; retry in {r.headers['retry-after']}s"}
    }
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert len(httpx_mock.get_requests()) == 60  # the refused request never reached the backend


def test_rate_limit_headers_count_down(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER, is_reusable=True)
    client = client_for(chat_extra="    rate_limit: 3/minute")
    remaining = [client.post("/api/chat", json={"message": "hi"}).headers["ratelimit"].split(";")[1] for _ in range(3)]
    assert remaining == ["r=2", "r=1", "r=0"]


def test_limits_are_per_route(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER, is_reusable=True)
    client = client_for(chat_extra="    rate_limit: 1/minute")
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 200
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 429
    health = client.get("/api/health")
    assert health.status_code == 200  # the chat limit does not touch health, which counts on its own
    assert health.headers["ratelimit-policy"] == '"default";q=100;w=60'
    assert health.headers["ratelimit"].startswith('"default";r=99;')


def test_rate_limit_off(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER, is_reusable=True)
    client = client_for(chat_extra="    rate_limit: 'off'")
    for _ in range(5):
        r = client.post("/api/chat", json={"message": "hi"})
        assert r.status_code == 200
        assert "ratelimit" not in r.headers


def test_access_log_has_the_fields_and_no_message_content(
    client_for, httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str]
) -> None:
    httpx_mock.add_response(json={"response": "the secret recipe", "sources": []})
    client = client_for()
    client.post("/api/chat", json={"message": "my card number is 4111"}, headers={"X-Request-ID": "req-log"})
    err = capsys.readouterr().err
    assert "4111" not in err and "secret recipe" not in err
    access = [e for e in log_events(err) if e["event"] == "request"]
    assert len(access) == 1
    event = access[0]
    assert event["request_id"] == "req-log"
    assert (event["method"], event["path"], event["status"]) == ("POST", "/api/chat", 200)
    assert event["client"] == "testclient"
    assert event["duration_ms"] >= event["upstream_ms"] >= 0
    assert event["level"] == "info" and "timestamp" in event


def test_provider_error_is_logged_with_reason(client_for, httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str]) -> None:
    httpx_mock.add_response(status_code=503)
    client_for().post("/api/chat", json={"message": "hi"})
    events = log_events(capsys.readouterr().err)
    failed = next(e for e in events if e["event"] == "request_failed")
    assert failed["code"] == "PROVIDER_ERROR"
    assert failed["reason"] == "Chat backend answered HTTP 503"


def test_every_configured_handler_resolves_to_an_endpoint() -> None:
    # The one handler registry (config.HANDLERS) names an importable endpoint for each handler.
    for name in HANDLERS:
        handler = app_module._handler(Route(path="/x", handler=name, methods=("POST",)))
        assert callable(handler) and handler.__name__ == HANDLERS[name].endpoint.partition(":")[2]
