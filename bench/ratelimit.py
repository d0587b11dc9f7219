"""What the rate limiter adds to a request, with memory and Redis storage.

Two views, each against a baseline measured in the same run:
  1. in-process: the time of one ``RateLimiter.check`` (sequential, and 64 concurrent
     callers), against an empty coroutine call;
  2. end to end: the gateway in front of a fast nginx backend under wrk (64 connections)
     with the limiter off, on memory, and on Redis (60/minute per sessionId, every request
     a new session, so every request is checked and none refused); added latency = p50 - p50(off).

    .venv/bin/python bench/ratelimit.py [--calls 20000] [--duration 5] [--repeat 3]

Starts its own redis-server and nginx on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lib import free_port, median_result, nginx_backend, process, uvicorn, wrk
from gateway.config import parse_settings
from gateway.ratelimit import RateLimiter
from gateway.settings import RateLimitSettings

# The contract's chat limit, checked for many distinct clients, so that no check is refused
# and every one is a full hit + window read. (The moving window's cost grows with the number
# of hits a key holds inside its window: a per-client limit keeps that small.)
RULES = parse_settings("routes: [{path: /x, handler: health, rate_limit: 60/minute}]", env={}).routes[0].rate_limits
KEYS = 100_000


async def per_call_us(storage: str | None, calls: int, concurrency: int, run: int = 0) -> float:
    if storage is None:
        async def check(i: int) -> None:
            return None
    else:
        run = run * 2 + 1  # fresh keys for the warm-up and for the measurement
        limiter = RateLimiter(RateLimitSettings(storage_url=storage, storage_timeout=5))

        async def check(i: int) -> None:
            await limiter.check("/bench", RULES, {"ip": f"client-{i % KEYS}-{run}"})

    async def worker(offset: int) -> None:
        for i in range(offset, calls, concurrency):
            await check(i)

    await asyncio.gather(*(worker(k) for k in range(concurrency)))  # warm up (connections, imports)
    run += 1
    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return (time.perf_counter() - started) / calls * 1e6


@contextlib.contextmanager
def redis_server():  # type: ignore[no-untyped-def]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, process(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp], port
    ):
        yield f"redis://127.0.0.1:{port}/0"


GATEWAY_YAML = """
server: {{log_format: json, log_level: warning}}
rate_limit: {{storage: "{storage}"}}
routes:
  - path: /api/chat
    handler: chat
    upstream: {{url: "{backend}"}}
    rate_limit: {limit}
"""

# Every request its own sessionId: many clients, each well under its limit.
SESSION_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local body = '{"message": "hi", "sessionId": "s' .. counter .. '-' .. math.random(1, 1000000000) .. '"}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"# bench/ratelimit.py  python {sys.version.split()[0]}  calls {args.calls}  "
          f"wrk {args.duration:g}s x {args.repeat}")
    with redis_server() as redis_url:
        storages = {"none (baseline)": None, "memory": "memory://", "redis": redis_url}
        print("\n1. in-process, microseconds per check (median of repeats)")
        print(f"{'storage':16} {'sequential':>11} {'64 concurrent':>14}")
        for name, url in storages.items():
            seq = statistics.median(asyncio.run(per_call_us(url, args.calls, 1)) for _ in range(args.repeat))
            conc = statistics.median(asyncio.run(per_call_us(url, args.calls, 64)) for _ in range(args.repeat))
            print(f"{name:16} {seq:11.1f} {conc:14.1f}")

        print("\n2. end to end: gateway -> nginx backend, wrk 64 connections")
        bport = free_port()
        with nginx_backend(bport), tempfile.TemporaryDirectory() as tmp:
            backend = f"http://127.0.0.1:{bport}/api/chat"
            results = {}
            for name, storage, limit in (
                ("limiter off", "memory://", '"off"'),
                ("memory", "memory://", "{limit: 60/minute, key: session}"),
                ("redis", redis_url, "{limit: 60/minute, key: session}"),
            ):
                config = Path(tmp) / f"{name.replace(' ', '-')}.yaml"
                config.write_text(GATEWAY_YAML.format(storage=storage, backend=backend, limit=limit))
                port = free_port()
                with uvicorn("gateway.app:create_app", port, env={"GATEWAY_CONFIG": str(config)}, factory=True):
                    url = f"http://127.0.0.1:{port}/api/chat"
                    wrk(url, 16, 1.0, SESSION_SCRIPT)
                    results[name] = median_result(
                        [wrk(url, 64, args.duration, SESSION_SCRIPT) for _ in range(args.repeat)]
                    )
            base = results["limiter off"]
            print(f"{'limiter':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x off':>7} {'+p50 ms':>8}")
            for name, r in results.items():
                print(f"{name:12} {r.rps:9.1f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.rps / base.rps:6.2f}x "
                      f"{r.p50_ms - base.p50_ms:8.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

