"""Real services for integration tests: redis-server, nginx, gateway processes.

Each starts on a free loopback port in a temporary directory and is stopped
afterwards. A missing binary is a hard failure, never a skip: scripts/install
(and so CI) installs them from Debian's packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def binary(name: str, *fallbacks: str) -> str:
    found = shutil.which(name) or next((f for f in fallbacks if os.path.exists(f)), None)
    if found is None:
        raise RuntimeError(f"{name} is not installed; run scripts/install (Debian package for {name})")
    return found


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 20, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{proc.args!r} did not listen on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Redis:
    """A redis-server that a test can stop and start again on the same port."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            binary("redis-server", "/usr/bin/redis-server"),
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.directory),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[Redis]:
    server = Redis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# A complete nginx.conf around one http-level ``site`` (e.g. examples/nginx/gateway.conf).
NGINX_MAIN = """
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
{site}
}}
"""


@contextlib.contextmanager
def nginx(conf_text: str, directory: Path, port: int) -> Iterator[None]:
    """Run nginx in the foreground with ``conf_text`` (a complete nginx.conf)."""
    conf = directory / "nginx.conf"
    conf.write_text(conf_text)
    args = [binary("nginx", "/usr/sbin/nginx"), "-p", str(directory), "-c", str(conf), "-g", "daemon off;"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, proc)
        yield
    finally:
        stop(proc)


@contextlib.contextmanager
def gateway_running(args: list[str], port: int, env: dict[str, str] | None = None,
                    output: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A gateway process started with ``args``, importing this checkout, JSON logs to ``output``
    (discarded when None), stopped afterwards."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_FORMAT": "json", **(env or {})}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # serve sets its own when it runs workers
    with contextlib.ExitStack() as files:
        out = subprocess.DEVNULL if output is None else files.enter_context(output.open("ab"))
        proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=out,
                                stderr=subprocess.DEVNULL if output is None else subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        stop(proc)


def serve_args(config: Path, port: int, *more: str) -> list[str]:
    """``avatar-gateway serve`` (``python -m gateway serve``: the console script's own entry point)."""
    return [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), *more]


def gateway_process(config: Path, port: int, env: dict[str, str] | None = None
                    ) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``uvicorn gateway.app:create_app --factory`` as its own process."""
    args = [sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    return gateway_running(args, port, {"GATEWAY_CONFIG": str(config), **(env or {})})


def gateway_serve(config: Path, port: int, log: Path, workers: int = 2, env: dict[str, str] | None = None
                  ) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``avatar-gateway serve --workers N`` (uvicorn's supervisor and its workers), JSON logs to ``log``."""
    return gateway_running(serve_args(config, port, "--workers", str(workers)), port, env, log)
