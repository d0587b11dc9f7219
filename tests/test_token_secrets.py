"""No key and no token in any log line, error message or repr, across whole token flows."""

from __future__ import annotations

import json
import logging
import time

import pytest
from pytest_httpx import HTTPXMock

from gateway.avatar.base import MintedSession, VendorClient
from gateway.errors import ConfigError
from gateway.settings import ClientSettings
from gateway.signing import Signer
from gateway.upstream import UpstreamClient
from tests.conftest import BACKEND_URL
from tests.tokens_support import (  # noqa: F401  (fixtures)
    BODY,
    KEY_A,
    KEY_B,
    LIVEAVATAR,
    SIGNING_SECRET,
    VENDOR_KEY,
    auth,
    clock_fixture,
    token_client_fixture,
    token_settings,
)

TOKEN = "/api/get-access-token"
LA_SESSION_TOKEN = "la_session_token_4e5f6a7b8c9d0e1f2a3b"
WRONG_KEY = "gk_live_attacker_guess_0123456789abcdef"
LA_SETTINGS = {"provider": "liveavatar", "api_key": "${LIVEAVATAR_API_KEY}", "require_session_token": True,
               "max_concurrent_sessions": 5}


def test_no_secret_in_any_log_line_across_a_token_flow(
    token_client, clock, httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    la = f"{LIVEAVATAR}/v1"
    httpx_mock.add_response(url=f"{la}/sessions/token", json={
        "code": 100, "data": {"session_id": "la-1", "session_token": LA_SESSION_TOKEN}})
    # A vendor that echoes the key back in its error body must not get it into our logs.
    httpx_mock.add_response(url=f"{la}/sessions/token", status_code=401,
                            json={"message": f"invalid key {VENDOR_KEY}"})
    httpx_mock.add_response(url=f"{la}/sessions/stop", json={"code": 100})
    httpx_mock.add_response(url=f"{la}/users/credits", json={"code": 100, "data": {}})
    httpx_mock.add_response(url=BACKEND_URL, method="POST", json={"response": "ok", "sources": []})
    httpx_mock.add_response(url=BACKEND_URL, method="GET", status_code=405)

    settings = token_settings(LA_SETTINGS, top={"server": {"log_format": "json", "log_level": "debug"}})
    client = token_client(settings)
    assert client.post(TOKEN, json=BODY, headers=auth(WRONG_KEY)).status_code == 401
    minted = client.post(TOKEN, json=BODY, headers=auth(KEY_A)).json()
    assert minted["token"] == LA_SESSION_TOKEN
    failed = client.post(TOKEN, json=BODY, headers=auth(KEY_B))
    assert failed.status_code == 502
    chat_token = minted["chatToken"]
    bearer = {"Authorization": f"Bearer {chat_token}"}
    assert client.post("/api/chat", json={"message": "hi"}, headers=bearer).status_code == 200
    assert client.post("/api/chat", json={"message": "hi", "sessionId": "other"}, headers=bearer).status_code == 401
    assert client.get("/api/health").json()["providers"]["avatar"] == "connected"
    assert client.post("/api/sessions/end", headers=bearer).json()["ended"] is True
    clock.advance(3600)
    assert client.post("/api/chat", json={"message": "hi"}, headers=bearer).status_code == 401

    logs = capsys.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    names = {e["event"] for e in events}
    # The flow was logged (so the check below looked at real output) ...
    assert {"avatar_session_minted", "avatar_session_ended", "request", "request_failed"} <= names
    assert any(e.get("session_id") == "la-1" for e in events)
    # ... and nothing secret is in it.
    for secret in (KEY_A, KEY_B, WRONG_KEY, VENDOR_KEY, SIGNING_SECRET, LA_SESSION_TOKEN, chat_token):
        assert secret not in logs
        assert secret[:16] not in logs


def test_error_messages_never_echo_keys(token_client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(status_code=403, text=f"forbidden: {VENDOR_KEY}")
    client = token_client(avatar={"provider": "liveavatar", "api_key": "${LIVEAVATAR_API_KEY}"})
    responses = [
        client.post(TOKEN, json=BODY, headers=auth(WRONG_KEY)),
        client.post(TOKEN, json=BODY, headers={"Authorization": f"Basic {KEY_A}"}),
        client.post(TOKEN, json=BODY, headers=auth()),
    ]
    assert [r.status_code for r in responses] == [401, 401, 502]
    for r in responses:
        for secret in (KEY_A, WRONG_KEY, VENDOR_KEY):
            assert secret not in r.text and secret not in str(r.headers)


def test_reprs_hide_secrets() -> None:
    settings = token_settings({"provider": "liveavatar", "api_key": "${LIVEAVATAR_API_KEY}"})
    vendor = VendorClient("liveavatar", UpstreamClient(ClientSettings()), LIVEAVATAR, "X-API-KEY", VENDOR_KEY)
    minted = MintedSession("s-1", LA_SESSION_TOKEN, time.time())
    for text in (repr(settings), str(settings), repr(vendor), repr(minted), repr(Signer(SIGNING_SECRET))):
        for secret in (KEY_A, KEY_B, VENDOR_KEY, SIGNING_SECRET, LA_SESSION_TOKEN):
            assert secret not in text
    assert "s-1" in repr(minted)  # the repr still says which session


@pytest.mark.parametrize(
    ("avatar", "auth_section", "expected"),
    [
        pytest.param({"signing_secret": "short-secret-value"}, None,
                     "avatar.signing_secret: shorter than 32 characters", id="short-secret"),
        pytest.param({"provider": "liveavatar", "api_key": "${EMPTY:-}"}, None,
                     "avatar.api_key: required for provider 'liveavatar'", id="vendor-without-key"),
        pytest.param({"api_key": ["a", "list"]}, None, "avatar.api_key: is not a single-line string", id="key-list"),
        pytest.param({}, {"api_keys": "gk_live_ok_ok_ok_ok_ok, short-key-7"},
                     "auth.api_keys[1]: key is shorter than 16 characters", id="short-api-key"),
        pytest.param({}, {"api_keys": [f"{KEY_A}", 12345]}, "auth.api_keys[1]: is not a string", id="key-number"),
    ],
)
def test_config_errors_name_the_path_and_never_the_value(avatar, auth_section, expected) -> None:
    with pytest.raises(ConfigError) as caught:
        token_settings(avatar, **({"auth": auth_section} if auth_section else {}))
    assert str(caught.value).startswith(expected)
    for secret in ("short-secret-value", "short-key-7", "12345"):
        assert secret not in str(caught.value)
