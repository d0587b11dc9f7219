"""A naive peer with a better client: Starlette + one shared ``aiohttp.ClientSession``,
parsing the chat body and forwarding it. No rate limit, no logs, no recording, no
deadlines beyond aiohttp's. What a team that measured its client would write instead of
the gateway; the gateway's fast-backend target is to be at least as fast (bench/suite.py).

Run: NAIVE_UPSTREAM=http://127.0.0.1:9000/api/chat uvicorn bench.peers.naive_aiohttp:app --port 8082
"""

import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

UPSTREAM = os.environ["NAIVE_UPSTREAM"]
session: aiohttp.ClientSession | None = None


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global session
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
    yield
    await session.close()


async def chat(request: Request) -> JSONResponse:
    body = await request.json()
    assert session is not None
    async with session.post(UPSTREAM, json={"message": body["message"], "sessionId": body.get("sessionId")}) as r:
        return JSONResponse(await r.json(), status_code=r.status)


app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"])], lifespan=lifespan)
