"""POST /api/chat through the whole app, the backend faked with pytest-httpx."""

from __future__ import annotations

import contextlib
import json
import select
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from pytest_httpx import HTTPXMock

from gateway.app import create_app
from tests.conftest import BACKEND_URL, make_settings, serve

ANSWER = {"response": "We sell tents.", "sources": [{"title": "Catalog", "url": "https://example.com/c.pdf"}]}


def sent_body(httpx_mock: HTTPXMock) -> dict:
    request = httpx_mock.get_request()
    assert request is not None
    return json.loads(request.content)


def test_forwards_and_translates_with_default_mapping(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, method="POST", json=ANSWER)
    client = client_for()
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    r = client.post("/api/chat", json={"message": "What do you sell?", "sessionId": "s-1", "history": history})
    assert r.status_code == 200
    assert r.json() == {**ANSWER, "sessionId": "s-1"}
    assert sent_body(httpx_mock) == {
        "message": "What do you sell?",
        "sessionId": "s-1",
        "context": {"history": history},
    }


def test_generates_session_id_when_absent(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER)
    r = client_for().post("/api/chat", json={"message": "hi"})
    session_id = r.json()["sessionId"]
    assert len(session_id) == 36 and session_id.count("-") == 4
    assert sent_body(httpx_mock)["sessionId"] == session_id


def test_other_client_fields_travel_in_context(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER)
    client_for().post("/api/chat", json={"message": "hi", "locale": "de", "context": {"page": "/p"}})
    assert sent_body(httpx_mock)["context"] == {"page": "/p", "locale": "de", "history": []}


NESTED = """
    mapping:
      request:
        query.text: $message
        conversation.id: $sessionId
        conversation.turns: $history
        trace: $requestId
      response:
        response: data.answer
        sources: data.citations
        source_title: name
        source_url: link.href
"""


def test_custom_nested_mapping(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        json={"data": {"answer": "Tents.", "citations": [{"name": "Catalog", "link": {"href": "https://x/c"}}]}}
    )
    client = client_for(chat_extra=NESTED)
    r = client.post(
        "/api/chat",
        json={"message": "q", "sessionId": "abc", "history": [{"role": "user", "content": "x"}]},
        headers={"X-Request-ID": "req-42"},
    )
    assert r.json() == {"response": "Tents.", "sources": [{"title": "Catalog", "url": "https://x/c"}], "sessionId": "abc"}
    assert sent_body(httpx_mock) == {
        "query": {"text": "q"},
        "conversation": {"id": "abc", "turns": [{"role": "user", "content": "x"}]},
        "trace": "req-42",
    }


def test_shipped_nested_mapping_example(client_for, httpx_mock: HTTPXMock) -> None:
    from pathlib import Path

    from gateway.config import load_settings

    example = Path(__file__).resolve().parent.parent / "examples" / "mapping-nested.yaml"
    settings = load_settings(example, env={"BACKEND_URL": "http://kb.test/v2/ask", "BACKEND_TOKEN": "t0k"})
    httpx_mock.add_response(
        url="http://kb.test/v2/ask",
        json={"data": {"answer": "Yes.", "citations": [{"name": "Shipping", "link": "https://kb/ship"}]}},
    )
    r = client_for(settings).post("/api/chat", json={"message": "Canada?", "sessionId": "s9"})
    assert r.json() == {"response": "Yes.", "sources": [{"title": "Shipping", "url": "https://kb/ship"}], "sessionId": "s9"}
    request = httpx_mock.get_request()
    assert request is not None and request.headers["authorization"] == "Bearer t0k"
    body = json.loads(request.content)
    assert body["query"] == {"text": "Canada?"} and body["conversation"] == {"id": "s9", "turns": []}


