"""``avatar-gateway serve`` as its own process, beside tests/services.py's ``gateway_process``
(which runs ``uvicorn gateway.app:create_app --factory``): the two documented ways of starting
the gateway, so tests can hold both to the same behaviour."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from tests.services import gateway_process, gateway_running, serve_args

START_PATHS = ("uvicorn-factory", "avatar-gateway-serve")


def serve_process(config: Path, port: int, env: dict[str, str] | None = None
                  ) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``avatar-gateway serve`` with one worker, output discarded."""
    return gateway_running(serve_args(config, port), port, env)


def started(how: str, config: Path, port: int) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """The gateway started one of the documented ways (see START_PATHS)."""
    if how == "uvicorn-factory":
        return gateway_process(config, port)
    return serve_process(config, port)
