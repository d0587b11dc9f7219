"""The README's first command, for real: scripts/demo brings up the reference backend
and the gateway, and a question gets an answer with sources through the gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def wait_for(url: str, proc: subprocess.Popen[bytes], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"scripts/demo exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def test_demo_answers_with_sources(tmp_path: Path) -> None:
    gateway_port, backend_port = free_port(), free_port()
    env = {**os.environ, "GATEWAY_PORT": str(gateway_port), "BACKEND_PORT": str(backend_port)}
    log = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen(
        ["bash", "scripts/demo"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_for(f"{gateway}/api/health", proc)
        r = httpx.post(f"{gateway}/api/chat", json={"message": "How long do I have to return a jacket?"}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["sessionId"]
        assert "return" in body["response"].lower()
        assert body["sources"], body
        assert all(s["url"].startswith(f"http://127.0.0.1:{backend_port}/docs/") for s in body["sources"])
        health = httpx.get(f"{gateway}/api/health").json()
        assert health["providers"]["llm"] == "connected"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        log.close()
    output = (tmp_path / "demo.log").read_text()
    assert f"curl -s http://127.0.0.1:{gateway_port}/api/chat" in output
