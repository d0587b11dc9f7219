"""``avatar-gateway serve`` as its own process, beside tests/services.py's ``gateway_process``
(which runs ``uvicorn gateway.app:create_app --factory``): the two documented ways of starting
the gateway, so tests can hold both to the same behaviour."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.services import ROOT, gateway_process, stop, wait_for_port

START_PATHS = ("uvicorn-factory", "avatar-gateway-serve")


@contextlib.contextmanager
def serve_process(config: Path, port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``avatar-gateway serve`` (``python -m gateway serve``: the console script's own entry point)."""
    args = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_FORMAT": "json", **(env or {})}
    proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        stop(proc)


def started(how: str, config: Path, port: int) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """The gateway started one of the documented ways (see START_PATHS)."""
    if how == "uvicorn-factory":
        return gateway_process(config, port)
    return serve_process(config, port)
