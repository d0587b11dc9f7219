"""CORS: allowed origins get the browser routes; other origins, and the token route,
admin API and /metrics for anyone, never answer cross-origin."""

from __future__ import annotations

import pytest
from pytest_httpx import HTTPXMock

from gateway.errors import ConfigError
from tests.conftest import BACKEND_URL, make_settings
from tests.tokens_support import ENV, KEY_A

ALLOWED = "https://shop.example.com"
YAML = """
server: {log_format: json, cors_origins: ["https://shop.example.com/", "http://localhost:3000"]}
storage: {record_chat_turns: false}
auth: {api_keys: "${GATEWAY_API_KEYS}", admin_keys: "admin-key-0123456789abcdef"}
avatar: {provider: local, signing_secret: "${GATEWAY_SIGNING_SECRET}"}
routes:
  - {path: /api/chat, handler: chat, upstream: {url: "http://backend.test/api/chat"}}
  - {path: /api/get-access-token, handler: token}
  - {path: /api/health, handler: health}
"""


@pytest.fixture
def client(client_for):  # type: ignore[no-untyped-def]
    return client_for(make_settings(yaml_text=YAML, env=ENV))


def preflight(client, path: str, origin: str = ALLOWED):  # type: ignore[no-untyped-def]
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "content-type"})


def test_an_allowed_origin_gets_the_preflight_and_the_answer(client, httpx_mock: HTTPXMock) -> None:  # type: ignore[no-untyped-def]
    r = preflight(client, "/api/chat")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert r.headers["access-control-allow-methods"] == "POST"
    assert "content-type" in r.headers["access-control-allow-headers"]
    assert r.headers["vary"] == "Origin"
    httpx_mock.add_response(url=BACKEND_URL, json={"response": "hi", "sources": []})
    r = client.post("/api/chat", json={"message": "hello"}, headers={"Origin": ALLOWED})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    assert "Origin" in r.headers["vary"]


def test_errors_of_an_allowed_origin_are_readable_too(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/chat", json={}, headers={"Origin": ALLOWED})
    assert r.status_code == 400
    assert r.headers["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize("origin", ["https://evil.example.com", "https://shop.example.com.evil.net", "null"])
def test_other_origins_get_no_cors_headers(client, origin: str) -> None:  # type: ignore[no-untyped-def]
    r = preflight(client, "/api/chat", origin)
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in client.get("/api/health", headers={"Origin": origin}).headers


@pytest.mark.parametrize("path", ["/api/get-access-token", "/api/admin/conversations", "/metrics"])
def test_token_admin_and_metrics_never_answer_cross_origin(client, path: str) -> None:  # type: ignore[no-untyped-def]
    assert "access-control-allow-origin" not in preflight(client, path).headers
    r = client.post(path, json={"avatarId": "a", "voiceId": "v"},
                    headers={"Origin": ALLOWED, "Authorization": f"Bearer {KEY_A}"})
    assert "access-control-allow-origin" not in r.headers


def test_no_origins_by_default(client_for) -> None:  # type: ignore[no-untyped-def]
    client = client_for(make_settings())
    assert "access-control-allow-origin" not in client.get("/api/health", headers={"Origin": ALLOWED}).headers
    assert preflight(client, "/api/chat").status_code == 405


@pytest.mark.parametrize(("value", "message"), [
    ('["*"]', "server.cors_origins[0]: '*' is not an origin like 'https://www.example.com'"),
    ('["https://a.example/app"]', "server.cors_origins[0]: 'https://a.example/app' is not an origin like 'https://www.example.com'"),
    ("3", "server.cors_origins: 3 is not a list of origins"),
])
def test_bad_origins_are_config_errors(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        make_settings(yaml_text=f"server: {{cors_origins: {value}}}\nroutes: []")
    assert str(exc.value) == message
