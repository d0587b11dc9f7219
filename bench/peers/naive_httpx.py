"""A naive peer: what people write first. Starlette + one shared ``httpx.AsyncClient``
with default settings, parsing the chat body and forwarding it. No rate limit, no logs,
no recording. Not the gateway; kept for comparison (bench/suite.py).

Run: NAIVE_UPSTREAM=http://127.0.0.1:9000/api/chat uvicorn bench.peers.naive_httpx:app --port 8081
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
    body = await request.json()
    upstream = await client.post(UPSTREAM, json={"message": body["message"], "sessionId": body.get("sessionId")})
    return JSONResponse(upstream.json(), status_code=upstream.status_code)


app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])
