"""A customer backend that takes 0.5 s per answer (raw ASGI under uvicorn; thousands of
concurrent sleeps are cheap). Run: uvicorn bench.slow_backend:app --port 9001"""

import asyncio
import os

DELAY = float(os.environ.get("SLOW_BACKEND_DELAY", "0.5"))
BODY = b'{"response": "Thanks for waiting.", "sources": [{"title": "FAQ", "url": "https://example.com/faq"}]}'


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await asyncio.sleep(DELAY)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})
