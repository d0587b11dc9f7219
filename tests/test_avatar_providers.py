"""The LiveAvatar and legacy HeyGen adapters against faked vendor APIs (pytest-httpx),
through the token route: the request they send, what they answer, every failure."""

from __future__ import annotations

import json

import httpx
import pytest
from pytest_httpx import HTTPXMock

from tests.conftest import BACKEND_URL
from tests.tokens_support import (  # noqa: F401  (fixtures)
    BODY,
    HEYGEN,
    LIVEAVATAR,
    START,
    VENDOR_KEY,
    auth,
    clock_fixture,
    token_client_fixture,
)

TOKEN = "/api/get-access-token"
LA_TOKEN = f"{LIVEAVATAR}/v1/sessions/token"
LA_STOP = f"{LIVEAVATAR}/v1/sessions/stop"
HG_TOKEN = f"{HEYGEN}/v1/streaming.create_token"
LA_SESSION = "0b3c6f5e-2d4a-4b8c-9e1f-7a6b5c4d3e2f"
LA_SESSION_TOKEN = "la_session_token_8f7e6d5c4b3a29180716"
HG_TOKEN_VALUE = "hg_streaming_token_1a2b3c4d5e6f7a8b9c0d"

LIVEAVATAR_SETTINGS = {"provider": "liveavatar", "api_key": "${LIVEAVATAR_API_KEY}", "session_ttl": "10m"}
HEYGEN_SETTINGS = {"provider": "heygen", "api_key": "${LIVEAVATAR_API_KEY}", "session_ttl": "10m"}
LA_OK = {"code": 100, "data": {"session_id": LA_SESSION, "session_token": LA_SESSION_TOKEN}, "message": "ok"}


def test_liveavatar_mints_a_session(token_client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=LA_TOKEN, method="POST", json=LA_OK)
    r = token_client(avatar=LIVEAVATAR_SETTINGS).post(TOKEN, json=BODY, headers=auth())
    assert r.status_code == 200
    minted = r.json()
    assert minted.pop("chatToken")  # the visitor's credential comes with every session (docs/tokens.md)
    assert minted == {"token": LA_SESSION_TOKEN, "sessionId": LA_SESSION, "expiresAt": iso(START + 600)}
    sent = httpx_mock.get_request()
    assert sent.headers["x-api-key"] == VENDOR_KEY
    assert "authorization" not in sent.headers  # the caller's gateway key never goes upstream
    assert json.loads(sent.content) == {
        "mode": "FULL",
        "avatar_id": "Pedro_Blue_Shirt_public",
        "avatar_persona": {"voice_id": "voice-1"},
        "max_session_duration": 600,
    }


def test_heygen_mints_a_token(token_client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=HG_TOKEN, method="POST", json={"error": None, "data": {"token": HG_TOKEN_VALUE}})
    r = token_client(avatar=HEYGEN_SETTINGS).post(TOKEN, json=BODY, headers=auth())
    assert r.status_code == 200
    body = r.json()
    assert body["token"] == HG_TOKEN_VALUE and body["expiresAt"] == iso(START + 600)
    assert len(body["sessionId"]) == 36  # the gateway's own id: the legacy token has none
    sent = httpx_mock.get_request()
    assert sent.headers["x-api-key"] == VENDOR_KEY and json.loads(sent.content) == {}


def test_base_url_is_configurable(token_client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url="http://la.internal:8080/proxy/v1/sessions/token", json=LA_OK)
    settings = {**LIVEAVATAR_SETTINGS, "base_url": "http://la.internal:8080/proxy/", "mode": "LITE"}
    r = token_client(avatar=settings).post(TOKEN, json=BODY, headers=auth())
    assert r.status_code == 200
    assert json.loads(httpx_mock.get_request().content)["mode"] == "LITE"


