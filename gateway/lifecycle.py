"""The config lifecycle of a served gateway: reload on SIGHUP, drain on SIGTERM.

``avatar-gateway serve`` runs ``create_served_app``: the app of ``create_app``
wrapped in ``ServedApp``, which owns the lifespan and hands each request to the
current *generation* (an app built from one ``Settings``, with its own open
clients).

**SIGHUP: reload in place.** The file is read and validated first
(``load_settings``); an invalid file is logged with its key path
(``config_reload_failed``) and the running generation stays. A valid one is
built and started (its lifespan opens its clients) *before* it is swapped in
with one assignment, so a request is handed either the old generation or the
new one, never a half-built one. Requests in flight finish on the old
generation, which is shut down (its chat turns flushed) once they are done, or
after ``server.drain_timeout``.

Why in place rather than uvicorn's rolling restart of workers (its own SIGHUP
handling): restarting a worker closes its idle keep-alive connections, and a
client (nginx's upstream keepalive, an HTTP pool) that sends on one just as it
closes sees a reset, and nginx does not retry a POST; a swap inside the process
closes no connection. It also means every new request uses the new config as
soon as its worker has reloaded, instead of old and new workers serving side by
side for as long as the roll takes. With several workers, the supervisor
(``_Supervisor``) forwards SIGHUP to every worker and each reloads itself. What
does not carry over: ``memory://`` rate-limit counters and avatar sessions
start afresh in the new generation (Redis-backed ones are shared and kept).

**SIGTERM: drain.** ``/api/health`` answers 503 ``draining`` at once, so a load
balancer stops sending; the worker keeps serving for ``server.drain_delay``
(time for the balancer to notice; 0 by default, right for nginx on the same
host), then hands the signal to uvicorn, which stops accepting, waits for the
requests in flight (streams included) up to ``server.drain_timeout``
(uvicorn's ``timeout_graceful_shutdown``), and runs the lifespan shutdown, which
flushes queued chat-turn records. uvicorn then re-raises SIGTERM, the exit
status systemd counts as clean; with several workers the supervisor exits 0.
A second SIGTERM skips the delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from gateway import metrics
from gateway.app import create_app
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from gateway.settings import Settings

log = structlog.get_logger("gateway.lifecycle")

APP = "gateway.lifecycle:create_served_app"


class _Generation:
    """One app built from one Settings, its lifespan driven by hand."""

    def __init__(self, settings: Settings, app: ASGIApp) -> None:
        self.settings = settings
        self.app = app
        self.state: dict[str, Any] = {}
        self.inflight = 0
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))  # type: ignore[arg-type]
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        if message["type"] != "lifespan.startup.complete":
            with contextlib.suppress(Exception):
                await self._task
            raise RuntimeError(message.get("message") or "startup failed")

    async def stop(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()
        with contextlib.suppress(Exception):
            await self._task


class ServedApp:
    def __init__(self, settings: Settings, build: Callable[[Settings], ASGIApp] = create_app,
                 load: Callable[[str], Settings] = load_settings) -> None:
        self._settings = settings
        self._build = build
        self._load = load
        self.current: _Generation | None = None
        self.draining = False
        self._lock: asyncio.Lock | None = None
        self._retiring: set[asyncio.Task[Any]] = set()
        self._uvicorn_exit: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        generation = self.current
        assert generation is not None  # uvicorn sends no request before startup completes
        generation.inflight += 1
        scope["state"] = {**generation.state, "draining": self.draining}
        try:
            await generation.app(scope, receive, send)
        finally:
            generation.inflight -= 1

    # -- lifespan -------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            self.current = await self._start(self._settings)
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        self._lock = asyncio.Lock()
        self._install_signal_handlers()
        tune_gc()
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the loop is going away
        for task in list(self._retiring):
            await task
        if self.current is not None:
            await self.current.stop()
        metrics.process_exited()
        await send({"type": "lifespan.shutdown.complete"})

    async def _start(self, settings: Settings) -> _Generation:
        generation = _Generation(settings, self._build(settings))
        await generation.start()
        return generation

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only (an app served from a test thread)
        loop = asyncio.get_running_loop()
        self._uvicorn_exit = signal.getsignal(signal.SIGTERM)  # uvicorn's handle_exit while it serves
        signal.signal(signal.SIGHUP, lambda sig, frame: loop.call_soon_threadsafe(self._reload_soon))
        signal.signal(signal.SIGTERM, lambda sig, frame: loop.call_soon_threadsafe(self.begin_drain, sig, frame))

    # -- SIGHUP ---------------------------------------------------------------------

    def _reload_soon(self) -> None:
        task = asyncio.create_task(self.reload())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def reload(self) -> bool:
        """Validate and swap in the config file again; False (old config kept) if it is invalid."""
        assert self._lock is not None and self.current is not None
        async with self._lock:
            old = self.current
            try:
                settings = self._load(old.settings.source)
                new = await self._start(settings)
            except ConfigError as exc:
                return self._reload_failed(str(exc))
            except Exception as exc:  # the new generation could not start (a port, a database...)
                return self._reload_failed(f"the new config did not start: {type(exc).__name__}: {exc}")
            self.current = new  # one assignment: every request sees old or new, never a mix
        metrics.CONFIG_RELOADS.labels("success").inc()
        log.warning("config_reloaded", config=settings.source, pid=os.getpid())
        task = asyncio.create_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return True

    def _reload_failed(self, error: str) -> bool:
        metrics.CONFIG_RELOADS.labels("failure").inc()
        log.error("config_reload_failed", error=error, pid=os.getpid(), action="kept the running config")
        return False

    async def _retire(self, old: _Generation) -> None:
        deadline = time.monotonic() + old.settings.server.drain_timeout
        while old.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await old.stop()

    # -- SIGTERM --------------------------------------------------------------------

    def begin_drain(self, sig: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        if self.draining:  # a second SIGTERM: no more waiting
            self._hand_to_uvicorn(sig, frame)
            return
        self.draining = True
        metrics.DRAINING.set(1)
        delay = self.current.settings.server.drain_delay if self.current else 0.0
        log.warning("draining", pid=os.getpid(), delay_seconds=delay)
        task = asyncio.create_task(self._drain(sig, frame, delay))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain(self, sig: int, frame: FrameType | None, delay: float) -> None:
        await asyncio.sleep(delay)
        self._hand_to_uvicorn(sig, frame)

    def _hand_to_uvicorn(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's own handler: stop accepting, wait for requests in flight, lifespan shutdown.
        if callable(self._uvicorn_exit):
            self._uvicorn_exit(sig, frame)


# Allocations (net) between young collections, young collections per middle one, middle per full.
GC_THRESHOLDS = (50_000, 50, 20)


def tune_gc() -> None:
    """Collect cycles far less often than CPython's defaults (700, 10, 10), and never scan
    what startup built (modules, settings, compiled mappings: ``gc.freeze``).

    Why: a request to a slow backend lives for its whole wait, long enough to survive
    the young collections that the default threshold runs every 700 allocations; its
    objects are promoted and die old, so full collections follow, each scanning every
    live object of every request in flight. At 1,000 concurrent chats against a 0.5 s
    backend, a third of the worker's CPU went to the collector (measured with
    ``gc.callbacks``; bench/README.md, issue 17). Nearly everything the gateway
    allocates is freed by reference counting; the collector is only for cycles."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_served_app() -> ServedApp:
    """The factory ``avatar-gateway serve`` runs: ``uvicorn gateway.lifecycle:create_served_app --factory``."""
    return ServedApp(load_settings())


def serve(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run uvicorn (with its worker supervisor when ``workers`` > 1) on the served app."""
    configure_logging(settings.server)  # the supervisor's own lines (reload requested) in the same format
    config = uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # The gateway resolves client IPs itself (trusted proxies, right to left).
        proxy_headers=False,
        # uvicorn's httptools protocol, answering malformed HTTP and oversized heads in the envelope.
        http="gateway.wire:GatewayProtocol",
        server_header=False,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(settings.server.drain_timeout) or 1,
    )
    if workers > 1:
        _Supervisor(config, sockets=[config.bind_socket()]).run()
        return 0
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else STARTUP_FAILURE


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, except that SIGHUP is forwarded to every worker (each reloads in
    place) instead of restarting them (see the module docstring for why)."""

    def handle_hup(self) -> None:
        log.warning("config_reload_requested", workers=len(self.processes))
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGHUP)
