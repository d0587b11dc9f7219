"""Hostile clients: bodies that are valid JSON but not representable (numbers beyond a double,
integers past Python's 4300-digit limit, lone surrogates), rows stored with Infinity by older
versions, and clients that trickle their body (issue 11, items 2, 3 and 7)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from gateway.app import create_app
from gateway.cli import main as cli_main
from gateway.errors import ConfigError
from gateway.storage import NewConversation, open_store
from tests.conftest import BACKEND_URL, BASE_YAML, make_settings, serve
from tests.pg_service import postgres, postgres_url  # noqa: F401  (fixtures)
from tests.test_conversations import ADMIN, config_yaml, store_url  # noqa: F401  (store_url is a fixture)

ANSWER = {"response": "ok", "sources": []}
AUTH = {"Authorization": f"Bearer {ADMIN}"}
HUGE_INT = "9" * 5000  # more digits than int() converts by default (sys.get_int_max_str_digits)


def strict_json(text: str) -> Any:
    """json.loads that refuses what Python accepts but JSON does not (NaN, Infinity)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def invalid(message: str) -> dict[str, Any]:
    return {"error": {"code": "INVALID_REQUEST", "message": message}}


# -- item 2 and 3: what a client sends ------------------------------------------------------

DOUBLE = "is a number too large for a 64-bit float"
SURROGATE = "contains a lone surrogate \\udc00, which is not valid Unicode"

CHAT_CASES = [
    pytest.param(b'{"message": "hi", "context": {"n": 1e999}}', f"Field 'context.n' {DOUBLE}", id="context-1e999"),
    pytest.param(b'{"message": "hi", "context": {"n": [1, -1E400]}}', f"Field 'context.n[1]' {DOUBLE}", id="negative"),
    pytest.param(b'{"message": "hi", "n": 1' + b"0" * 400 + b"}", f"Field 'n' {DOUBLE}", id="int-beyond-double"),
    pytest.param(b'{"message": "hi", "n": ' + HUGE_INT.encode() + b"}", f"Field 'n' {DOUBLE}", id="int-5000-digits"),
    pytest.param(b'{"message": "hi", "context": {"a": {"b": -' + HUGE_INT.encode() + b"}}}",
                 f"Field 'context.a.b' {DOUBLE}", id="nested-int-5000-digits"),
    pytest.param(b'{"message": "x\\udc00"}', f"Field 'message' {SURROGATE}", id="message-surrogate"),
    pytest.param(b'{"message": "x\\uDC00"}', f"Field 'message' {SURROGATE}", id="message-surrogate-upper"),
    pytest.param(b'{"message": "x\xed\xb0\x80"}', f"Field 'message' {SURROGATE}", id="message-surrogate-utf8"),
    pytest.param(b'{"message": "hi", "history": [{"role": "user", "content": "\\udc00"}, '
                 b'{"role": "assistant", "content": "ok"}]}',
                 f"Field 'history[0].content' {SURROGATE}", id="history-surrogate"),
    pytest.param(b'{"message": "hi", "context": {"\\udc00": 1}}',
                 "Field 'context.\\udc00' has a name that contains a lone surrogate \\udc00, which is not valid Unicode",
                 id="key-surrogate"),
]


