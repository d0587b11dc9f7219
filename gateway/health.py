"""GET /api/health: the gateway's status and one status per provider kind.

Provider values:
  connected       the provider answered its probe
  disconnected    the probe failed (refused, timed out, HTTP 5xx)
  not_configured  the deployment does not use this provider

``storage`` (an additive field): the conversation store, ``connected``,
``disconnected`` or ``not_configured``. It never affects chat answers.

``breakers`` (an additive field): each chat route's circuit breaker (gateway/breaker.py),
``closed``, ``open`` or ``half_open``, by route path; routes with ``breaker: off`` are absent.

``status`` and the HTTP status that goes with it:
  ok        (200) every configured provider is connected
  degraded  (200) the chat backend is connected, another configured provider or the storage is not
  down      (503) the chat backend (``llm``) is disconnected: chat cannot work
  draining  (503) the gateway received SIGTERM and is finishing what it has (gateway/lifecycle.py)

Probes use a short timeout and their results are cached for a few seconds,
with one probe in flight per provider however many health checks arrive, so
a monitoring system polling us never hammers the backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.fields import iso
from gateway.settings import Route

CONNECTED, DISCONNECTED, NOT_CONFIGURED = "connected", "disconnected", "not_configured"
PROVIDER_KINDS = ("llm", "stt", "avatar")

Probe = Callable[[], Awaitable[bool]]


class CachedProbe:
    """Runs ``probe`` at most once per ``ttl`` seconds; concurrent callers share one run."""

    def __init__(self, probe: Probe, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self._ttl = ttl
        self._clock = clock
        self._value: str | None = None
        self._expires = 0.0
        self._inflight: asyncio.Task[str] | None = None

    async def status(self) -> str:
        if self._value is not None and self._clock() < self._expires:
            return self._value
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._run())
        try:
            return await asyncio.shield(self._inflight)
        finally:
            if self._inflight is not None and self._inflight.done():
                self._inflight = None

    async def _run(self) -> str:
        try:
            ok = await self._probe()
        except Exception:
            ok = False
        self._value = CONNECTED if ok else DISCONNECTED
        self._expires = self._clock() + self._ttl
        return self._value


def _breakers(request: Request) -> dict[str, str]:
    states = {}
    for chat_route in request.state.settings.routes:
        if chat_route.upstream is not None:
            breaker = request.state.upstream.breaker(chat_route.path, chat_route.upstream.breaker, "Chat backend")
            if breaker is not None:
                states[chat_route.path] = breaker.state
    return states


def overall_status(providers: dict[str, str]) -> tuple[str, int]:
    if providers.get("llm") == DISCONNECTED:
        return "down", 503
    if DISCONNECTED in providers.values():
        return "degraded", 200
    return "ok", 200


async def health(request: Request, route: Route) -> JSONResponse:
    probes: dict[str, CachedProbe] = request.state.probes
    names = list(dict.fromkeys([*PROVIDER_KINDS, *probes]))
    results = await asyncio.gather(*(probes[name].status() for name in names if name in probes))
    found = dict(zip([name for name in names if name in probes], results, strict=True))
    providers = {name: found.get(name, NOT_CONFIGURED) for name in names}
    storage_probe: CachedProbe | None = request.state.storage_probe
    storage = NOT_CONFIGURED if storage_probe is None else await storage_probe.status()
    status, code = overall_status(providers)
    if status == "ok" and storage == DISCONNECTED:
        status = "degraded"
    if request.scope["state"].get("draining"):  # shutting down (gateway/lifecycle.py): send no more
        status, code = "draining", 503
    body = {"status": status, "timestamp": iso(time.time()), "providers": providers, "storage": storage,
            "breakers": _breakers(request)}
    return JSONResponse(
        body,
        status_code=code,
        headers={"Cache-Control": "no-store"},
    )
