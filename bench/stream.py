"""Time to first delta (TTFD): how long until the first piece of a streamed answer reaches
the client, direct from a streaming backend vs through the gateway, at 1 and 200
concurrent streams, and the difference at the median (target: at most 2 ms added).

    .venv/bin/python bench/stream.py             # 10 s per cell (~1 min)
    .venv/bin/python bench/stream.py --quick     # 3 s per cell

The backend (bench/stream_backend.py) sends its headers at once and its first token
after 100 ms, then 10 more 20 ms apart: a model that thinks, then talks. Each client
loops: POST, read until the first delta, read the rest, repeat. Direct, the client asks
the backend itself (``data:`` lines); through the gateway it sends ``Accept:
text/event-stream`` and waits for the first ``event: delta``. The same client code
measures both, so its own cost cancels out of the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lib import ROOT, free_port, uvicorn

BODY = {"message": "What do you sell?", "sessionId": "bench-session"}
DIRECT_BODY = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "What do you sell?"}]}


_streams = itertools.count(1)


async def one_stream(session: aiohttp.ClientSession, url: str, direct: bool) -> float:
    started = time.perf_counter()
    first = None
    # Through the gateway every stream is a distinct client (address and sessionId), as in
    # bench/_lib.py's wrk script: the limits are counted on fresh keys and never refuse.
    n = next(_streams)
    headers = {} if direct else {"Accept": "text/event-stream",
                                 "X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
    body = DIRECT_BODY if direct else {**BODY, "sessionId": f"bench-stream-{n}"}
    async with session.post(url, json=body, headers=headers) as r:
        if r.status != 200:
            raise SystemExit(f"{url} answered {r.status}: {await r.text()}")
        marker = b"data: " if direct else b"event: delta"
        async for line in r.content:
            if first is None and line.startswith(marker):
                first = time.perf_counter() - started
    if first is None:
        raise SystemExit(f"{url}: no delta in the answer")
    return first


async def measure(url: str, direct: bool, concurrency: int, duration: float) -> list[float]:
    samples: list[float] = []
    warmup_until = time.perf_counter() + min(1.0, duration / 3)
    stop_at = warmup_until + duration
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                ttfd = await one_stream(session, url, direct)
                if time.perf_counter() > warmup_until:
                    samples.append(ttfd)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s per cell")
    parser.add_argument("--concurrency", default="1,200", help="comma-separated (default 1,200)")
    args = parser.parse_args()
    duration = 3.0 if args.quick else args.duration
    bport, gport = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{bport}/v1/chat/completions"
    env = {"GATEWAY_CONFIG": str(ROOT / "bench/gateway.production-stream.yaml"), "CHAT_API_URL": backend_url,
           "DATABASE_URL": "sqlite:///data/bench-stream.db"}
    print(f"{'conc':>5} {'target':8} {'streams':>8} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}")
    with uvicorn("bench.stream_backend:app", bport), uvicorn("gateway.app:create_app", gport, env=env, factory=True):
        summary = []
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            medians = {}
            for target, url, direct in (("direct", backend_url, True),
                                        ("gateway", f"http://127.0.0.1:{gport}/api/chat", False)):
                samples = sorted(asyncio.run(measure(url, direct, concurrency, duration)))
                ms = [s * 1000 for s in samples]
                medians[target] = statistics.median(ms)
                p90, p99 = (ms[min(len(ms) - 1, int(q * len(ms)))] for q in (0.9, 0.99))
                print(f"{concurrency:>5} {target:8} {len(ms):>8} {medians[target]:>9.2f} {p90:>9.2f} {p99:>9.2f}")
            summary.append((concurrency, medians["gateway"] - medians["direct"]))
        print()
        for concurrency, added in summary:
            verdict = "ok" if added <= 2.0 else "over the 2 ms target"
            print(f"{concurrency} concurrent streams: the gateway adds {added:.2f} ms to the median TTFD ({verdict})")


if __name__ == "__main__":
    main()
