"""Hostile backends against a real gateway process (issue 11, items 1 and 4): compression
bombs cost bounded memory and never stall other chats; numbers Python cannot hold are a 502."""

from __future__ import annotations

import asyncio
import functools
import gzip
import statistics
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port, serve
from tests.services import gateway_process

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
# The bound this test holds the gateway to: a fresh worker peaks near 60 MiB; decoding is
# capped at client.max_response_bytes (4 MiB) per answer, so six bombs stay far below this.
PEAK_MEMORY_BOUND_MIB = 150

CONFIG = """
server: {{log_format: json, log_level: warning}}
storage: {{record_chat_turns: false}}
routes:
  - path: /api/chat
    handler: chat
    rate_limit: "off"
    upstream: {{url: "{url}", timeouts: {{connect: 1s, total: 10s}}}}
"""


def gzip_stream(megabytes_per_piece: int, pieces: int) -> list[bytes]:
    """Pieces of one gzip stream of zeros: each a few KB on the wire, ``megabytes_per_piece`` decoded."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    out = [b"".join(compressor.compress(block) for _ in range(megabytes_per_piece)) for _ in range(pieces)]
    out[-1] += compressor.flush()
    return out


@functools.cache
def slow_bomb() -> list[bytes]:
    return gzip_stream(1, 8)  # 8 MiB of zeros in pieces of about 1 KB, each 1 MiB decoded


@functools.cache
def nested_bomb() -> bytes:
    # gzip inside gzip (Content-Encoding: gzip, gzip): a few KB that inflate to 512 MiB.
    return gzip.compress(b"".join(gzip_stream(512, 1)), 9)


async def chat(request: Request) -> Response:
    message = (await request.json())["message"]
    if message == "slow bomb":

        async def pieces() -> AsyncIterator[bytes]:
            for piece in slow_bomb():
                yield piece
                await asyncio.sleep(0.1)

        return StreamingResponse(pieces(), headers={"content-encoding": "gzip", "content-type": "application/json"})
    if message == "nested bomb":
        return Response(nested_bomb(), headers={"content-encoding": "gzip, gzip", "content-type": "application/json"})
    if message == "huge number":
        return Response(b'{"response": "ok", "sources": [], "n": ' + b"7" * 5000 + b"}", media_type="application/json")
    return JSONResponse({"response": "fine", "sources": []})


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, int]]:
    backend = Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])
    with serve(backend) as backend_url:
        config = tmp_path / "gateway.yaml"
        config.write_text(CONFIG.format(url=f"{backend_url}/api/chat"))
        port = free_port()
        with gateway_process(config, port) as proc:
            yield f"http://127.0.0.1:{port}/api/chat", proc.pid


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_compression_bombs_cost_bounded_memory_and_never_stall_other_chats(gateway: tuple[str, int]) -> None:
    url, pid = gateway
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.post(url, json={"message": "warm up"})).status_code == 200
        bombs = [
            asyncio.create_task(client.post(url, json={"message": kind}))
            for kind in ("slow bomb", "slow bomb", "slow bomb", "nested bomb", "nested bomb", "nested bomb")
        ]
        await asyncio.sleep(0.05)  # the bombs are in flight
        latencies = []
        for _ in range(5):
            started = time.perf_counter()
            r = await client.post(url, json={"message": "what are your opening hours?"})
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 200 and r.json()["response"] == "fine"
            await asyncio.sleep(0.02)
        in_flight = sum(not b.done() for b in bombs)
        answers = await asyncio.gather(*bombs)
    assert statistics.median(latencies) < 0.1, latencies  # the bound; before the fix: seconds
    assert peak_memory_mib(pid) < PEAK_MEMORY_BOUND_MIB  # before the fix: over 1 GiB
    assert in_flight >= 3, "the slow bombs had finished before the normal chats were sent"
    assert [a.status_code for a in answers] == [502] * 6
    messages = [a.json()["error"]["message"] for a in answers]
    assert messages[:3] == ["Chat backend answer exceeds 4194304 bytes"] * 3
    assert messages[3:] == ["Chat backend answered with an unsupported Content-Encoding"] * 3


async def test_integer_beyond_pythons_limit_in_an_answer_is_a_provider_error(gateway: tuple[str, int]) -> None:
    url, _ = gateway
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(url, json={"message": "huge number"})
    assert r.status_code == 502
    assert r.json() == {"error": {"code": "PROVIDER_ERROR", "message": "Chat backend answered with a body that is not JSON"}}