def iso(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


FAILURES = [
    pytest.param(dict(exc=httpx.ConnectError("refused")), "could not be reached: connection refused or host unknown",
                 id="refused"),
    pytest.param(dict(exc=httpx.ConnectTimeout("slow")), "could not be reached: connection timed out after 2s (connect timeout)",
                 id="connect-timeout"),
    pytest.param(dict(exc=httpx.ReadTimeout("slow")), "did not answer within 10s (total timeout)", id="read-timeout"),
    pytest.param(dict(exc=httpx.RemoteProtocolError("eof")), "closed the connection before answering",
                 id="disconnect"),
    pytest.param(dict(status_code=401, json={"message": f"bad key {VENDOR_KEY}"}),
                 "rejected the API key (HTTP 401)", id="http-401"),
    pytest.param(dict(status_code=403, json={"message": "forbidden"}), "rejected the API key (HTTP 403)",
                 id="http-403"),
    pytest.param(dict(status_code=429, json={}), "is rate limiting or out of concurrent sessions (HTTP 429)",
                 id="http-429"),
    pytest.param(dict(status_code=422, json={"detail": "avatar_id"}), "answered HTTP 422", id="http-422"),
    pytest.param(dict(status_code=500, text="boom"), "answered HTTP 500", id="http-500"),
    pytest.param(dict(status_code=503, text="down"), "answered HTTP 503", id="http-503"),
    pytest.param(dict(text="<html>ok</html>"), "answered with a body that is not JSON", id="not-json"),
    pytest.param(dict(json=[1, 2]), "answered with an unexpected shape: not a JSON object", id="json-array"),
]
LIVEAVATAR_SHAPES = [
    pytest.param(dict(json={"code": 4001, "message": "no credits"}), "refused the request (code 4001)",
                 id="la-error-code"),
    pytest.param(dict(json={"data": {}}), "refused the request (code missing)", id="la-no-code"),
    pytest.param(dict(json={"code": 100, "data": None}), "answered with an unexpected shape: no 'data' object",
                 id="la-no-data"),
    pytest.param(dict(json={"code": 100, "data": {"session_token": "t"}}),
                 "answered with an unexpected shape: no 'data.session_id' string", id="la-no-session-id"),
    pytest.param(dict(json={"code": 100, "data": {"session_id": "s", "session_token": ""}}),
                 "answered with an unexpected shape: no 'data.session_token' string", id="la-empty-token"),
    pytest.param(dict(json={"code": 100, "data": {"session_id": 5, "session_token": "t"}}),
                 "answered with an unexpected shape: no 'data.session_id' string", id="la-number-id"),
]
HEYGEN_SHAPES = [
    pytest.param(dict(json={"error": {"code": 1}, "data": None}), "refused the request", id="hg-error"),
    pytest.param(dict(json={"error": None, "data": {}}), "answered with an unexpected shape: no 'data.token' string",
                 id="hg-no-token"),
    pytest.param(dict(json={"error": None, "data": {"token": 7}}),
                 "answered with an unexpected shape: no 'data.token' string", id="hg-number-token"),
]


def fail_with(httpx_mock: HTTPXMock, failure: dict) -> None:
    if "exc" in failure:
        httpx_mock.add_exception(failure["exc"])
    else:
        httpx_mock.add_response(**failure)


@pytest.mark.parametrize(("failure", "expected"), FAILURES + LIVEAVATAR_SHAPES)
def test_liveavatar_failures_are_provider_errors(token_client, httpx_mock: HTTPXMock, failure, expected) -> None:
    fail_with(httpx_mock, failure)
    client = token_client(avatar={**LIVEAVATAR_SETTINGS, "max_concurrent_sessions": 1})
    r = client.post(TOKEN, json=BODY, headers=auth())
    assert r.status_code == 502
    assert r.json() == {"error": {"code": "PROVIDER_ERROR", "message": f"Avatar provider liveavatar {expected}"}}
    assert VENDOR_KEY not in r.text and "liveavatar.com" not in r.text
    # The reserved slot was given back: the next attempt is not refused by the cap.
    httpx_mock.add_response(url=LA_TOKEN, json=LA_OK)
    assert client.post(TOKEN, json=BODY, headers=auth()).status_code == 200


@pytest.mark.parametrize(("failure", "expected"), FAILURES + HEYGEN_SHAPES)
def test_heygen_failures_are_provider_errors(token_client, httpx_mock: HTTPXMock, failure, expected) -> None:
    fail_with(httpx_mock, failure)
    r = token_client(avatar=HEYGEN_SETTINGS).post(TOKEN, json=BODY, headers=auth())
    assert r.status_code == 502
    assert r.json() == {"error": {"code": "PROVIDER_ERROR", "message": f"Avatar provider heygen {expected}"}}
    assert VENDOR_KEY not in r.text


@pytest.mark.parametrize(
    ("settings", "probe_url", "answers", "expected"),
    [
        pytest.param(LIVEAVATAR_SETTINGS, f"{LIVEAVATAR}/v1/users/credits", dict(json={"code": 100, "data": {}}),
                     "connected", id="la-ok"),
        pytest.param(LIVEAVATAR_SETTINGS, f"{LIVEAVATAR}/v1/users/credits", dict(status_code=401, json={}),
                     "disconnected", id="la-key-rejected"),
        pytest.param(LIVEAVATAR_SETTINGS, f"{LIVEAVATAR}/v1/users/credits", dict(exc=httpx.ConnectError("x")),
                     "disconnected", id="la-refused"),
        pytest.param(HEYGEN_SETTINGS, f"{HEYGEN}/v2/user/remaining_quota", dict(json={"data": {}}),
                     "connected", id="hg-ok"),
        pytest.param(HEYGEN_SETTINGS, f"{HEYGEN}/v2/user/remaining_quota", dict(status_code=503),
                     "disconnected", id="hg-down"),
    ],
)
def test_health_probes_the_provider_with_its_key(token_client, httpx_mock: HTTPXMock, settings, probe_url, answers,
                                                 expected) -> None:
    httpx_mock.add_response(url=BACKEND_URL, method="GET", status_code=405)
    if "exc" in answers:
        httpx_mock.add_exception(answers["exc"], url=probe_url)
    else:
        httpx_mock.add_response(url=probe_url, method="GET", **answers)
    client = token_client(avatar=settings)
    body = client.get("/api/health").json()
    assert body["providers"]["avatar"] == expected
    assert body["status"] == ("ok" if expected == "connected" else "degraded")
    assert httpx_mock.get_request(url=probe_url).headers[
        "x-api-key"] == VENDOR_KEY
    client.get("/api/health")  # cached: no second probe
    assert len(httpx_mock.get_requests(url=probe_url)) == 1
