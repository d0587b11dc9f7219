"""Pieces shared by the streaming and fault tests: a scriptable raw backend on loopback
and an SSE client that notes when each event arrived."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

# behaviour(body, reader, writer): what the backend does with one request.
Script = Callable[[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_backend(script: Script) -> AsyncIterator[str]:
    """A TCP server in the test's event loop: reads one HTTP request with a JSON body, runs ``script``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            body = json.loads(await reader.readexactly(length))
            await script(body, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/chat"
    finally:
        server.close()


def head(content_type: str = "text/event-stream", *extra: str, status: str = "200 OK") -> bytes:
    """A chunked response head (the body follows as ``chunk(...)`` pieces)."""
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Transfer-Encoding: chunked", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


def openai_delta(text: str) -> bytes:
    return f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': text}}]})}\n\n".encode()


def ollama_line(text: str, done: bool = False) -> bytes:
    return (json.dumps({"model": "m", "message": {"role": "assistant", "content": text}, "done": done}) + "\n").encode()


@dataclass
class Event:
    name: str
    data: dict[str, Any]
    at: float  # time.monotonic() on arrival


@dataclass
class Received:
    status: int = 0
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    events: list[Event] = field(default_factory=list)
    pings: list[float] = field(default_factory=list)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.name == name]


async def read_events(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], received: Received | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> Received:
    """POST with ``Accept: text/event-stream`` and parse the answer as it arrives."""
    received = received or Received()
    async with client.stream("POST", url, json=body, headers={"Accept": "text/event-stream"}) as r:
        received.status, received.headers = r.status_code, r.headers
        if r.status_code != 200:
            await r.aread()
            received.events.append(Event("http-error", r.json(), time.monotonic()))
            return received
        name, data = "", ""
        async for line in r.aiter_lines():
            if line == ": ping":
                received.pings.append(time.monotonic())
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and name:
                e = Event(name, json.loads(data), time.monotonic())
                received.events.append(e)
                if on_event is not None:
                    on_event(e)
                name, data = "", ""
    return received
