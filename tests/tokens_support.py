"""Helpers for the avatar token tests: settings, an injectable clock, an app client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import parse_settings
from gateway.settings import Settings
from tests.conftest import BACKEND_URL

# Long random-looking values, each unique, so a leak is found by plain substring search.
KEY_A = "gk_live_3f9a1c7e5b2d4068a1c3e5f7091b2d4f"
KEY_B = "gk_live_9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
VENDOR_KEY = "la_key_7d1e0c8b3a9f4e2d6c5b8a7f0e1d2c3b"
SIGNING_SECRET = "sig_5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f_9e8d"
ENV = {"GATEWAY_API_KEYS": f"{KEY_A}, {KEY_B}", "LIVEAVATAR_API_KEY": VENDOR_KEY,
       "GATEWAY_SIGNING_SECRET": SIGNING_SECRET}
LIVEAVATAR = "https://api.liveavatar.com"
HEYGEN = "https://api.heygen.com"
START = float(int(time.time()))


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def token_settings(avatar: dict[str, Any] | None = None, *, auth: dict[str, Any] | None = None,
                   top: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                   token_route: dict[str, Any] | None = None) -> Settings:
    avatar_section = {"provider": "local", "signing_secret": "${GATEWAY_SIGNING_SECRET}", **(avatar or {})}
    doc = {
        "server": {"log_format": "json"},
        "storage": {"record_chat_turns": False},  # chat turns are not this module's subject
        "auth": auth if auth is not None else {"api_keys": "${GATEWAY_API_KEYS}"},
        "avatar": avatar_section,
        "routes": [
            {"path": "/api/chat", "handler": "chat",
             "upstream": {"url": BACKEND_URL, "timeouts": {"connect": "1s", "total": "2s"}}},
            {"path": "/api/get-access-token", "handler": "token", **(token_route or {})},
            {"path": "/api/sessions/end", "handler": "session_end"},
            {"path": "/api/health", "handler": "health"},
        ],
        **(top or {}),
    }
    return parse_settings(yaml.safe_dump(doc), env={**ENV, **(env or {})})


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


BODY = {"avatarId": "Pedro_Blue_Shirt_public", "voiceId": "voice-1"}


# Registered under their names with ``name=``, so test modules import the
# functions (``clock_fixture``) without shadowing them by the parameter names.
@pytest.fixture(name="clock")
def clock_fixture() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="token_client")
def token_client_fixture(clock: FakeClock) -> Iterator[Callable[..., TestClient]]:
    """A TestClient (lifespan running) on the injected clock; vendor calls go
    through httpx's own transport, which pytest-httpx fakes."""
    stack: list[TestClient] = []

    def build(settings: Settings | None = None, **kwargs: Any) -> TestClient:
        app = create_app(settings or token_settings(**kwargs), transport=httpx.AsyncHTTPTransport(), clock=clock)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        stack.append(client)
        return client

    yield build
    for client in reversed(stack):
        client.__exit__(None, None, None)
