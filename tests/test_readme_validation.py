"""Every validation message the README's API section shows is the one clients get.

Each case sends a bad request to the whole app and checks the status and the exact
message, and that the message is quoted in README.md (in backticks), so the README and
the code cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import parse_settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
API_KEY = "readme-api-key-0123456789"
ADMIN_KEY = "readme-admin-key-0123456789"
SECRET = "readme-signing-secret-0123456789abcdef"

CONFIG = """
server: {{log_format: json}}
storage:
  url: "sqlite:///{db}"
  record_chat_turns: false
  admin_keys: "{admin}"
auth: {{api_keys: "{key}"}}
avatar: {{provider: local, signing_secret: "{secret}", avatars: [Pedro], voices: [v1]}}
routes:
  - {{path: /api/chat, handler: chat, upstream: {{url: "http://127.0.0.1:9/api/chat"}}, rate_limit: "off"}}
  - {{path: /api/get-access-token, handler: token, rate_limit: "off"}}
  - {{path: /api/sessions/end, handler: session_end, rate_limit: "off"}}
  - {{path: /api/health, handler: health, rate_limit: "off"}}
  - {{path: /api/conversations/log, handler: conversations, rate_limit: "off"}}
"""

KEY = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TOKEN = {"avatarId": "Pedro", "voiceId": "v1"}
LOG = {"sessionId": "s1", "messages": [{"role": "user", "content": "hi"}]}
ID_RULE = "must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("readme") / "gateway.db"
    settings = parse_settings(CONFIG.format(db=db, admin=ADMIN_KEY, key=API_KEY, secret=SECRET), env={})
    with TestClient(create_app(settings, transport=httpx.AsyncHTTPTransport()), raise_server_exceptions=False) as c:
        yield c


def case(name: str, path: str, body: Any, status: int, message: str, headers: dict[str, str] | None = None,
         method: str = "POST") -> Any:
    return pytest.param(method, path, body, headers or {}, status, message, id=name)


def chat(**fields: Any) -> dict[str, Any]:
    return {"message": "hi", **fields}


def log(**fields: Any) -> dict[str, Any]:
    return {**LOG, **fields}


def message(role: str = "user", content: Any = "hi") -> dict[str, Any]:
    return {"role": role, "content": content}


CASES = [
    # Every JSON body (shown on /api/chat; the same code reads every route's body).
    case("body-content-type", "/api/chat", b'{"message": "hi"}', 415,
         "Content-Type must be application/json, got text/plain", {"Content-Type": "text/plain"}),
    case("body-too-large", "/api/chat", chat(message="x" * 70_000), 413, "Request body exceeds the limit of 65536 bytes"),
    case("body-empty", "/api/chat", b"  ", 400, "Request body is empty; expected a JSON object"),
    case("body-not-utf8", "/api/chat", b'{"message": "\xff"}', 400, "Request body is not valid UTF-8"),
    case("body-malformed", "/api/chat", b"[", 400, "Malformed JSON at line 1, column 2: Expecting value"),
    case("body-nan", "/api/chat", b'{"message": NaN}', 400, "Malformed JSON: NaN is not a JSON value"),
    case("body-deep", "/api/chat", b"[" * 60_000, 400, "Malformed JSON: nesting is too deep"),
    case("body-not-object", "/api/chat", [1], 400, "Request body must be a JSON object, got array"),
    # POST /api/chat
    case("chat-no-message", "/api/chat", {}, 400, "Missing required field: message"),
    case("chat-message-type", "/api/chat", {"message": 5}, 400, "Field 'message' must be a string, got number"),
    case("chat-message-empty", "/api/chat", {"message": "  "}, 400, "Field 'message' must not be empty"),
    case("chat-message-long", "/api/chat", {"message": "x" * 4001}, 400, "Field 'message' is longer than 4000 characters"),
    case("chat-session-type", "/api/chat", chat(sessionId=5), 400, "Field 'sessionId' must be a string, got number"),
    case("chat-session-chars", "/api/chat", chat(sessionId="a b"), 400, f"Field 'sessionId' {ID_RULE}"),
    case("chat-session-long", "/api/chat", chat(sessionId="a" * 129), 400, f"Field 'sessionId' {ID_RULE}"),
    case("chat-history-type", "/api/chat", chat(history={}), 400, "Field 'history' must be an array, got object"),
    case("chat-history-long", "/api/chat", chat(history=[message()] * 51), 400, "Field 'history' has 51 entries; the limit is 50"),
    case("chat-history-entry", "/api/chat", chat(history=["hi"]), 400,
         "Field 'history[0]' must be an object with 'role' and 'content', got string"),
    case("chat-history-role", "/api/chat", chat(history=[message("system")]), 400,
         "Field 'history[0].role' must be 'user' or 'assistant'"),
    case("chat-history-content", "/api/chat", chat(history=[message(content=None)]), 400,
         "Field 'history[0].content' must be a string, got null"),
    case("chat-history-content-long", "/api/chat", chat(history=[message(content="x" * 8001)]), 400,
         "Field 'history[0].content' is longer than 8000 characters"),
    case("chat-context", "/api/chat", chat(context=[]), 400, "Field 'context' must be an object, got array"),
    # POST /api/get-access-token
    case("token-no-auth", "/api/get-access-token", TOKEN, 401,
         "Missing Authorization header; expected 'Authorization: Bearer <key>'"),
    case("token-not-bearer", "/api/get-access-token", TOKEN, 401, "Authorization header must be 'Bearer <key>'",
         {"Authorization": f"Basic {API_KEY}"}),
    case("token-wrong-key", "/api/get-access-token", TOKEN, 401, "Invalid API key", {"Authorization": "Bearer nope"}),
    case("token-no-avatar", "/api/get-access-token", {"voiceId": "v1"}, 400, "Missing required field: avatarId", KEY),
    case("token-voice-type", "/api/get-access-token", {**TOKEN, "voiceId": 1}, 400,
         "Field 'voiceId' must be a string, got number", KEY),
    case("token-avatar-chars", "/api/get-access-token", {**TOKEN, "avatarId": "P/1"}, 400, f"Field 'avatarId' {ID_RULE}", KEY),
    case("token-avatar-allowlist", "/api/get-access-token", {**TOKEN, "avatarId": "Anna"}, 400,
         "Field 'avatarId': avatar 'Anna' is not allowed on this gateway", KEY),
    case("token-voice-allowlist", "/api/get-access-token", {**TOKEN, "voiceId": "v9"}, 400,
         "Field 'voiceId': voice 'v9' is not allowed on this gateway", KEY),
    # POST /api/sessions/end
    case("end-no-auth", "/api/sessions/end", {}, 401,
         "Missing Authorization header; expected 'Authorization: Bearer <chatToken>'"),
    case("end-not-bearer", "/api/sessions/end", {}, 401, "Authorization header must be 'Bearer <chatToken>'",
         {"Authorization": "Token x"}),
    case("end-bad-token", "/api/sessions/end", {}, 401, "Chat token is not valid", {"Authorization": "Bearer x.y.z"}),
    case("end-no-session", "/api/sessions/end", {}, 400, "Missing required field: sessionId", KEY),
    case("end-session-type", "/api/sessions/end", {"sessionId": 1}, 400, "Field 'sessionId' must be a string, got number", KEY),
    case("end-session-chars", "/api/sessions/end", {"sessionId": ""}, 400, f"Field 'sessionId' {ID_RULE}", KEY),
    # POST /api/conversations/log
    case("log-idempotency-key", "/api/conversations/log", LOG, 400,
         f"Header 'Idempotency-Key' {ID_RULE}", {"Idempotency-Key": "a b"}),
    case("log-no-session", "/api/conversations/log", {"messages": LOG["messages"]}, 400, "Missing required field: sessionId"),
    case("log-session-type", "/api/conversations/log", log(sessionId=1), 400, "Field 'sessionId' must be a string, got number"),
    case("log-session-chars", "/api/conversations/log", log(sessionId="a" * 129), 400, f"Field 'sessionId' {ID_RULE}"),
    case("log-no-messages", "/api/conversations/log", {"sessionId": "s1"}, 400, "Missing required field: messages"),
    case("log-messages-type", "/api/conversations/log", log(messages={}), 400, "Field 'messages' must be an array, got object"),
    case("log-messages-empty", "/api/conversations/log", log(messages=[]), 400, "Field 'messages' must not be empty"),
    case("log-messages-many", "/api/conversations/log", log(messages=[message()] * 501), 400,
         "Field 'messages' has 501 entries; the limit is 500"),
    case("log-message-type", "/api/conversations/log", log(messages=["hi"]), 400, "Field 'messages[0]' must be an object, got string"),
    case("log-message-role", "/api/conversations/log", log(messages=[message("bot")]), 400,
         "Field 'messages[0].role' must be one of: user, assistant, system"),
    case("log-message-content", "/api/conversations/log", log(messages=[message(content=None)]), 400,
         "Field 'messages[0].content' must be a string, got null"),
    case("log-message-long", "/api/conversations/log", log(messages=[message(content="x" * 20001)]), 400,
         "Field 'messages[0].content' is longer than 20000 characters"),
    case("log-metadata-type", "/api/conversations/log", log(metadata=[]), 400, "Field 'metadata' must be an object, got array"),
    case("log-duration", "/api/conversations/log", log(metadata={"duration": -1}), 400,
         "Field 'metadata.duration' must be a non-negative number"),
    case("log-duration-bool", "/api/conversations/log", log(metadata={"duration": True}), 400,
         "Field 'metadata.duration' must be a non-negative number"),
    case("log-source", "/api/conversations/log", log(metadata={"source": 1}), 400,
         "Field 'metadata.source' must be a string, got number"),
    case("log-metadata-large", "/api/conversations/log", log(metadata={"x": "y" * 16400}), 400,
         "Field 'metadata' is larger than 16384 bytes"),
    # Admin read API
    case("admin-no-auth", "/api/admin/conversations", None, 401, "Missing Authorization: Bearer <admin key>", method="GET"),
    case("admin-wrong-key", "/api/admin/conversations", None, 401, "Missing or invalid admin credential",
         {"Authorization": "Bearer nope"}, "GET"),
    case("admin-limit", "/api/admin/conversations?limit=0", None, 400,
         "Query parameter 'limit' must be an integer from 1 to 500", ADMIN, "GET"),
    case("admin-from", "/api/admin/conversations?from=yesterday", None, 400,
         "Query parameter 'from' must be an ISO-8601 date or time, got 'yesterday'", ADMIN, "GET"),
    case("admin-cursor", "/api/admin/conversations?cursor=nope", None, 400,
         "Query parameter 'cursor' is not a cursor this API issued", ADMIN, "GET"),
    case("admin-unknown", "/api/admin/conversations/conv-nope", None, 404, "No conversation 'conv-nope'", ADMIN, "GET"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "message"), CASES)
def test_the_readme_states_the_exact_message(
    client: TestClient, method: str, path: str, body: Any, headers: dict[str, str], status: int, message: str
) -> None:
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers} if content is not None else headers
    r = client.request(method, path, content=content, headers=headers)
    assert (r.status_code, r.json()["error"]["message"]) == (status, message)
    assert f"`{message}`" in README, f"README.md does not quote {message!r}"


def test_a_missing_content_type_is_named(client: TestClient) -> None:
    r = client.post("/api/chat", content=b'{"message": "hi"}')
    assert r.json()["error"]["message"] == "Content-Type must be application/json, got none"
    assert "(`got none` without the header)" in README


def test_a_tame_request_id_is_kept_and_any_other_replaced(client: TestClient) -> None:
    assert client.get("/api/health", headers={"X-Request-ID": "abc.1:2-3_4"}).headers["x-request-id"] == "abc.1:2-3_4"
    replaced = client.get("/api/health", headers={"X-Request-ID": "a b"}).headers["x-request-id"]
    assert len(replaced) == 32 and int(replaced, 16) >= 0
