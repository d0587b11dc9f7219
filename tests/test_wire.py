"""Requests the HTTP server refuses before the application runs (issue 11, item 6): malformed
HTTP and oversized heads are answered in the envelope by ``avatar-gateway serve`` itself, and by
the example nginx in front, which keeps them from reaching the gateway at all."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import free_port, serve
from tests.serve_support import serve_process
from tests.services import NGINX_MAIN, ROOT, nginx, stop, wait_for_port

CONFIG = """
server: {log_format: json}
storage: {record_chat_turns: false}
routes:
  - path: /api/chat
    handler: chat
    upstream: {url: "http://127.0.0.1:9/api/chat"}
  - path: /api/health
    handler: health
"""

CHAT = b"POST /api/chat HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"


def exchange(port: int, *parts: bytes, pause: float = 0.0, seconds: float = 5) -> bytes:
    """Send ``parts`` (pausing between them) on one connection; return all the server sent
    until it closed the connection, or was silent for a moment after a complete response
    (nginx keeps reading for a while after refusing a request: its lingering close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        for index, part in enumerate(parts):
            if index and pause:
                time.sleep(pause)
            sock.sendall(part)
        answer = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            answer += chunk
            if complete(answer):
                sock.settimeout(0.3)
        return answer


def complete(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if found and name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    """One HTTP/1.1 response with a Content-Length body; fails on anything else (a second response too)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert len(body) == int(headers["content-length"]), answer  # exactly one response, nothing after it
    return int(status_line.split(" ")[1]), headers, json.loads(body)


MALFORMED = [
    pytest.param(
        (CHAT + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",), 400, "INVALID_REQUEST",
        "Malformed HTTP request: Transfer-Encoding can't be present with Content-Length", id="content-length-and-chunked",
    ),
    pytest.param(
        (CHAT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",), 400, "INVALID_REQUEST",
        "Malformed HTTP request: Invalid character in chunk size", id="bad-chunk-size",
    ),
    pytest.param(  # the application is already waiting for the body when the bad chunk arrives
        (CHAT + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", b"-5\r\n"), 400, "INVALID_REQUEST",
        "Malformed HTTP request: Invalid character in chunk size", id="bad-chunk-size-later",
    ),
    pytest.param(
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",), 400, "INVALID_REQUEST",
        "Malformed HTTP request: Invalid method encountered", id="tls-on-plain-port",
    ),
    pytest.param(
        (b"GET /api/health HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",), 431,
        "HEADERS_TOO_LARGE", "Request header fields are larger than 32768 bytes", id="200-KB-header",
    ),
    pytest.param(
        (b"GET /api/health HTTP/1.1\r\nHost: gateway\r\n" + b"X-Many: aaaaaaaaaaaaaaaa\r\n" * 2000 + b"\r\n",), 431,
        "HEADERS_TOO_LARGE", "Request header fields are larger than 32768 bytes", id="many-headers",
    ),
    pytest.param(
        (b"GET /api/health?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: gateway\r\n\r\n",), 414,
        "URI_TOO_LONG", "Request target is longer than 8192 bytes", id="20-KB-url",
    ),
]


@pytest.fixture(scope="module", params=["avatar-gateway-serve", "uvicorn-factory-http"])
def gateway_serve(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``avatar-gateway serve``, and bare uvicorn told to use the same protocol."""
    config = tmp_path_factory.mktemp("wire") / "gateway.yaml"
    config.write_text(CONFIG)
    port = free_port()
    if request.param == "avatar-gateway-serve":
        with serve_process(config, port):
            yield port
        return
    args = [sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--http", "gateway.wire:GatewayProtocol",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_CONFIG": str(config), "LOG_FORMAT": "json"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        stop(proc)


@pytest.mark.integration
@pytest.mark.parametrize(("parts", "status", "code", "message"), MALFORMED)
def test_avatar_gateway_serve_answers_malformed_http_in_the_envelope(
    gateway_serve: int, parts: tuple[bytes, ...], status: int, code: str, message: str
) -> None:
    answer = exchange(gateway_serve, *parts, pause=0.3)
    got_status, headers, body = parse(answer)
    assert (got_status, body) == (status, {"error": {"code": code, "message": message}}), answer[:300]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    # The server is unharmed and the next connection is served as usual.
    assert httpx.get(f"http://127.0.0.1:{gateway_serve}/api/health", timeout=10).status_code in (200, 503)


@pytest.mark.integration
def test_heads_within_the_limits_are_served(gateway_serve: int) -> None:
    headers = {f"X-H{i}": "v" * 100 for i in range(200)}  # about 21 KB of headers
    r = httpx.get(f"http://127.0.0.1:{gateway_serve}/api/health?" + "q" * 8000, headers=headers, timeout=10)
    assert r.status_code in (200, 503) and "providers" in r.json()


# -- the example nginx in front ----------------------------------------------------------------

def counting_app(seen: list[str]) -> Starlette:
    async def anything(request: Request) -> JSONResponse:
        seen.append(f"{request.method} {request.url.path}")
        await request.body()
        return JSONResponse({"response": "ok", "sources": []})

    return Starlette(routes=[Route("/api/{rest:path}", anything, methods=["GET", "POST"])])


def nginx_site(gateway_address: str, port: int) -> str:
    site = (ROOT / "examples" / "nginx" / "gateway.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    return site.replace("server 127.0.0.1:8080;", f"server {gateway_address};")


NGINX_REFUSES = [
    *MALFORMED[:2],
    MALFORMED[3],
    pytest.param(
        (CHAT + b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b" " * 0x400 + b"\r\nzz\r\n",), 400,
        "INVALID_REQUEST", None, id="bad-chunk-after-1-KB",
    ),
    pytest.param((b"GET /api/health HTTP/1.1\r\n\r\n",), 400, "INVALID_REQUEST", None, id="no-host"),
    pytest.param((b"GET /api/health HTTP/9.9\r\nHost: gateway\r\n\r\n",), 400, "INVALID_REQUEST", None,
                 id="unknown-version"),
    MALFORMED[4],
    MALFORMED[6],
    pytest.param((CHAT + b"Content-Length: 2000000\r\n\r\n",), 413, "PAYLOAD_TOO_LARGE", None, id="2-MB-body"),
]


@pytest.mark.integration
def test_the_example_nginx_answers_malformed_http_itself_in_the_envelope(tmp_path: Path) -> None:
    seen: list[str] = []
    with serve(counting_app(seen)) as app:
        port = free_port()
        conf = NGINX_MAIN.format(dir=tmp_path, connections=64, site=nginx_site(app.removeprefix("http://"), port))
        with nginx(conf, tmp_path, port):
            for case in NGINX_REFUSES:
                parts, status, code, _ = case.values
                got_status, headers, body = parse(exchange(port, *parts))
                assert (got_status, body["error"]["code"]) == (status, code), case.id
                assert headers["content-type"] == "application/json" and set(body["error"]) == {"code", "message"}
            assert seen == []  # none of them reached the gateway
            ok = httpx.post(f"http://127.0.0.1:{port}/api/chat", json={"message": "hi"}, timeout=10)
            assert ok.status_code == 200 and seen == ["POST /api/chat"]


@pytest.mark.integration
def test_the_example_nginx_answers_in_the_envelope_when_the_gateway_is_down(tmp_path: Path) -> None:
    port = free_port()
    conf = NGINX_MAIN.format(dir=tmp_path, connections=64, site=nginx_site(f"127.0.0.1:{free_port()}", port))
    with nginx(conf, tmp_path, port):
        r = httpx.post(f"http://127.0.0.1:{port}/api/chat", json={"message": "hi"}, timeout=10)
    assert r.status_code == 503 and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"code": "SERVICE_UNAVAILABLE", "message": "The gateway is not reachable; try again shortly"}}
