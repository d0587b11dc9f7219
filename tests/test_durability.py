"""Nothing acknowledged is lost: a gateway process acknowledges conversation logs from
concurrent clients, is killed with SIGKILL, and every acknowledged id is in the database."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from gateway.storage import open_store
from tests.conftest import free_port
from tests.pg_service import postgres, postgres_url  # noqa: F401  (fixtures)
from tests.services import gateway_process

pytestmark = pytest.mark.integration

CONFIG = """
server: {{log_format: json, log_level: warning}}
storage: {{url: "{url}", record_chat_turns: false}}
routes:
  - path: /api/conversations/log
    handler: conversations
    rate_limit: "off"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    return str(request.getfixturevalue("postgres_url"))


async def flood(url: str, clients: int, per_client: int, acknowledged: list[str]) -> None:
    async def client(n: int) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(per_client):
                body = {"sessionId": f"c{n}", "messages": [{"role": "user", "content": f"message {n}-{i}"}]}
                try:
                    r = await http.post(url, json=body)
                except httpx.TransportError:
                    return  # the process is gone
                if r.status_code == 200:
                    acknowledged.append(r.json()["conversationId"])

    await asyncio.gather(*(client(n) for n in range(clients)))


async def stored_ids(store_url: str) -> set[str]:
    store = open_store(store_url)
    await store.open()
    try:
        return {c["conversationId"] async for c in store.export("conversations", None, None)}
    finally:
        await store.close()


async def test_acknowledged_logs_survive_sigkill(store_url: str, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(url=store_url))
    port = free_port()
    acknowledged: list[str] = []
    with gateway_process(config, port) as proc:
        url = f"http://127.0.0.1:{port}/api/conversations/log"
        load = asyncio.create_task(flood(url, clients=32, per_client=1000, acknowledged=acknowledged))
        deadline = time.monotonic() + 60
        while len(acknowledged) < 300:  # kill it mid-stream, with writes in flight
            await asyncio.sleep(0.01)
            assert not load.done(), "the load finished before the kill"
            assert time.monotonic() < deadline, f"only {len(acknowledged)} logs acknowledged in 60 s"
        os.kill(proc.pid, signal.SIGKILL)
        await load
    assert len(acknowledged) >= 300
    missing = set(acknowledged) - await stored_ids(store_url)
    assert not missing, f"{len(missing)} acknowledged logs lost"
