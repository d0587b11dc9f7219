"""Two real gateway processes sharing a real Redis, a real backend on loopback:
the concurrent-session cap holds across replicas, chatTokens minted by one
replica work on the other (shared signing secret), ending frees the slot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import free_port, serve
from tests.services import gateway_process, redis_server
from tests.tokens_support import BODY, KEY_A, KEY_B, SIGNING_SECRET

pytestmark = pytest.mark.integration


def backend_app() -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"response": f"echo {body['sessionId']}", "sources": []})

    return Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])


async def test_replicas_share_the_cap_and_accept_each_others_chat_tokens(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, serve(backend_app()) as backend:
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump({
            "server": {"log_format": "json"},
            "storage": {"record_chat_turns": False},
            "rate_limit": {"storage": redis.url},
            "auth": {"api_keys": "${GATEWAY_API_KEYS}"},
            "avatar": {"provider": "local", "signing_secret": "${GATEWAY_SIGNING_SECRET}", "production": True,
                       "max_concurrent_sessions": 3, "require_session_token": True},
            "routes": [
                {"path": "/api/chat", "handler": "chat", "upstream": {"url": f"{backend}/api/chat"}},
                {"path": "/api/get-access-token", "handler": "token", "rate_limit": "100/minute"},
                {"path": "/api/sessions/end", "handler": "session_end"},
            ],
        }))
        env = {"GATEWAY_API_KEYS": f"{KEY_A},{KEY_B}", "GATEWAY_SIGNING_SECRET": SIGNING_SECRET}
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        with gateway_process(config, ports[0], env), gateway_process(config, ports[1], env):
            async with httpx.AsyncClient(timeout=30) as client:
                minted = await asyncio.gather(*(
                    client.post(f"{urls[i % 2]}/api/get-access-token", json=BODY,
                                headers={"Authorization": f"Bearer {(KEY_A, KEY_B)[i % 2]}"})
                    for i in range(10)
                ))
                statuses = [r.status_code for r in minted]
                assert statuses.count(200) == 3 and statuses.count(429) == 7
                session = next(r.json() for r in minted if r.status_code == 200)
                bearer = {"Authorization": f"Bearer {session['chatToken']}"}
                for url in urls:  # either replica accepts the chatToken
                    r = await client.post(f"{url}/api/chat", json={"message": "hi"}, headers=bearer)
                    assert r.json() == {"response": f"echo {session['sessionId']}", "sources": [],
                                        "sessionId": session["sessionId"]}
                r = await client.post(f"{urls[1]}/api/sessions/end", headers=bearer)
                assert r.json()["ended"] is True
                r = await client.post(f"{urls[0]}/api/get-access-token", json=BODY,
                                      headers={"Authorization": f"Bearer {KEY_A}"})
                assert r.status_code == 200
