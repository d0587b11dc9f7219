"""Streaming chat against real servers on loopback: the backend (a raw server in the test's
event loop), the gateway (uvicorn in a thread) and, for one test, the shipped nginx config.

Timing is asserted only relative to the backend's own sends: the backends here run in
lockstep with the client (the next piece is sent only once the client holds the previous
one), so a gateway that buffered would deadlock and fail, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.storage import open_store
from tests.conftest import free_port, make_settings, serve
from tests.services import NGINX_MAIN, ROOT, nginx
from tests.streaming_support import (
    LAST_CHUNK,
    Event,
    Received,
    chunk,
    head,
    ollama_line,
    openai_delta,
    raw_backend,
    read_events,
)

pytestmark = pytest.mark.integration

PIECES = ["We ", "ship ", "to ", "Canada."]
WAIT = 5.0  # generous: how long a lockstep backend waits for the client before giving up

OPENAI_ROUTE = """
    mapping:
      request: {{model: m, stream: $stream, messages: {{$conversation: {{}}}}}}
      response:
        response: choices[0].message.content
        sources: null
      stream:
        format: sse
        delta: choices[0].delta.content
"""
OLLAMA_ROUTE = """
    mapping:
      request: {{model: m, stream: $stream, messages: {{$conversation: {{}}}}}}
      response: {{response: message.content, sources: null}}
      stream: {{format: ndjson, delta: message.content}}
"""


def config(url: str, route_extra: str = "", store: str | None = None, ping: str = "10s") -> str:
    storage = f'{{url: "{store}", record_chat_turns: true}}' if store else "{record_chat_turns: false}"
    return f"""
