"""The fault matrix: each case a real misbehaving server on loopback, all running at once,
each ending in the right envelope, event or fallback within the configured timeouts,
while the gateway keeps answering other requests. Plus which failures are retried."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from gateway.app import create_app
from tests.conftest import free_port, make_settings, serve
from tests.streaming_support import LAST_CHUNK, Received, chunk, head, raw_backend, read_events

pytestmark = pytest.mark.integration

CAP = 65536
TOTAL = 2.0  # the routes' total timeout; every case must end within it (plus a generous margin)
MARGIN = 2.0

TIMEOUTS = "{connect: 500ms, first_byte: 1s, idle: 500ms, total: 2s}"
ROUTES = """
client: {{max_response_bytes: {cap}}}
server: {{log_format: json, log_level: error, sse_ping_interval: 200ms}}
storage: {{record_chat_turns: false}}
routes:
  - path: /api/chat
    handler: chat
    rate_limit: "off"
    upstream: {{url: "{url}", timeouts: {timeouts}, breaker: off}}
  - path: /api/refused
    handler: chat
    rate_limit: "off"
    upstream: {{url: "http://127.0.0.1:{closed}/api/chat", timeouts: {timeouts}, retries: 1, breaker: off}}
  - path: /api/fallback
    handler: chat
    rate_limit: "off"
    upstream: {{url: "{url}", timeouts: {timeouts}, breaker: off}}
    fallback_response: Sorry, I cannot look that up right now.
  - path: /api/stream
    handler: chat
    rate_limit: "off"
    upstream: {{url: "{url}", timeouts: {timeouts}, breaker: off}}
    mapping:
      request: {{message: $message, stream: $stream}}
      stream: {{format: sse, delta: text}}
