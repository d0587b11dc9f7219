"""Shared fixtures: settings from YAML text, the app under TestClient, loopback servers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import parse_settings
from gateway.settings import Settings

BACKEND_URL = "http://backend.test/api/chat"

BASE_YAML = """
server: {{log_format: json}}
storage: {{record_chat_turns: false}}
routes:
  - path: /api/chat
    handler: chat
    upstream:
      url: {url}
      timeouts: {{connect: 1s, total: 2s}}
{chat_extra}
  - path: /api/health
    handler: health
"""


def make_settings(chat_extra: str = "", url: str = BACKEND_URL, env: dict[str, str] | None = None, yaml_text: str | None = None) -> Settings:
    text = yaml_text if yaml_text is not None else BASE_YAML.format(url=url, chat_extra=chat_extra)
    return parse_settings(text, env=env or {})


@pytest.fixture
def client_for() -> Iterator[Callable[..., TestClient]]:
    """Build a TestClient (lifespan running) whose upstream calls go through
    httpx's own transport, which pytest-httpx fakes."""
    stack: list[TestClient] = []

    def build(settings: Settings | None = None, **kwargs: Any) -> TestClient:
        settings = settings or make_settings(**kwargs)
        client = TestClient(create_app(settings, transport=httpx.AsyncHTTPTransport()), raise_server_exceptions=False)
        client.__enter__()
        stack.append(client)
        return client

    yield build
    for client in reversed(stack):
        client.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app under a real uvicorn server on loopback, in a thread."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("loopback server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