def test_request_id_round_trip(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER)
    r = client_for().post("/api/chat", json={"message": "hi"}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert httpx_mock.get_request().headers["x-request-id"] == "abc-123"


def test_request_id_generated_when_absent_or_unsafe(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER)
    r = client_for().post("/api/chat", json={"message": "hi"}, headers={"X-Request-ID": "bad id\twith spaces"})
    generated = r.headers["x-request-id"]
    assert len(generated) == 32 and generated != "bad id\twith spaces"
    assert httpx_mock.get_request().headers["x-request-id"] == generated


def test_configured_upstream_headers_are_sent(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER)
    client = client_for(chat_extra="      headers: {Authorization: 'Bearer backend-secret'}")
    client.post("/api/chat", json={"message": "hi"}, headers={"Authorization": "Bearer client-token"})
    assert httpx_mock.get_request().headers["authorization"] == "Bearer backend-secret"


LONG = "x" * 4001
VALIDATION_CASES = [
    pytest.param({}, "Missing required field: message", id="missing-message"),
    pytest.param({"message": 5}, "Field 'message' must be a string, got number", id="message-number"),
    pytest.param({"message": None}, "Field 'message' must be a string, got null", id="message-null"),
    pytest.param({"message": "  "}, "Field 'message' must not be empty", id="message-blank"),
    pytest.param({"message": LONG}, "Field 'message' is longer than 4000 characters", id="message-too-long"),
    pytest.param({"message": "hi", "sessionId": 7}, "Field 'sessionId' must be a string, got number", id="session-number"),
    pytest.param(
        {"message": "hi", "sessionId": "a b"},
        "Field 'sessionId' must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'",
        id="session-charset",
    ),
    pytest.param(
        {"message": "hi", "sessionId": "abc\n"},
        "Field 'sessionId' must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'",
        id="session-trailing-newline",
    ),
    pytest.param(
        {"message": "hi", "sessionId": "s" * 129},
        "Field 'sessionId' must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'",
        id="session-too-long",
    ),
    pytest.param(
        {"message": "hi", "sessionId": ""},
        "Field 'sessionId' must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'",
        id="session-empty",
    ),
    pytest.param({"message": "hi", "history": {}}, "Field 'history' must be an array, got object", id="history-object"),
    pytest.param(
        {"message": "hi", "history": [{"role": "user", "content": "x"}] * 51},
        "Field 'history' has 51 entries; the limit is 50",
        id="history-too-many",
    ),
    pytest.param(
        {"message": "hi", "history": ["x"]},
        "Field 'history[0]' must be an object with 'role' and 'content', got string",
        id="history-entry-string",
    ),
    pytest.param(
        {"message": "hi", "history": [{"role": "system", "content": "x"}]},
        "Field 'history[0].role' must be 'user' or 'assistant'",
        id="history-role",
    ),
    pytest.param(
        {"message": "hi", "history": [{"role": "user", "content": "ok"}, {"role": "user"}]},
        "Field 'history[1].content' must be a string, got null",
        id="history-content-missing",
    ),
    pytest.param(
        {"message": "hi", "history": [{"role": "user", "content": "y" * 8001}]},
        "Field 'history[0].content' is longer than 8000 characters",
        id="history-content-too-long",
    ),
    pytest.param({"message": "hi", "context": []}, "Field 'context' must be an object, got array", id="context-array"),
]


@pytest.mark.parametrize(("body", "message"), VALIDATION_CASES)
def test_validation_errors(client_for, body: dict, message: str) -> None:
    r = client_for().post("/api/chat", json=body)
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "INVALID_REQUEST", "message": message}}


BODY_CASES = [
    pytest.param(b'{"message": "hi", "x": NaN}', "application/json", 400, "INVALID_REQUEST",
                 "Malformed JSON: NaN is not a JSON value", id="nan"),
    pytest.param(b'{"message": "hi", "x": -Infinity}', "application/json", 400, "INVALID_REQUEST",
                 "Malformed JSON: -Infinity is not a JSON value", id="infinity"),
    pytest.param(b"[" * 50000, "application/json", 400, "INVALID_REQUEST",
                 "Malformed JSON: nesting is too deep", id="deep-nesting"),
    pytest.param(b'{"message": ', "application/json", 400, "INVALID_REQUEST",
                 "Malformed JSON at line 1, column 13: Expecting value", id="truncated-json"),
    pytest.param(b"", "application/json", 400, "INVALID_REQUEST",
                 "Request body is empty; expected a JSON object", id="empty"),
    pytest.param(b"[1, 2]", "application/json", 400, "INVALID_REQUEST",
                 "Request body must be a JSON object, got array", id="array"),
    pytest.param(b'"\xff"', "application/json", 400, "INVALID_REQUEST",
                 "Request body is not valid UTF-8", id="not-utf8"),
    pytest.param(b"message=hi", "application/x-www-form-urlencoded", 415, "UNSUPPORTED_MEDIA_TYPE",
                 "Content-Type must be application/json, got application/x-www-form-urlencoded", id="form"),
    pytest.param(b'{"message": "hi"}', None, 415, "UNSUPPORTED_MEDIA_TYPE",
                 "Content-Type must be application/json, got none", id="no-content-type"),
]