@pytest.mark.parametrize(("raw", "message"), CHAT_CASES)
def test_chat_bodies_that_are_not_representable_are_400_naming_the_field(
    client_for, httpx_mock: HTTPXMock, raw: bytes, message: str
) -> None:
    r = client_for().post("/api/chat", content=raw, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (400, invalid(message))
    assert httpx_mock.get_requests() == []  # nothing non-JSON ever reaches the backend


def test_representable_edge_cases_are_forwarded_unchanged(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, json=ANSWER)
    raw = (b'{"message": "\\ud83d\\ude00 \xf0\x9f\x98\x80", "context": {"max": 1.7976931348623157e308, "tiny": 1e-999,'
           b' "big": 1' + b"0" * 300 + b', "text": "\\\\udc00 is only text"}}')
    r = client_for().post("/api/chat", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    sent = strict_json(httpx_mock.get_requests()[0].content.decode())
    assert sent["message"] == "\U0001f600 \U0001f600"  # a surrogate *pair* is one character
    assert sent["context"]["max"] == 1.7976931348623157e308 and sent["context"]["tiny"] == 0.0
    assert sent["context"]["big"] == 10**300 and sent["context"]["text"] == "\\udc00 is only text"


LOG_CASES = [
    pytest.param({"metadata": "{\"duration\": 1e999}"}, f"Field 'metadata.duration' {DOUBLE}", id="duration-1e999"),
    pytest.param({"metadata": "{\"duration\": " + HUGE_INT + "}"}, f"Field 'metadata.duration' {DOUBLE}",
                 id="duration-5000-digits"),
    pytest.param({"metadata": "{\"extra\": {\"n\": [" + HUGE_INT + "]}}"}, f"Field 'metadata.extra.n[0]' {DOUBLE}",
                 id="metadata-nested-int"),
    pytest.param({"metadata": "{\"source\": \"web\\udc00\"}"}, f"Field 'metadata.source' {SURROGATE}",
                 id="metadata-surrogate"),
    pytest.param({"content": "\"hello \\udc00\""}, f"Field 'messages[0].content' {SURROGATE}",
                 id="content-surrogate"),
]


@pytest.mark.parametrize(("parts", "message"), LOG_CASES)
def test_conversation_logs_that_are_not_representable_are_400_and_not_stored(
    client_for, tmp_path: Path, parts: dict[str, str], message: str
) -> None:
    client = client_for(make_settings(yaml_text=config_yaml(f"sqlite:///{tmp_path}/gateway.db")))
    raw = (
        '{"sessionId": "p", "messages": [{"role": "user", "content": ' + parts.get("content", '"x"') + "}], "
        '"metadata": ' + parts.get("metadata", "{}") + "}"
    ).encode()
    r = client.post("/api/conversations/log", content=raw, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (400, invalid(message))
    listed = client.get("/api/admin/conversations", headers=AUTH)
    assert listed.status_code == 200 and listed.json()["conversations"] == []


# -- item 2: rows stored with Infinity by older versions stay readable ------------------------

async def seed_infinity(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        for duration in (float("inf"), 30.0, 10.0):
            metadata = {"duration": duration, "source": "web", "nested": {"x": [float("inf"), 1]}}
            await store.record_conversation(NewConversation("p", [{"role": "user", "content": "x"}], metadata))
    finally:
        await store.close()


def test_rows_stored_with_infinity_by_older_versions_stay_readable(
    client_for, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    asyncio.run(seed_infinity(store_url))
    client = client_for(make_settings(yaml_text=config_yaml(store_url)))
    listed = client.get("/api/admin/conversations", headers=AUTH)
    assert listed.status_code == 200, listed.text
    rows = strict_json(listed.text)["conversations"]
    assert sorted(str(c["metadata"]["duration"]) for c in rows) == ["10.0", "30.0", "None"]
    assert all(c["metadata"]["nested"] == {"x": [None, 1]} for c in rows)
    for row in rows:
        one = client.get(f"/api/admin/conversations/{row['conversationId']}", headers=AUTH)
        assert one.status_code == 200 and strict_json(one.text)["metadata"] == row["metadata"]

    config = tmp_path / "gateway.yaml"
    config.write_text(config_yaml(store_url))
    capsys.readouterr()
    assert cli_main(["export", "--config", str(config)]) == 0
    lines = [strict_json(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and sorted(str(c["metadata"]["duration"]) for c in lines) == ["10.0", "30.0", "None"]
    assert cli_main(["stats", "--config", str(config), "--json"]) == 0
    stats = strict_json(capsys.readouterr().out)
    assert stats["conversations"] == 3 and stats["averageDuration"] == pytest.approx(20.0)  # the finite ones


# -- item 7: a body trickled byte by byte is cut off ------------------------------------------

def read_answer(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (or ``seconds`` pass)."""
    sock.settimeout(seconds)
    answer = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        answer += chunk
    return answer


def trickle(url: str, head: bytes, body: bytes, interval: float, seconds: float) -> tuple[bytes, float]:
    """Send ``head``, then ``body`` one byte every ``interval`` seconds while the server keeps the
    connection open; return what the server answered and when (seconds after the head)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head)
        started = time.monotonic()
        sock.settimeout(interval)
        answer = b""
        for byte in body:
            if time.monotonic() - started > seconds:
                break
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            answer += chunk
            if not chunk or answer:
                answer += read_answer(sock, 2)
                break
        return answer, time.monotonic() - started


def body_timeout_settings(timeout: str = "1s") -> Any:
    yaml = BASE_YAML.format(url=BACKEND_URL, chat_extra="")
    return make_settings(yaml_text=yaml.replace("server: {log_format: json}", f"server: {{log_format: json, body_timeout: {timeout}}}"))


@pytest.mark.integration
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_trickled_byte_by_byte_is_cut_off_with_408(framing: str) -> None:
    head = b"POST /api/chat HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    if framing == "content-length":
        head += b"Content-Length: 200\r\n\r\n"
        body = b" " * 200
    else:
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        body = b"".join(b"1\r\n \r\n" for _ in range(40))
    with serve(create_app(body_timeout_settings("500ms"))) as url:
        answer, elapsed = trickle(url, head, body, interval=0.1, seconds=8)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert strict_json(payload.decode()) == {
        "error": {"code": "REQUEST_TIMEOUT", "message": "Request body was not received within 0.5s"}
    }
    assert elapsed < 6  # cut off at about 0.5 s, far from the trickle's 8 s


def test_body_timeout_setting() -> None:
    assert make_settings().server.body_timeout == 10.0
    assert body_timeout_settings("2500ms").server.body_timeout == 2.5
    with pytest.raises(ConfigError, match=r"server.body_timeout: 'soon' is not a duration"):
        body_timeout_settings("soon")


def test_the_readme_quotes_these_messages() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    quoted = [CHAT_CASES[0].values[1], CHAT_CASES[8].values[1], CHAT_CASES[9].values[1],
              "Request body was not received within 10s"]
    assert [m for m in quoted if f"`{m}`" not in readme and f"`{m}`," not in readme] == []


TRANSCRIBE_YAML = """
server: {log_format: json, body_timeout: 500ms}
storage: {record_chat_turns: false}
auth: {api_keys: "transcribe-key-0123456789"}
stt: {provider: openai, base_url: "http://127.0.0.1:9/v1"}
routes:
  - {path: /api/transcribe, handler: transcribe}
"""


@pytest.mark.integration
def test_a_trickled_audio_upload_is_cut_off_too() -> None:
    # /api/transcribe reads its audio with the same reader as JSON bodies: the same deadline.
    head = (b"POST /api/transcribe?sessionId=s1 HTTP/1.1\r\nHost: gateway\r\nContent-Type: audio/wav\r\n"
            b"Authorization: Bearer transcribe-key-0123456789\r\nContent-Length: 200\r\n\r\n")
    with serve(create_app(make_settings(yaml_text=TRANSCRIBE_YAML))) as url:
        answer, elapsed = trickle(url, head, b"R" * 200, interval=0.1, seconds=8)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:200]
    assert b"Request body was not received within 0.5s" in answer
    assert elapsed < 6
