"""POST /api/get-access-token and /api/sessions/end through the whole app,
with the local provider (vendor adapters: test_avatar_providers.py)."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from pytest_httpx import HTTPXMock

from gateway.signing import ISSUER
from tests.conftest import BACKEND_URL
from tests.tokens_support import (  # noqa: F401  (fixtures)
    BODY,
    KEY_A,
    KEY_B,
    SIGNING_SECRET,
    START,
    auth,
    clock_fixture,
    token_client_fixture,
    token_settings,
)

TOKEN = "/api/get-access-token"
END = "/api/sessions/end"
ANSWER = {"response": "We sell tents.", "sources": []}


def error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


# -- caller authentication ----------------------------------------------------------

AUTH_CASES = [
    pytest.param({}, "Missing Authorization header; expected 'Authorization: Bearer <key>'", None, id="missing"),
    pytest.param({"Authorization": ""}, "Missing Authorization header; expected 'Authorization: Bearer <key>'", None,
                 id="empty"),
    pytest.param({"Authorization": KEY_A}, "Authorization header must be 'Bearer <key>'", "invalid_token",
                 id="no-scheme"),
    pytest.param({"Authorization": f"Basic {KEY_A}"}, "Authorization header must be 'Bearer <key>'", "invalid_token",
                 id="basic-scheme"),
    pytest.param({"Authorization": "Bearer"}, "Authorization header must be 'Bearer <key>'", "invalid_token",
                 id="bearer-without-key"),
    pytest.param({"Authorization": f"Bearer {KEY_A} extra"}, "Authorization header must be 'Bearer <key>'",
                 "invalid_token", id="two-words"),
    pytest.param(auth("gk_live_wrong_wrong_wrong_wrong_00"), "Invalid API key", "invalid_token", id="wrong-key"),
    pytest.param(auth(KEY_A[:-1]), "Invalid API key", "invalid_token", id="prefix-of-a-key"),
    pytest.param(auth(KEY_A + "x"), "Invalid API key", "invalid_token", id="key-plus-a-char"),
]


@pytest.mark.parametrize(("headers", "message", "challenge_error"), AUTH_CASES)
def test_401_without_a_valid_key(token_client, headers: dict, message: str, challenge_error: str | None) -> None:
    r = token_client().post(TOKEN, json=BODY, headers=headers)
    assert r.status_code == 401
    assert r.json() == error("UNAUTHORIZED", message)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="smarteravatar-gateway"')
    assert ('error="invalid_token"' in challenge) == (challenge_error is not None)


def test_every_configured_key_works_for_rotation(token_client) -> None:
    client = token_client()
    for key in (KEY_A, KEY_B):
        assert client.post(TOKEN, json=BODY, headers=auth(key)).status_code == 200


def test_keys_may_be_a_yaml_list(token_client) -> None:
    client = token_client(auth={"api_keys": [KEY_B]})
    assert client.post(TOKEN, json=BODY, headers=auth(KEY_B)).status_code == 200
    assert client.post(TOKEN, json=BODY, headers=auth(KEY_A)).status_code == 401


def test_no_keys_configured_refuses_everyone(token_client, capsys: pytest.CaptureFixture[str]) -> None:
    client = token_client(auth={"api_keys": "${UNSET_KEYS:-}"})
    r = client.post(TOKEN, json=BODY, headers=auth(KEY_A))
    assert r.status_code == 401
    assert r.json() == error("UNAUTHORIZED", "Invalid API key")
    assert "token_route_without_api_keys" in capsys.readouterr().err


def test_401_comes_before_the_body_is_read(token_client) -> None:
    r = token_client().post(TOKEN, content=b"not json", headers={"content-type": "text/plain"})
    assert r.status_code == 401


def test_no_cors_headers_even_for_a_browser_origin(token_client) -> None:
    client = token_client()
    origin = {"Origin": "https://evil.example"}
    r = client.post(TOKEN, json=BODY, headers={**auth(), **origin})
    preflight = client.options(TOKEN, headers={**origin, "Access-Control-Request-Method": "POST"})
    for response in (r, preflight):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    assert preflight.status_code == 405


def test_default_rate_limit_is_10_per_minute_per_credential(token_client) -> None:
    client = token_client(avatar={"max_concurrent_sessions": "off"})
    for _ in range(10):
        assert client.post(TOKEN, json=BODY, headers=auth(KEY_A)).status_code == 200
    r = client.post(TOKEN, json=BODY, headers=auth(KEY_A))
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "RATE_LIMITED"
    # Same client IP, other credential: its own budget.
    assert client.post(TOKEN, json=BODY, headers=auth(KEY_B)).status_code == 200


def test_token_route_rate_limit_key_defaults_to_credential_in_config() -> None:
    settings = token_settings(token_route={"rate_limit": "5/minute"})
    route = settings.route_for("token")
    assert route is not None
    assert [(r.text, r.key) for r in route.rate_limits] == [("5/minute", "credential")]
    assert [r.key for r in settings.route_for("chat").rate_limits] == ["ip"]


# -- validation ---------------------------------------------------------------------

CHARSET = "must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'"
VALIDATION_CASES = [
    pytest.param({"voiceId": "v"}, "Missing required field: avatarId", id="missing-avatar"),
    pytest.param({"avatarId": "a"}, "Missing required field: voiceId", id="missing-voice"),
    pytest.param({"avatarId": 5, "voiceId": "v"}, "Field 'avatarId' must be a string, got number", id="avatar-number"),
    pytest.param({"avatarId": None, "voiceId": "v"}, "Field 'avatarId' must be a string, got null", id="avatar-null"),
    pytest.param({"avatarId": "a", "voiceId": ["v"]}, "Field 'voiceId' must be a string, got array", id="voice-array"),
    pytest.param({"avatarId": "", "voiceId": "v"}, f"Field 'avatarId' {CHARSET}", id="avatar-empty"),
    pytest.param({"avatarId": "a" * 129, "voiceId": "v"}, f"Field 'avatarId' {CHARSET}", id="avatar-too-long"),
    pytest.param({"avatarId": "a/../b", "voiceId": "v"}, f"Field 'avatarId' {CHARSET}", id="avatar-slash"),
    pytest.param({"avatarId": "a", "voiceId": "v v"}, f"Field 'voiceId' {CHARSET}", id="voice-space"),
    pytest.param({"avatarId": "a", "voiceId": "v\n"}, f"Field 'voiceId' {CHARSET}", id="voice-newline"),
]


@pytest.mark.parametrize(("body", "message"), VALIDATION_CASES)
def test_validation_errors(token_client, body: dict, message: str) -> None:
    r = token_client().post(TOKEN, json=body, headers=auth())
    assert r.status_code == 400
    assert r.json() == error("INVALID_REQUEST", message)


def test_128_character_ids_are_accepted(token_client) -> None:
    r = token_client().post(TOKEN, json={"avatarId": "a" * 128, "voiceId": "v:1.2_3-4"}, headers=auth())
    assert r.status_code == 200


def test_allowlists(token_client) -> None:
    client = token_client(avatar={"avatars": ["Pedro_Blue_Shirt_public"], "voices": ["voice-1", "voice-2"]})
    assert client.post(TOKEN, json=BODY, headers=auth()).status_code == 200
    r = client.post(TOKEN, json={**BODY, "avatarId": "Other"}, headers=auth())
    assert r.json() == error("INVALID_REQUEST", "Field 'avatarId': avatar 'Other' is not allowed on this gateway")
    r = client.post(TOKEN, json={**BODY, "voiceId": "voice-3"}, headers=auth())
    assert r.json() == error("INVALID_REQUEST", "Field 'voiceId': voice 'voice-3' is not allowed on this gateway")


def test_body_errors_use_the_shared_reader(token_client) -> None:
    r = token_client().post(TOKEN, content=b"[1]", headers={**auth(), "content-type": "application/json"})
    assert r.json() == error("INVALID_REQUEST", "Request body must be a JSON object, got array")


# -- the local provider's token ---------------------------------------------------------


def test_local_token_claims_expiry_and_signature(token_client, clock) -> None:
    r = token_client(avatar={"session_ttl": "2m"}).post(TOKEN, json=BODY, headers=auth())
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"token", "sessionId", "expiresAt", "chatToken"}  # chatToken: with every session
    claims = jwt.decode(body["token"], SIGNING_SECRET, algorithms=["HS256"], audience="avatar", issuer=ISSUER,
                        # exp is checked against the test's clock below, not the wall clock (START is
                        # taken at import: a long suite run would otherwise see this token expired)
                        options={"require": ["exp", "iat", "jti", "sid"], "verify_exp": False})
    assert claims["sid"] == claims["sub"] == body["sessionId"]
    assert claims["avatarId"] == "Pedro_Blue_Shirt_public" and claims["voiceId"] == "voice-1"
    assert claims["iat"] == int(START)
    assert claims["exp"] == int(START) + 120
    assert uuid.UUID(claims["jti"]) and uuid.UUID(body["sessionId"])
    assert body["expiresAt"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START + 120))
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(body["token"], SIGNING_SECRET + "x", algorithms=["HS256"], audience="avatar")
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(body["token"], SIGNING_SECRET, algorithms=["HS256"], audience="chat", options={"verify_exp": False})
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(body["token"], SIGNING_SECRET, algorithms=["HS256"], audience="avatar",
                   options={"verify_iat": False}, leeway=-121)


def test_every_token_is_unique(token_client) -> None:
    client = token_client()
    a, b = (client.post(TOKEN, json=BODY, headers=auth()).json() for _ in range(2))
    assert a["sessionId"] != b["sessionId"] and a["token"] != b["token"]
    ja = jwt.decode(a["token"], SIGNING_SECRET, algorithms=["HS256"], audience="avatar")
    jb = jwt.decode(b["token"], SIGNING_SECRET, algorithms=["HS256"], audience="avatar")
    assert ja["jti"] != jb["jti"]


def test_without_a_signing_secret_an_ephemeral_one_is_used_loudly(token_client, capsys) -> None:
    client = token_client(avatar={"signing_secret": "${NOT_SET:-}"})
    r = client.post(TOKEN, json=BODY, headers=auth())
    assert r.status_code == 200
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    warning = next(e for e in events if e["event"] == "avatar_signing_secret_ephemeral")
    assert warning["level"] == "warning" and "GATEWAY_SIGNING_SECRET" in warning["detail"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(r.json()["token"], SIGNING_SECRET, algorithms=["HS256"], audience="avatar")


# -- chatToken on /api/chat ---------------------------------------------------------------


def scoped(token_client, **avatar):
    client = token_client(avatar={"require_session_token": True, **avatar})
    minted = client.post(TOKEN, json=BODY, headers=auth()).json()
    return client, minted


def test_chat_token_is_issued_and_verifiable(token_client) -> None:
    _, minted = scoped(token_client)
    assert set(minted) == {"token", "sessionId", "expiresAt", "chatToken"}
    claims = jwt.decode(minted["chatToken"], SIGNING_SECRET, algorithms=["HS256"], audience="chat", issuer=ISSUER)
    assert claims["sid"] == minted["sessionId"]
    avatar_claims = jwt.decode(minted["token"], SIGNING_SECRET, algorithms=["HS256"], audience="avatar")
    assert claims["exp"] == avatar_claims["exp"]


def test_chat_with_its_chat_token(token_client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, json=ANSWER)
    client, minted = scoped(token_client)
    headers = {"Authorization": f"Bearer {minted['chatToken']}"}
    # No sessionId in the body: the token's is used.
    r = client.post("/api/chat", json={"message": "hi"}, headers=headers)
    assert r.status_code == 200 and r.json()["sessionId"] == minted["sessionId"]
    assert json.loads(httpx_mock.get_request().content)["sessionId"] == minted["sessionId"]
    # The same sessionId in the body is fine.
    httpx_mock.add_response(url=BACKEND_URL, json=ANSWER)
    r = client.post("/api/chat", json={"message": "hi", "sessionId": minted["sessionId"]}, headers=headers)
    assert r.status_code == 200


def test_chat_without_token_is_401(token_client) -> None:
    client, _ = scoped(token_client)
    r = client.post("/api/chat", json={"message": "hi"})
    assert r.status_code == 401
    assert r.json() == error("UNAUTHORIZED", "Missing Authorization header; expected 'Authorization: Bearer <chatToken>'")


def test_chat_with_expired_token_is_401(token_client, clock) -> None:
    client, minted = scoped(token_client, session_ttl="1m")
    clock.advance(60)
    r = client.post("/api/chat", json={"message": "hi"}, headers={"Authorization": f"Bearer {minted['chatToken']}"})
    assert r.status_code == 401
    assert r.json() == error("UNAUTHORIZED", "Chat token has expired")


def test_chat_for_another_session_is_401(token_client) -> None:
    client, minted = scoped(token_client)
    other = client.post(TOKEN, json=BODY, headers=auth()).json()
    r = client.post("/api/chat", json={"message": "hi", "sessionId": other["sessionId"]},
                    headers={"Authorization": f"Bearer {minted['chatToken']}"})
    assert r.status_code == 401
    assert r.json() == error("UNAUTHORIZED", "Field 'sessionId' does not match the session of the chat token")


@pytest.mark.parametrize("which", ["avatar-token", "api-key", "garbage", "other-secret"])
def test_chat_with_a_credential_that_is_not_a_chat_token_is_401(token_client, which: str) -> None:
    client, minted = scoped(token_client)
    forged = jwt.encode({"iss": ISSUER, "aud": "chat", "sid": minted["sessionId"], "sub": minted["sessionId"],
                         "iat": int(START), "exp": int(START) + 60, "jti": "x"}, "another-secret-" * 3)
    credential = {"avatar-token": minted["token"], "api-key": KEY_A, "garbage": "abc.def.ghi",
                  "other-secret": forged}[which]
    r = client.post("/api/chat", json={"message": "hi"}, headers={"Authorization": f"Bearer {credential}"})
    assert r.status_code == 401
    assert r.json() == error("UNAUTHORIZED", "Chat token is not valid")


def test_chat_is_open_when_tokens_are_not_required(token_client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, json=ANSWER)
    assert token_client().post("/api/chat", json={"message": "hi"}).status_code == 200


# -- ending a session -----------------------------------------------------------------------


def test_end_with_chat_token_frees_the_slot(token_client) -> None:
    client, minted = scoped(token_client, max_concurrent_sessions=1)
    assert client.post(TOKEN, json=BODY, headers=auth()).status_code == 429
    r = client.post(END, headers={"Authorization": f"Bearer {minted['chatToken']}"})
    assert r.status_code == 200
    assert r.json() == {"success": True, "sessionId": minted["sessionId"], "ended": True}
    assert client.post(TOKEN, json=BODY, headers=auth()).status_code == 200
    again = client.post(END, headers={"Authorization": f"Bearer {minted['chatToken']}"})
    assert again.json() == {"success": True, "sessionId": minted["sessionId"], "ended": False}


def test_end_with_api_key_and_session_id(token_client) -> None:
    client = token_client(avatar={"max_concurrent_sessions": 1})
    minted = client.post(TOKEN, json=BODY, headers=auth()).json()
    r = client.post(END, json={"sessionId": minted["sessionId"]}, headers=auth(KEY_B))
    assert r.json() == {"success": True, "sessionId": minted["sessionId"], "ended": True}
    assert client.post(TOKEN, json=BODY, headers=auth()).status_code == 200


def test_end_requires_a_credential(token_client) -> None:
    client, _ = scoped(token_client)
    assert client.post(END).status_code == 401
    r = client.post(END, headers={"Authorization": "Bearer nope"})
    assert r.json() == error("UNAUTHORIZED", "Chat token is not valid")
    r = client.post(END, json={}, headers=auth())
    assert r.json() == error("INVALID_REQUEST", "Missing required field: sessionId")


# -- health ---------------------------------------------------------------------------------


def test_local_provider_is_always_connected(token_client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, method="GET", status_code=405)
    r = token_client().get("/api/health")
    assert r.json()["providers"]["avatar"] == "connected"


def test_avatar_not_configured_without_token_routes(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, method="GET", status_code=405)
    assert client_for().get("/api/health").json()["providers"]["avatar"] == "not_configured"
