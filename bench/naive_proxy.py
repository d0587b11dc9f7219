"""The reference peer: what people write first. Starlette + one shared httpx.AsyncClient
with default settings, forwarding the chat body as is. Not the gateway; kept for comparison.

Run: NAIVE_UPSTREAM=http://127.0.0.1:9000/api/chat uvicorn bench.naive_proxy:app --port 8081
"""

import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

UPSTREAM = os.environ["NAIVE_UPSTREAM"]
client = httpx.AsyncClient(timeout=30)


async def chat(request: Request) -> JSONResponse:
    upstream = await client.post(UPSTREAM, content=await request.body(), headers={"content-type": "application/json"})
    return JSONResponse(upstream.json(), status_code=upstream.status_code)


app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])
