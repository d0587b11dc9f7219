"""The deployment recipes in examples/deploy/ are known to work: the systemd unit passes
``systemd-analyze verify``, and the nginx site, run by real nginx with TLS in front of a real
two-worker gateway, passes requests, hands the gateway the real client IP, keeps /metrics
private, streams chat unbuffered, and carries a reload under load without failing a request."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import parse_settings
from tests.conftest import free_port, serve
from tests.services import NGINX_MAIN, binary, gateway_serve, nginx
from tests.test_lifecycle import backend, load, wait_for

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parent.parent / "examples" / "deploy"
UNIT = DEPLOY / "avatar-gateway.service"
SITE = DEPLOY / "nginx-site.conf"


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's installed command.
    installed = Path(binary("avatar-gateway", str(Path(os.sys.executable).parent / "avatar-gateway")))
    text = UNIT.read_text()
    assert "/opt/avatar-gateway/bin/avatar-gateway serve" in text
    unit = tmp_path / "avatar-gateway.service"
    unit.write_text(text.replace("/opt/avatar-gateway/bin/avatar-gateway", str(installed)))
    result = subprocess.run([binary("systemd-analyze", "/usr/bin/systemd-analyze"), "verify", str(unit)],
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")
    for promise in ("ExecReload=/bin/kill -HUP $MAINPID", "DynamicUser=yes", "ProtectSystem=strict",
                    "--workers 4", "KillMode=mixed"):
        assert promise in text


def site(tmp: Path, gateway_port: int, tls_port: int) -> str:
    """The recipe as shipped, with a throwaway certificate and free ports; each replaced line must exist."""
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    text = SITE.read_text()
    for old, new in {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{gateway_port};",
        "listen 80;": f"listen 127.0.0.1:{free_port()};",
        "listen 443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
        "/etc/ssl/certs/avatar.example.com.pem": str(cert),
        "/etc/ssl/private/avatar.example.com.key": str(key),
    }.items():
        assert old in text, f"the recipe no longer has {old!r}"
        text = text.replace(old, new)
    return NGINX_MAIN.format(dir=tmp, connections=512, site=text)


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path, Path]]:
    with serve(backend("A")) as a:
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump({
            "server": {"log_format": "json", "log_level": "info"},
            "storage": {"url": f"sqlite:///{tmp_path}/gateway.db"},
            "routes": [
                {"path": "/api/chat", "handler": "chat", "rate_limit": "100000/minute",
                 "upstream": {"url": f"{a}/api/chat"}},
                {"path": "/api/health", "handler": "health", "rate_limit": "off"},
            ],
        }))
        log, gport, tport = tmp_path / "gateway.log", free_port(), free_port()
        with gateway_serve(config, gport, log, workers=2) as proc, nginx(site(tmp_path, gport, tport), tmp_path, tport):
            wait_for(log, "gateway_started", 2)
            yield f"https://127.0.0.1:{tport}", proc, config, log


def test_requests_health_and_the_real_client_ip_through_nginx(deployed) -> None:  # type: ignore[no-untyped-def]
    url, _, _, log = deployed
    # The client speaks from 127.0.0.7 and forges a public address on the left.
    transport = httpx.HTTPTransport(local_address="127.0.0.7", verify=False)
    with httpx.Client(base_url=url, transport=transport) as client:
        r = client.post("/api/chat", json={"message": "hello"},
                        headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "deploy-1"})
        assert (r.status_code, r.json()["response"]) == (200, "A: hello")
        health = client.get("/api/health")
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        for private in ("/metrics", "/openapi.json"):
            hidden = client.get(private)
            assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "NOT_FOUND")
    (seen,) = [e for e in wait_for(log, "request", 1) if e.get("request_id") == "deploy-1"]
    assert seen["client"] == "127.0.0.7"


def test_a_reload_under_load_through_nginx_fails_no_request(deployed) -> None:  # type: ignore[no-untyped-def]
    url, proc, config, log = deployed
    results: list[tuple[int, str]] = []
    stop = threading.Event()
    loader = threading.Thread(target=lambda: asyncio.run(load(url, stop, results, verify=False)))
    loader.start()
    threading.Event().wait(1.0)
    config.write_text(config.read_text().replace("log_level: info", "log_level: warning"))
    os.kill(proc.pid, signal.SIGHUP)
    wait_for(log, "config_reloaded", 2)
    threading.Event().wait(0.8)
    stop.set()
    loader.join(30)
    assert [r for r in results if r[0] != 200] == [] and len(results) > 50


# -- streaming through the recipe and the gateway ------------------------------------------


def handshake_backend(acknowledged: asyncio.Event) -> Starlette:
    """OpenAI-compatible SSE that sends its first delta, then waits until the client says (directly,
    not through nginx and the gateway) that it has it: a buffering hop would hold that delta back
    and the client never could."""

    def chunk(text: str) -> bytes:
        return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"

    async def chat(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield chunk("first ")
            try:
                await asyncio.wait_for(acknowledged.wait(), 5)
                yield chunk("second")
            except TimeoutError:
                yield chunk("never-acknowledged")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def ack(request: Request) -> JSONResponse:
        acknowledged.set()
        return JSONResponse({})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/ack", ack, methods=["POST"])])


def test_a_streamed_answer_passes_the_recipe_and_the_gateway_unbuffered(tmp_path: Path) -> None:
    acknowledged = asyncio.Event()
    tport = free_port()
    settings = parse_settings(yaml.safe_dump({
        "server": {"log_format": "json"},
        "storage": {"record_chat_turns": False},
        "routes": [{
            "path": "/api/chat", "handler": "chat", "rate_limit": "off",
            "upstream": {"url": "http://127.0.0.1:9/v1/chat/completions"},
            "mapping": {
                "request": {"model": "m", "stream": "$stream", "messages": {"$conversation": {}}},
                "response": {"response": "choices[0].message.content", "sources": None},
                "stream": {"format": "sse", "delta": "choices[0].delta.content"},
            },
        }],
    }), env={"CHAT_API_URL": ""})
    with serve(handshake_backend(acknowledged)) as backend_url:
        route = settings.routes[0]
        upstream = dataclasses.replace(route.upstream, url=f"{backend_url}/v1/chat/completions")
        settings = dataclasses.replace(settings, routes=(dataclasses.replace(route, upstream=upstream),))
        with serve(create_app(settings)) as gateway:
            port = int(gateway.rsplit(":", 1)[1])
            with (
                nginx(site(tmp_path, port, tport), tmp_path, tport),
                httpx.Client(verify=False, timeout=3) as client,
                client.stream("POST", f"https://127.0.0.1:{tport}/api/chat", json={"message": "hi"},
                              headers={"Accept": "text/event-stream"}) as r,
            ):
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = r.iter_lines()
                assert next(lines) == "event: delta"
                data = next(lines)
                assert json.loads(data.removeprefix("data: ")) == {"text": "first "}  # while the backend waits
                httpx.post(f"{backend_url}/ack")
                rest = "\n".join(lines)
    assert "second" in rest and "event: done" in rest and "never-acknowledged" not in rest