server: {{log_format: json, log_level: warning, sse_ping_interval: {ping}}}
storage: {storage}
routes:
  - path: /api/chat
    handler: chat
    rate_limit: "off"
    upstream:
      url: {url}
      timeouts: {{connect: 1s, first_byte: 8s, idle: 8s, total: 9s}}
      breaker: off
{route_extra.format()}
"""


def gateway(yaml_text: str) -> Any:
    return serve(create_app(make_settings(yaml_text=yaml_text)))


class Lockstep:
    """A backend that sends each piece only once the client has received the one before."""

    def __init__(self, encode: Any, terminator: bytes) -> None:
        self.encode, self.terminator = encode, terminator
        self.received = [asyncio.Event() for _ in PIECES]
        self.sent: list[float] = []
        self.bodies: list[dict[str, Any]] = []

    def on_event(self, e: Event) -> None:
        if e.name == "delta":
            self.received[sum(ev.is_set() for ev in self.received)].set()

    async def __call__(self, body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.bodies.append(body)
        writer.write(head("text/event-stream" if self.terminator else "application/x-ndjson"))
        for i, piece in enumerate(PIECES):
            writer.write(chunk(self.encode(piece)))
            await writer.drain()
            self.sent.append(time.monotonic())
            await asyncio.wait_for(self.received[i].wait(), WAIT)
        writer.write(chunk(self.terminator or ollama_line("", done=True)) + LAST_CHUNK)
        await writer.drain()


def assert_streamed(backend: Lockstep, got: Received) -> None:
    deltas = [e for e in got.events if e.name == "delta"]
    assert [e.data["text"] for e in deltas] == PIECES
    # Each delta reached the client after the backend sent it and before it sent the next one.
    for i, e in enumerate(deltas[:-1]):
        assert backend.sent[i] <= e.at <= backend.sent[i + 1]
    (done,) = got.named("done")
    assert done["response"] == "".join(PIECES) and done["sources"] == [] and "fallback" not in done
    assert got.events[-1].name == "done"


@pytest.mark.parametrize(
    ("route", "encode", "terminator"),
    [
        pytest.param(OPENAI_ROUTE, openai_delta, b"data: [DONE]\n\n", id="openai-sse"),
        pytest.param(OLLAMA_ROUTE, ollama_line, b"", id="ollama-ndjson"),
    ],
)
async def test_deltas_reach_the_client_as_the_backend_sends_them(
    route: str, encode: Any, terminator: bytes, tmp_path: Path
) -> None:
    backend = Lockstep(encode, terminator)
    store = f"sqlite:///{tmp_path}/gateway.db"
    async with raw_backend(backend) as url:
        with gateway(config(url, route, store=store)) as gw:
            async with httpx.AsyncClient(timeout=20) as client:
                got = await read_events(client, f"{gw}/api/chat", {"message": "Ship to Canada?", "sessionId": "s-1"},
                                        on_event=backend.on_event)
    assert got.status == 200
    assert got.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert got.headers["x-accel-buffering"] == "no" and got.headers["cache-control"] == "no-cache"
    assert_streamed(backend, got)
    assert backend.bodies[0]["stream"] is True
    # The recorded turn holds the whole answer, as for a non-streaming turn.
    store_ = open_store(store)
    await store_.open()
    try:
        turns = [t async for t in store_.export("turns", None, None)]
    finally:
        await store_.close()
    assert [(t["sessionId"], t["answer"], t["status"]) for t in turns] == [("s-1", "".join(PIECES), 200)]


async def test_a_client_without_accept_event_stream_gets_the_contract_answer_from_a_streaming_route() -> None:
    async def whole(body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert body["stream"] is False
        answer = b'{"choices": [{"message": {"role": "assistant", "content": "Yes."}}]}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(answer), answer))
        await writer.drain()

    async with raw_backend(whole) as url:
        with gateway(config(url, OPENAI_ROUTE)) as gw:
            async with httpx.AsyncClient(timeout=20) as client:
                r = await client.post(f"{gw}/api/chat", json={"message": "hi", "sessionId": "s"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {"response": "Yes.", "sources": [], "sessionId": "s"}


async def test_a_non_streaming_backend_is_one_delta_then_sources_then_done_with_pings_while_waiting() -> None:
    got = Received()

    async def slow_whole(body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(WAIT):
            while len(got.pings) < 2:  # answer only once the client has seen pings
                await asyncio.sleep(0.01)
        answer = b'{"response": "We ship.", "sources": [{"title": "Shipping", "url": "https://x/s"}]}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(answer), answer))
        await writer.drain()

    async with raw_backend(slow_whole) as url:
        with gateway(config(url, ping="50ms")) as gw:
            async with httpx.AsyncClient(timeout=20) as client:
                await read_events(client, f"{gw}/api/chat", {"message": "hi", "sessionId": "s"}, got)
    assert [e.name for e in got.events] == ["delta", "sources", "done"]
    assert got.pings and max(got.pings) < got.events[0].at
    sources = [{"title": "Shipping", "url": "https://x/s"}]
    assert got.named("delta") == [{"text": "We ship."}]
    assert got.named("sources") == [{"sources": sources}]
    assert got.named("done") == [{"response": "We ship.", "sources": sources, "sessionId": "s"}]


async def test_pings_while_the_first_byte_is_late_and_during_long_gaps() -> None:
    got = Received()

    async def until_pinged(n: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(got.pings) < n:
                await asyncio.sleep(0.01)

    async def hesitant(body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await until_pinged(2)
        writer.write(head() + chunk(openai_delta("Hmm, ")))
        await writer.drain()
        await until_pinged(4)
        writer.write(chunk(openai_delta("yes.") + b"data: [DONE]\n\n") + LAST_CHUNK)
        await writer.drain()

    async with raw_backend(hesitant) as url:
        with gateway(config(url, OPENAI_ROUTE, ping="50ms")) as gw:
            async with httpx.AsyncClient(timeout=20) as client:
                await read_events(client, f"{gw}/api/chat", {"message": "hi"}, got)
    first, second = (e.at for e in got.events if e.name == "delta")
    assert sum(p < first for p in got.pings) >= 2
    assert sum(first < p < second for p in got.pings) >= 2
    assert got.named("done")[0]["response"] == "Hmm, yes."


async def test_an_error_event_when_the_backend_fails_mid_stream() -> None:
    async def breaks(body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(openai_delta("We ")))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # cut off: no terminating chunk, no [DONE]

    async with raw_backend(breaks) as url:
        with gateway(config(url, OPENAI_ROUTE + "    fallback_response: Sorry.\n")) as gw:
            async with httpx.AsyncClient(timeout=20) as client:
                got = await read_events(client, f"{gw}/api/chat", {"message": "hi"})
    assert [e.name for e in got.events] == ["delta", "error"]
    assert got.named("error") == [{"error": {"code": "PROVIDER_ERROR",
                                             "message": "Chat backend closed the connection before answering"}}]


async def test_the_backend_sees_the_cancellation_within_a_second_of_the_client_going_away() -> None:
    closed_at: list[float] = []
    backend_saw_eof = asyncio.Event()
    eof_at: list[float] = []

    async def generating(body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(openai_delta("Once upon a time")))
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)  # b"" once the gateway closes the connection
        eof_at.append(time.monotonic())
        backend_saw_eof.set()

    async with raw_backend(generating) as url:
        with gateway(config(url, OPENAI_ROUTE)) as gw:
            async with httpx.AsyncClient(timeout=20) as client:
                headers = {"Accept": "text/event-stream"}
                async with client.stream("POST", f"{gw}/api/chat", json={"message": "hi"}, headers=headers) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("event: delta"):
                            break
                closed_at.append(time.monotonic())
            await asyncio.wait_for(backend_saw_eof.wait(), 5)
    assert eof_at[0] - closed_at[0] < 1.0


@pytest.fixture
def behind_nginx(tmp_path: Path) -> Iterator[Any]:
    def start(url: str, route: str) -> Any:
        import contextlib

        @contextlib.contextmanager
        def run() -> Iterator[str]:
            with gateway(config(url, route)) as gw:
                port = free_port()
                site = (ROOT / "examples" / "nginx" / "gateway.conf").read_text()
                site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
                site = site.replace("server 127.0.0.1:8080;", f"server {gw.removeprefix('http://')};")
                with nginx(NGINX_MAIN.format(dir=tmp_path, connections=64, site=site), tmp_path, port):
                    yield f"http://127.0.0.1:{port}"

        return run()

    yield start


async def test_deltas_stream_through_nginx_with_the_shipped_config(behind_nginx: Any) -> None:
    backend = Lockstep(openai_delta, b"data: [DONE]\n\n")
    async with raw_backend(backend) as url:
        with behind_nginx(url, OPENAI_ROUTE) as proxy:
            async with httpx.AsyncClient(timeout=20) as client:
                got = await read_events(client, f"{proxy}/api/chat", {"message": "hi"}, on_event=backend.on_event)
    assert got.status == 200
    assert_streamed(backend, got)
