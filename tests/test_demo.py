"""The README's first command, for real: scripts/demo brings up the reference backend
and the gateway, a question gets an answer with sources through the gateway, and a
SIGTERM to the script (what a service manager sends) stops both servers."""

from __future__ import annotations

import errno
import os
import signal
import socket
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


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the port now (as uvicorn binds: SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE, exc
            return False
    return True


def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_demo_answers_with_sources_and_stops_on_sigterm(tmp_path: Path) -> None:
    gateway_port, backend_port = free_port(), free_port()
    env = {**os.environ, "GATEWAY_PORT": str(gateway_port), "BACKEND_PORT": str(backend_port)}
    log = (tmp_path / "demo.log").open("wb")
    # A session of its own, so that whatever happens nothing outlives the test (the finally);
    # the SIGTERM under test goes to the script's pid alone, as `kill <pid>` does.
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
        assert "60 days" in body["response"]
        assert body["sources"] == [{"title": "Returns & Exchanges", "url": f"http://127.0.0.1:{backend_port}/docs/returns"}]
        assert httpx.get(f"{gateway}/console/").status_code == 200  # the console is on in the demo
        health = httpx.get(f"{gateway}/api/health").json()
        assert health["providers"]["llm"] == "connected"
        # The script polls the gateway too, and prints the hints once it has seen it answer.
        up = f"==> the gateway is up on {gateway}"
        deadline = time.monotonic() + 10
        while up not in (tmp_path / "demo.log").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, "scripts/demo never said the gateway is up"
            time.sleep(0.05)

        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
        deadline = started + 5
        while not (port_is_free(gateway_port) and port_is_free(backend_port) and group_is_gone(proc.pid)):
            assert time.monotonic() < deadline, "the servers outlived a SIGTERM to scripts/demo by 5 s"
            time.sleep(0.05)
    finally:
        if not group_is_gone(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)
        log.close()
    output = (tmp_path / "demo.log").read_text()
    assert f"curl -s http://127.0.0.1:{gateway_port}/api/chat" in output
    assert f"talk to the avatar in a browser: http://127.0.0.1:{gateway_port}/console/" in output


@pytest.mark.parametrize(
    ("variable", "what"),
    [pytest.param("GATEWAY_PORT", "gateway", id="gateway"), pytest.param("BACKEND_PORT", "reference backend", id="backend")],
)
def test_a_busy_port_is_named_before_anything_starts(variable: str, what: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "GATEWAY_PORT": str(free_port()), "BACKEND_PORT": str(free_port()), variable: str(port)}
        result = subprocess.run(["bash", "scripts/demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""  # no install, no "try: curl ..." hints, no server logs
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is already in use; the {what} needs it. "
        f"Choose another, e.g. {variable}={port + 1} scripts/demo\n"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"GATEWAY_PORT": "80a"}, "error: GATEWAY_PORT must be a port number from 1 to 65535, got '80a'", id="not-a-number"
        ),
        pytest.param(
            {"GATEWAY_PORT": "9100", "BACKEND_PORT": "9100"},
            "error: GATEWAY_PORT and BACKEND_PORT are both 9100; choose two different ports",
            id="same-port",
        ),
    ],
)
def test_bad_port_settings_are_refused(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        ["bash", "scripts/demo"], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message + "\n")
