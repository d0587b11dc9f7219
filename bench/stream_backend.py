"""A streaming chat backend in the OpenAI-compatible SSE format: headers at once, the first
token after STREAM_FIRST_TOKEN seconds (a model thinking), then STREAM_TOKENS more every
STREAM_GAP seconds, then ``data: [DONE]``. Raw ASGI under uvicorn, so it costs next to nothing.
Run: uvicorn bench.stream_backend:app --port 9002"""

import asyncio
import os

FIRST_TOKEN = float(os.environ.get("STREAM_FIRST_TOKEN", "0.1"))
GAP = float(os.environ.get("STREAM_GAP", "0.02"))
TOKENS = int(os.environ.get("STREAM_TOKENS", "10"))
HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def chunk(text: str) -> bytes:
    return b'data: {"choices": [{"index": 0, "delta": {"content": "' + text.encode() + b'"}}]}\n\n'


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await asyncio.sleep(FIRST_TOKEN)
    for i in range(TOKENS):
        await send({"type": "http.response.body", "body": chunk(f"token{i} "), "more_body": True})
        await asyncio.sleep(GAP)
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