"""


def http(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def misbehave(body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    fault = body["message"]
    if fault == "ok":
        writer.write(http(b'{"response": "fine", "sources": []}'))
    elif fault == "never":  # accepts, reads the request, never answers
        await asyncio.sleep(30)
    elif fault == "stalled-body":
        writer.write(http(b'{"response": "the answer is')[:-3])
        await writer.drain()
        await asyncio.sleep(30)
    elif fault == "500":
        writer.write(http(b'{"detail": "db down at 10.0.0.7"}', status="500 Internal Server Error"))
    elif fault == "503":
        writer.write(http(b'{"detail": "busy"}', "Retry-After: 7", status="503 Service Unavailable"))
    elif fault == "invalid-json":
        writer.write(http(b'{"response": "unfinished'))
    elif fault == "wrong-shape":
        writer.write(http(b'{"answer": "hi"}'))
    elif fault == "oversized":
        writer.write(http(b'{"response": "' + b"x" * (CAP * 2) + b'"}'))
    elif fault == "slow-drip":  # one byte every 200 ms: never idle, never done
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)
    elif fault == "no-terminator":
        writer.write(head() + chunk(b'data: {"text": "We "}\n\n') + LAST_CHUNK)  # ends, but never says [DONE]
    await writer.drain()


# (route, fault) -> the message every client gets, as a 502 envelope or an error event
CASES = {
    ("/api/refused", "refused"): "Chat backend could not be reached: connection refused or host unknown",
    ("/api/chat", "never"): "Chat backend sent nothing within 1s (first_byte timeout)",
    ("/api/chat", "stalled-body"): "Chat backend went silent for 0.5s mid-answer (idle timeout)",
    ("/api/chat", "500"): "Chat backend answered HTTP 500",
    ("/api/chat", "503"): "Chat backend answered HTTP 503 (Retry-After: 7s)",
    ("/api/chat", "invalid-json"): "Chat backend answered with a body that is not JSON",
    ("/api/chat", "wrong-shape"): "Chat backend answer has nothing at 'response', expected a string",
    ("/api/chat", "oversized"): f"Chat backend answer exceeds {CAP} bytes",
    ("/api/chat", "slow-drip"): "Chat backend did not answer within 2s (total timeout)",
    ("/api/stream", "no-terminator"): "Chat backend stream ended before its end marker (data: [DONE])",
}


async def test_fault_matrix_all_at_once_while_other_chats_are_answered() -> None:
    async with raw_backend(misbehave) as url:
        yaml_text = ROUTES.format(cap=CAP, url=url, timeouts=TIMEOUTS, closed=free_port())
        with serve(create_app(make_settings(yaml_text=yaml_text))) as gw:
            async with httpx.AsyncClient(base_url=gw, timeout=30) as client:

                async def plain(path: str, fault: str) -> tuple[float, int, Any]:
                    started = time.monotonic()
                    r = await client.post(path, json={"message": fault})
                    return time.monotonic() - started, r.status_code, r.json()

                async def events(path: str, fault: str) -> tuple[float, Received]:
                    started = time.monotonic()
                    got = await read_events(client, f"{gw}{path}", {"message": fault})
                    return time.monotonic() - started, got

                healthy: list[float] = []
                stop = asyncio.Event()

                async def other_chats() -> None:
                    while not stop.is_set():
                        took, status, body = await plain("/api/chat", "ok")
                        assert status == 200 and body["response"] == "fine"
                        healthy.append(took)
                        await asyncio.sleep(0.05)

                background = asyncio.create_task(other_chats())
                plain_results, event_results, fallbacks = await asyncio.gather(
                    asyncio.gather(*(plain(path, fault) for path, fault in CASES if path != "/api/stream")),
                    asyncio.gather(*(events(path, fault) for path, fault in CASES)),
                    asyncio.gather(plain("/api/fallback", "500"), events("/api/fallback", "never")),
                )
                stop.set()
                await background

    for ((_path, fault), message), (took, status, body) in zip(
        [c for c in CASES.items() if c[0][0] != "/api/stream"], plain_results, strict=True
    ):
        assert (fault, status, body) == (fault, 502, {"error": {"code": "PROVIDER_ERROR", "message": message}})
        assert took < TOTAL + MARGIN, fault
    for ((_path, fault), message), (took, got) in zip(CASES.items(), event_results, strict=True):
        assert got.status == 200, fault
        assert got.events[-1].name == "error", fault
        assert got.events[-1].data == {"error": {"code": "PROVIDER_ERROR", "message": message}}, fault
        assert not got.named("done"), fault
        assert took < TOTAL + MARGIN, fault
    (_, status, body), (_, got) = fallbacks
    fallback = "Sorry, I cannot look that up right now."
    assert (status, body["response"], body["fallback"]) == (200, fallback, True)
    assert [e.name for e in got.events] == ["delta", "done"]
    assert got.named("done") == [{"response": fallback, "sources": [], "sessionId": got.named("done")[0]["sessionId"],
                                  "fallback": True}]
    assert got.pings, "pings while the first byte was late"
    # Other chats kept being answered, each well inside the smallest configured timeout.
    assert len(healthy) >= 5 and max(healthy) < 0.5


def test_the_stream_chunk_text_is_validated() -> None:
    # A chunk whose delta is not a string is the wrong shape, named like the non-streaming case.
    async def run() -> Received:
        async def bad(body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(head() + chunk(b'data: {"text": 3}\n\n') + LAST_CHUNK)
            await writer.drain()

        async with raw_backend(bad) as url:
            yaml_text = ROUTES.format(cap=CAP, url=url, timeouts=TIMEOUTS, closed=free_port())
            with serve(create_app(make_settings(yaml_text=yaml_text))) as gw:
                async with httpx.AsyncClient(timeout=30) as client:
                    return await read_events(client, f"{gw}/api/stream", {"message": "hi"})

    got = asyncio.run(run())
    assert got.named("error") == [{"error": {"code": "PROVIDER_ERROR",
                                             "message": "Chat backend stream chunk has a number at 'text', expected a string"}}]


# -- retries: only where nothing was sent --------------------------------------------


def test_a_connection_that_could_not_be_made_is_retried(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("refused"))
    httpx_mock.add_exception(httpx.ConnectTimeout("slow"))
    httpx_mock.add_response(json={"response": "back", "sources": []})
    client = client_for(chat_extra="""      retries: {attempts: 2, backoff: 1ms}""")
    r = client.post("/api/chat", json={"message": "hi", "sessionId": "s"})
    assert r.status_code == 200 and r.json()["response"] == "back"
    assert len(httpx_mock.get_requests()) == 3


def test_retries_are_bounded(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("refused"), is_reusable=True)
    client = client_for(chat_extra="""      retries: {attempts: 2, backoff: 1ms}""")
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 502
    assert len(httpx_mock.get_requests()) == 3


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(httpx.RemoteProtocolError("closed mid-answer"), id="disconnected-after-sending"),
        pytest.param(httpx.ReadTimeout("slow"), id="read-timeout"),
        pytest.param(httpx.WriteError("broken pipe"), id="write-error"),
    ],
)
def test_nothing_is_retried_once_the_backend_may_have_seen_the_request(
    client_for, httpx_mock: HTTPXMock, exc: Exception
) -> None:
    httpx_mock.add_exception(exc)
    client = client_for(chat_extra="""      retries: {attempts: 2, backoff: 1ms}""")
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 502
    assert len(httpx_mock.get_requests()) == 1