@pytest.mark.parametrize(("raw", "content_type", "status", "code", "message"), BODY_CASES)
def test_body_errors(client_for, raw: bytes, content_type: str | None, status: int, code: str, message: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client_for().post("/api/chat", content=raw, headers=headers)
    assert r.status_code == status
    assert r.json() == {"error": {"code": code, "message": message}}


def test_json_with_charset_is_accepted(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=ANSWER)
    r = client_for().post("/api/chat", content=b'{"message": "hi"}', headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_body_over_limit_by_content_length(client_for) -> None:
    r = client_for().post("/api/chat", json={"message": "x" * 70_000})
    assert r.status_code == 413
    assert r.json() == {"error": {"code": "PAYLOAD_TOO_LARGE", "message": "Request body exceeds the limit of 65536 bytes"}}


def test_chunked_body_over_limit_is_cut_off_while_reading() -> None:
    # A real server and a raw socket: TestClient would buffer the whole body before the app sees it.
    # The client sends 1 KB chunks and looks for an answer after each; the gateway must answer 413
    # long before the 1,000th chunk (1 MB) would have been sent.
    sent = 0
    with serve(create_app(make_settings())) as url, socket.create_connection((urlsplit(url).hostname, urlsplit(url).port)) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        answer = b""
        while sent < 1000 and not answer:
            with contextlib.suppress(OSError):  # the gateway may close its side once it has answered
                sock.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
                sent += 1
            if select.select([sock], [], [], 0.005)[0]:
                answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b'"code":"PAYLOAD_TOO_LARGE"' in answer.replace(b" ", b"")
    assert sent < 200, f"the gateway read {sent} KB before refusing a body over 64 KB"


PROVIDER_CASES = [
    pytest.param(dict(exc=httpx.ConnectError("refused")),
                 "Chat backend could not be reached: connection refused or host unknown", id="refused"),
    pytest.param(dict(exc=httpx.ConnectTimeout("slow")),
                 "Chat backend could not be reached: connection timed out after 1s (connect timeout)",
                 id="connect-timeout"),
    pytest.param(dict(exc=httpx.ReadTimeout("slow")), "Chat backend did not answer within 2s (total timeout)",
                 id="read-timeout"),
    pytest.param(dict(exc=httpx.RemoteProtocolError("eof")),
                 "Chat backend closed the connection before answering", id="disconnect"),
    pytest.param(dict(status_code=503, json={"detail": "down"}), "Chat backend answered HTTP 503", id="http-503"),
    pytest.param(dict(status_code=404, text="no"), "Chat backend answered HTTP 404", id="http-404"),
    pytest.param(dict(text="<html>oops</html>"), "Chat backend answered with a body that is not JSON", id="not-json"),
    pytest.param(dict(json=[1]), "Chat backend answered with a JSON array, expected an object", id="json-array"),
    pytest.param(dict(json={"answer": "x"}),
                 "Chat backend answer has nothing at 'response', expected a string", id="missing-response"),
    pytest.param(dict(json={"response": 3}),
                 "Chat backend answer has a number at 'response', expected a string", id="response-number"),
    pytest.param(dict(json={"response": "x", "sources": "a"}),
                 "Chat backend answer has a string at 'sources', expected an array", id="sources-string"),
    pytest.param(dict(json={"response": "x", "sources": [{"title": "t"}]}),
                 "Chat backend answer 'sources[0]' must have string fields 'title' and 'url'", id="source-no-url"),
]


@pytest.mark.parametrize(("failure", "expected"), PROVIDER_CASES)
def test_backend_failures_are_provider_errors(client_for, httpx_mock: HTTPXMock, failure: dict, expected: str) -> None:
    if "exc" in failure:
        # Reusable: a connection that could not be made is retried (upstream.retries), and fails again.
        httpx_mock.add_exception(failure["exc"], is_reusable=True)
    else:
        httpx_mock.add_response(**failure)
    r = client_for().post("/api/chat", json={"message": "hi"})
    assert r.status_code == 502
    assert r.json() == {"error": {"code": "PROVIDER_ERROR", "message": expected}}
    assert "backend.test" not in r.text


def test_missing_sources_default_to_empty(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json={"response": "x"})
    assert client_for().post("/api/chat", json={"message": "hi", "sessionId": "s"}).json() == {
        "response": "x", "sources": [], "sessionId": "s"}


def test_fallback_answer_when_backend_fails(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("refused"), is_reusable=True)
    client = client_for(chat_extra="    fallback_response: Sorry, try again soon.")
    r = client.post("/api/chat", json={"message": "hi", "sessionId": "s"})
    assert r.status_code == 200
    assert r.json() == {"response": "Sorry, try again soon.", "sources": [], "sessionId": "s", "fallback": True}
    assert r.headers["x-gateway-fallback"] == "true"
