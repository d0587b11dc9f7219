"""Shared pieces of the benchmarks: processes on free loopback ports, wrk runs, medians."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# tests.services imports the test fixtures, whose TestClient import warns about httpx2.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from tests.services import NGINX_MAIN, stop  # noqa: E402

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@contextlib.contextmanager
def process(
    args: list[str], port: int, env: dict[str, str] | None = None, root: Path = ROOT, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` importing the checkout at ``root`` (another revision's, for a baseline);
    its stderr (where the gateway's JSON logs go) to ``log``, else nowhere."""
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(log.open("ab")) if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            args, cwd=root, env={**os.environ, "PYTHONPATH": str(root), **(env or {})},
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )
        try:
            wait_port(port, proc)
            yield proc
        finally:
            stop(proc)


def peak_rss_mb(proc: subprocess.Popen[bytes]) -> float:
    """Peak resident memory (VmHWM) of ``proc`` and its children (uvicorn's workers), in MB."""
    pids = [proc.pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        pids += [int(c) for c in children]
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def uvicorn(app: str, port: int, env: dict[str, str] | None = None, factory: bool = False,  # type: ignore[no-untyped-def]
            root: Path = ROOT):
    args = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
    if factory:
        args.append("--factory")
    return process(args, port, env, root)


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """A temporary detached worktree of ``revision``, so a baseline runs in the same session."""
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), revision], cwd=ROOT, check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


# nginx's main config comes from tests/services.py; the benchmark adds this server.
FAST_SITE = """
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location = /api/chat {{
      default_type application/json;
      return 200 '{{"response": "We sell tents.", "sources": [{{"title": "Catalog", "url": "https://example.com/c"}}]}}';
    }}
  }}
"""


@contextlib.contextmanager
def nginx_backend(port: int) -> Iterator[None]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_MAIN.format(dir=tmp, connections=4096, site=FAST_SITE.format(port=port)))
        with process([binary, "-p", tmp, "-c", str(conf), "-g", "daemon off;"], port):
            yield


# Every request is a distinct client: its own X-Forwarded-For address (the gateway trusts
# loopback as a proxy) and its own sessionId, so every rate-limit check is a real hit on a
# fresh key and none is refused (the realistic many-visitors case). Fronts that are not the
# gateway ignore both.
WRK_SCRIPT = """
local counter = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function request()
  counter = counter + 1
  local ip = string.format("10.%d.%d.%d", (tid * 16 + math.floor(counter / 65536)) % 256,
                           math.floor(counter / 256) % 256, counter % 256)
  local body = string.format('{"message": "What do you sell?", "sessionId": "bench-%d-%d"}', tid, counter)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip}, body)
end
"""


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers plus socket errors


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, connections: int, duration: float, script: str = WRK_SCRIPT) -> WrkResult:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk; scripts/install does it)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        threads = min(2, connections)
        out = subprocess.run(
            [binary, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
             "--timeout", "10s", "--latency", "-s", f.name, url],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return WrkResult(rps, p50, p99, errors)


def median_result(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
    )
