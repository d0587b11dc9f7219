"""Server-Sent Events, both ways: the event stream a client gets from /api/chat, and
the streams backends answer with (SSE, newline-delimited JSON).

To the client (https://html.spec.whatwg.org/multipage/server-sent-events.html):
``event: delta|sources|done|error`` with one line of JSON as ``data``, and a
``: ping`` comment after every ``server.sse_ping_interval`` without an event, so
proxies that cut idle connections (60 s on common load balancers; LiteLLM
#34374) keep the stream open while a model thinks. ``X-Accel-Buffering: no``
switches nginx's response buffering off for the stream (nginx/nginx#1505).

``EventStream`` watches for the client going away the whole time (not only when
it next writes: a ping may be 15 s off) and then cancels the producer at once,
which leaves the upstream exchange and closes its connection (issue 13: no
backend keeps generating for nobody).

From a backend: ``backend_items`` turns the decoded body into JSON values, one per
SSE ``data`` event or NDJSON line, and ``END`` for the SSE terminator ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import ProviderError
from gateway.upstream import parse_json

log = structlog.get_logger("gateway.streaming")

EVENT_STREAM = "text/event-stream"
PING = b": ping\n\n"
END: Any = object()  # the backend's end-of-stream marker (SSE ``data: [DONE]``)
SSE_DONE = "[DONE]"
_QUEUE = 16  # events buffered between the producer and a slow client
STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def wants_event_stream(request: Request) -> bool:
    """``Accept: text/event-stream`` (among others, unless with q=0) asks for events."""
    for part in request.headers.get("accept", "").split(","):
        media, _, params = part.partition(";")
        if media.strip().lower() == EVENT_STREAM:
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def event(name: str, data: Mapping[str, Any]) -> bytes:
    # json.dumps escapes newlines, so data is always one line.
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class EventStream(Response):
    """A 200 ``text/event-stream`` answer whose events come from ``events``.

    ``events`` runs in its own task, so a ping can go out while it waits on a
    backend, and so the client going away can cancel it wherever it is."""

    media_type = EVENT_STREAM

    def __init__(
        self, events: AsyncGenerator[bytes, None], ping_interval: float, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status_code = 200
        self.background = None
        self._events = events
        self._ping_interval = ping_interval
        self.init_headers({**STREAM_HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUE)
        producer = asyncio.create_task(self._produce(queue))
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, gone}, timeout=self._ping_interval,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    if gone in done:
                        return
                    await send({"type": "http.response.body", "body": PING, "more_body": True})
                    continue
                chunk = getter.result()
                if chunk is None:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote (ASGI 2.4 servers say so this way)
            pass
        finally:
            for task in (producer, gone):
                task.cancel()
            # Wait for the producer to unwind: that is where the upstream connection closes.
            await asyncio.gather(producer, gone, return_exceptions=True)

    async def _produce(self, queue: asyncio.Queue[bytes | None]) -> None:
        try:
            async for chunk in self._events:
                await queue.put(chunk)
        except Exception as exc:  # a bug: the stream began, so the boundary in app.py cannot answer
            log.error("unhandled_exception", exc_info=exc)
            await queue.put(event("error", {"error": {"code": "INTERNAL_ERROR", "message": "Internal error"}}))
        finally:
            # Cancelled while waiting on the queue, the generator sits at a yield: close it
            # now, so its upstream exchange ends now rather than when it is collected.
            await self._events.aclose()
        await queue.put(None)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def backend_items(fmt: str, pieces: AsyncIterable[bytes], provider: str) -> AsyncIterator[Any]:
    """The JSON values a streaming backend sends: ``sse`` (each event's ``data``, ``END`` for
    ``[DONE]``) or ``ndjson`` (each non-blank line). ``ProviderError`` for anything not JSON."""
    not_json = f"{provider} sent a stream chunk that is not JSON"
    if fmt == "ndjson":
        async for line in _lines(pieces, provider):
            if line.strip():
                yield parse_json(line, not_json)
        return
    data: list[str] = []
    async for line in _lines(pieces, provider):
        if line == "":  # a blank line dispatches the event
            if data:
                payload = "\n".join(data)
                data = []
                if payload.strip() == SSE_DONE:
                    yield END
                    return
                yield parse_json(payload, not_json)
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
        # comments (":"), "event:", "id:", "retry:" carry nothing the mapping reads


async def _lines(pieces: AsyncIterable[bytes], provider: str) -> AsyncIterator[str]:
    """Lines of UTF-8 text as they complete (``\\n`` or ``\\r\\n``); a last line without a
    newline is incomplete and dropped, as an SSE client would."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    buffer = ""
    try:
        async for piece in pieces:
            buffer += decoder.decode(piece)
            if "\n" not in buffer:
                continue
            *lines, buffer = buffer.split("\n")
            for line in lines:
                yield line[:-1] if line.endswith("\r") else line
    except UnicodeDecodeError:
        raise ProviderError(f"{provider} sent a stream that is not UTF-8") from None
