"""The config lifecycle on a real two-worker gateway (``avatar-gateway serve --workers 2``):
SIGHUP with requests in flight fails none and every worker takes the new config; an
invalid file keeps the old one and says where it is wrong; SIGTERM drains a request in
flight, answers health with ``draining`` meanwhile, flushes chat turns and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port, serve
from tests.services import gateway_serve

pytestmark = pytest.mark.integration


def backend(name: str) -> Starlette:
    """Answers ``<name>: <message>``; a message starting with 'slow' takes 0.6 s."""

    async def chat(request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse({})
        body = await request.json()
        if body["message"].startswith("slow"):
            await asyncio.sleep(0.6)
        return JSONResponse({"response": f"{name}: {body['message']}", "sources": []})

    return Starlette(routes=[Route("/api/chat", chat, methods=["POST", "GET"])])


def config(chat_url: str, tmp: Path, **server: Any) -> str:
    return yaml.safe_dump({
        "server": {"log_format": "json", "log_level": "info", **server},
        "storage": {"url": f"sqlite:///{tmp}/gateway.db", "record_chat_turns": True},
        "routes": [
            {"path": "/api/chat", "handler": "chat", "rate_limit": "off", "upstream": {"url": chat_url}},
            {"path": "/api/health", "handler": "health", "rate_limit": "off"},
        ],
    })


def events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


def wait_for(log: Path, name: str, count: int, seconds: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = events(log, name)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{count} x {name} not logged within {seconds}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def backends() -> Iterator[tuple[str, str]]:
    with serve(backend("A")) as a, serve(backend("B")) as b:
        yield f"{a}/api/chat", f"{b}/api/chat"


async def load(url: str, stop: threading.Event, results: list[tuple[int, str]], verify: bool = True) -> None:
    """Chats, fast and slow, 16 at a time over pooled connections, until ``stop``."""
    async with httpx.AsyncClient(base_url=url, timeout=20, verify=verify) as client:
        async def one(i: int) -> None:
            message = f"slow {i}" if i % 4 == 0 else f"fast {i}"
            try:
                r = await client.post("/api/chat", json={"message": message})
                results.append((r.status_code, r.json().get("response", r.text)))
            except httpx.HTTPError as exc:
                results.append((0, repr(exc)))

        i = 0
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set() and i < 2000:
            pending.add(asyncio.create_task(one(i)))
            i += 1
            if len(pending) >= 16:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)


def test_reload_with_requests_in_flight_fails_none_and_every_worker_switches(
    tmp_path: Path, backends: tuple[str, str]
) -> None:
    a, b = backends
    path, log, port = tmp_path / "gateway.yaml", tmp_path / "gateway.log", free_port()
    path.write_text(config(a, tmp_path))
    with gateway_serve(path, port, log, workers=2) as proc:
        wait_for(log, "gateway_started", 2)  # both workers have read the file
        url = f"http://127.0.0.1:{port}"
        results: list[tuple[int, str]] = []
        stop = threading.Event()
        loader = threading.Thread(target=lambda: asyncio.run(load(url, stop, results)))
        loader.start()
        time.sleep(1.0)
        path.write_text(config(b, tmp_path))
        os.kill(proc.pid, signal.SIGHUP)
        reloaded = wait_for(log, "config_reloaded", 2)
        time.sleep(0.8)  # requests that began on the old generation finish on it
        stop.set()
        loader.join(30)

        assert len({r["pid"] for r in reloaded}) == 2  # each worker reloaded itself
        failed = [r for r in results if r[0] != 200]
        assert failed == [] and len(results) > 50
        answered = {text.split(":")[0] for _, text in results}
        assert answered == {"A", "B"}  # the load spanned the swap
        after = [httpx.post(f"{url}/api/chat", json={"message": f"after {i}"}) for i in range(20)]
        assert {r.json()["response"].split(":")[0] for r in after} == {"B"}


def test_an_invalid_reload_keeps_the_running_config_and_names_the_key(
    tmp_path: Path, backends: tuple[str, str]
) -> None:
    a, _ = backends
    path, log, port = tmp_path / "gateway.yaml", tmp_path / "gateway.log", free_port()
    path.write_text(config(a, tmp_path))
    with gateway_serve(path, port, log, workers=2) as proc:
        wait_for(log, "gateway_started", 2)  # both workers have read the file
        url = f"http://127.0.0.1:{port}"
        path.write_text(config(a, tmp_path).replace("rate_limit: 'off'", "rate_limit: sometimes", 1))
        os.kill(proc.pid, signal.SIGHUP)
        failures = wait_for(log, "config_reload_failed", 2)
        assert {f["error"] for f in failures} == {
            "routes[0].rate_limit: 'sometimes' is not a rate limit like '60/minute' or '10/second;60/minute'"
        }
        assert events(log, "config_reloaded") == []
        for i in range(10):
            r = httpx.post(f"{url}/api/chat", json={"message": f"still {i}"})
            assert (r.status_code, r.json()["response"]) == (200, f"A: still {i}")


def test_sigterm_drains_a_request_in_flight_reports_draining_and_flushes_turns(
    tmp_path: Path, backends: tuple[str, str]
) -> None:
    a, _ = backends
    path, log, port = tmp_path / "gateway.yaml", tmp_path / "gateway.log", free_port()
    path.write_text(config(a, tmp_path, drain_delay="1s", drain_timeout="10s"))
    with gateway_serve(path, port, log, workers=2) as proc:
        wait_for(log, "gateway_started", 2)  # both workers have read the file
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/api/health").json()["status"] == "ok"
        answers: list[httpx.Response] = []
        in_flight = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{url}/api/chat", json={"message": "slow goodbye"}, timeout=20))
        )
        in_flight.start()
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)
        wait_for(log, "draining", 2)
        health = httpx.get(f"{url}/api/health")
        assert health.status_code == 503 and health.json()["status"] == "draining"
        in_flight.join(20)
        assert proc.wait(20) == 0
    assert [(r.status_code, r.json()["response"]) for r in answers] == [(200, "A: slow goodbye")]
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        assert db.execute("SELECT message FROM chat_turns").fetchall() == [("slow goodbye",)]


def streaming_backend() -> Starlette:
    """OpenAI-compatible SSE: six words, 0.25 s apart, then [DONE]."""

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        assert body["stream"] is True

        async def chunks() -> AsyncIterator[bytes]:
            for word in ("We ", "ship ", "to ", "Canada ", "within ", "a week."):
                yield b"data: " + json.dumps({"choices": [{"delta": {"content": word}}]}).encode() + b"\n\n"
                await asyncio.sleep(0.25)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def test_sigterm_lets_a_stream_in_flight_finish(tmp_path: Path) -> None:
    path, log, port = tmp_path / "gateway.yaml", tmp_path / "gateway.log", free_port()
    with serve(streaming_backend()) as backend:
        path.write_text(yaml.safe_dump({
            "server": {"log_format": "json", "log_level": "info", "drain_timeout": "10s"},
            "storage": {"url": f"sqlite:///{tmp_path}/gateway.db", "record_chat_turns": True},
            "routes": [{
                "path": "/api/chat", "handler": "chat", "rate_limit": "off",
                "upstream": {"url": f"{backend}/v1/chat/completions"},
                "mapping": {
                    "request": {"model": "m", "stream": "$stream", "messages": {"$conversation": {}}},
                    "response": {"response": "choices[0].message.content", "sources": None},
                    "stream": {"format": "sse", "delta": "choices[0].delta.content"},
                },
            }],
        }))
        with gateway_serve(path, port, log, workers=1) as proc:
            wait_for(log, "gateway_started", 1)
            events_seen: list[str] = []
            with httpx.stream("POST", f"http://127.0.0.1:{port}/api/chat", json={"message": "Canada?"},
                              headers={"Accept": "text/event-stream"}, timeout=20) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        events_seen.append(line.removeprefix("event: "))
                        if events_seen == ["delta"]:  # the stream has begun: now the shutdown
                            os.kill(proc.pid, signal.SIGTERM)
                    elif line.startswith("data: ") and events_seen[-1] == "done":
                        done = json.loads(line.removeprefix("data: "))
            # One worker: uvicorn re-raises the SIGTERM after its graceful shutdown (systemd: clean).
            assert proc.wait(20) in (0, -signal.SIGTERM)
    assert events_seen == ["delta"] * 6 + ["done"]
    assert done["response"] == "We ship to Canada within a week."
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        assert db.execute("SELECT answer FROM chat_turns").fetchall() == [("We ship to Canada within a week.",)]
