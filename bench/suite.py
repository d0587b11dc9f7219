"""The benchmark suite: the gateway with every feature on against every other front, one run.

    .venv/bin/python bench/suite.py              # 5 s per cell, 3 rounds, medians (~25 min)
    .venv/bin/python bench/suite.py --quick      # 2 s per cell, 1 round (~6 min)
    .venv/bin/python bench/suite.py --sections chat --backends fast --conns 64 --fronts naive_aiohttp,gateway
    .venv/bin/python bench/suite.py --baseline main   # also that revision's gateway, same run

Everything starts here, on loopback, and is torn down at the end, so each figure is a
ratio against baselines measured minutes apart on the same machine.

Backends: ``fast`` (nginx returning a fixed chat answer), ``slow`` (0.5 s per answer,
bench/slow_backend.py) and, for time to first delta, ``stream`` (OpenAI-style SSE,
bench/stream_backend.py).

Fronts: ``direct`` (no proxy), ``nginx`` (``proxy_pass`` with upstream keepalive: the floor
for any proxy hop), ``naive_httpx`` and ``naive_aiohttp`` (bench/peers/: what a team would
write instead), and ``gateway``: ``avatar-gateway serve``, one worker, with
bench/gateway.production.yaml (validation, mapping, rate limits per client IP and per
session, request ids, JSON access logs to a file, metrics, chat turns recorded to SQLite).
wrk sends a distinct client (X-Forwarded-For) and sessionId per request.

Sections: ``chat`` (wrk at 1, 64, 200, 1,000 connections, rounds interleaved, medians;
req/s, p50, p99, errors, the gateway's ratio to every other front, the gateway's peak
RSS), ``stream`` (time to first delta at 1 and 200 concurrent streams), ``workers``
(two workers with Redis-backed limits and PostgreSQL, against one worker, same backends).
Then the targets of issue 17, each met or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lib import (
    PYTHON,
    ROOT,
    WrkResult,
    checkout,
    free_port,
    median_result,
    nginx_backend,
    peak_rss_mb,
    process,
    uvicorn,
    wrk,
)
from bench.stream import measure as measure_ttfd
from tests.services import NGINX_MAIN

FRONTS = ("direct", "nginx", "naive_httpx", "naive_aiohttp", "gateway")
CONCURRENCY = (1, 64, 200, 1000)
PRODUCTION = ROOT / "bench/gateway.production.yaml"
PRODUCTION_STREAM = ROOT / "bench/gateway.production-stream.yaml"

NGINX_PROXY_SITE = """
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 256; keepalive_requests 1000000; }}
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
"""


@contextlib.contextmanager
def nginx_proxy(port: int, backend: int) -> Iterator[None]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="bench-nginx-proxy-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_MAIN.format(dir=tmp, connections=8192,
                                          site=NGINX_PROXY_SITE.format(port=port, backend=backend)))
        with process([binary, "-p", tmp, "-c", str(conf), "-g", "daemon off;"], port):
            yield


@contextlib.contextmanager
def gateway(port: int, backend_url: str, workdir: Path, *, config: Path = PRODUCTION, workers: int = 1,
            env: dict[str, str] | None = None, root: Path = ROOT, name: str = "gateway") -> Iterator[Any]:
    """``avatar-gateway serve`` with a fresh SQLite file, JSON logs appended to ``workdir/<name>.log``."""
    database = workdir / f"{name}.db"
    full_env = {"CHAT_API_URL": backend_url, "DATABASE_URL": f"sqlite:///{database}", **(env or {})}
    args = [PYTHON, "-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]
    with process(args, port, full_env, root=root, log=workdir / f"{name}.log") as proc:
        yield proc


@contextlib.contextmanager
def chat_stack(backend: str, workdir: Path, fronts: tuple[str, ...], baseline: Path | None) -> Iterator[
        tuple[dict[str, str], dict[str, Any]]]:
    """A backend and every front before it; yield (front -> chat URL, front -> its process)."""
    bport = free_port()
    backend_url = f"http://127.0.0.1:{bport}/api/chat"
    urls: dict[str, str] = {}
    procs: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if backend == "fast":
            stack.enter_context(nginx_backend(bport))
        else:
            stack.enter_context(uvicorn("bench.slow_backend:app", bport))
        for front in fronts:
            port = free_port()
            url = f"http://127.0.0.1:{port}/api/chat"
            if front == "direct":
                url = backend_url
            elif front == "nginx":
                stack.enter_context(nginx_proxy(port, bport))
            elif front.startswith("naive_"):
                stack.enter_context(uvicorn(f"bench.peers.{front}:app", port, env={"NAIVE_UPSTREAM": backend_url}))
            elif front == "gateway":
                procs[front] = stack.enter_context(gateway(port, backend_url, workdir, name=f"gateway-{backend}"))
            elif front == "baseline":
                assert baseline is not None
                procs[front] = stack.enter_context(
                    gateway(port, backend_url, workdir, root=baseline, name=f"baseline-{backend}",
                            config=baseline / "bench/gateway.production.yaml"
                            if (baseline / "bench/gateway.production.yaml").exists() else PRODUCTION))
            urls[front] = url
        yield urls, procs


def run_chat(args: argparse.Namespace, workdir: Path, baseline: Path | None) -> dict[str, Any]:
    fronts = tuple(args.fronts.split(",")) + (("baseline",) if baseline is not None else ())
    conns = tuple(int(c) for c in args.conns.split(","))
    results: dict[str, Any] = {}
    for backend in args.backends.split(","):
        with chat_stack(backend, workdir, fronts, baseline) as (urls, procs):
            for front in fronts:  # warm up connections and imports
                wrk(urls[front], 16, 1.0)
            raw: dict[str, dict[int, list[WrkResult]]] = {f: {c: [] for c in conns} for f in fronts}
            for _ in range(args.repeat):  # interleave fronts so drift hits all of them alike
                for c in conns:
                    for front in fronts:
                        raw[front][c].append(wrk(urls[front], c, args.duration))
            rss = {front: peak_rss_mb(proc) for front, proc in procs.items()}
        med = {f: {c: median_result(raw[f][c]) for c in conns} for f in fronts}
        results[backend] = {"median": med, "rss_mb": rss, "raw": raw}
        print_chat(backend, fronts, conns, med, rss)
    return results


def print_chat(backend: str, fronts: tuple[str, ...], conns: tuple[int, ...],
               med: dict[str, dict[int, WrkResult]], rss: dict[str, float]) -> None:
    others = [f for f in fronts if f != "gateway"]
    head = "".join(f" {'gw/' + f[:9]:>12}" for f in others) if "gateway" in fronts else ""
    print(f"\n{backend} backend")
    print(f"{'conns':>5} {'front':14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>9} {'errors':>7}{head}")
    for c in conns:
        for f in fronts:
            r = med[f][c]
            ratios = ""
            if f == "gateway":
                # A front that answered nothing (naive httpx at 1,000 connections) has no ratio.
                ratios = "".join(
                    f" {r.rps / med[o][c].rps:11.2f}x" if med[o][c].rps >= 1 else f" {'n/a':>12}" for o in others
                )
            print(f"{c:5} {f:14} {r.rps:9.1f} {r.p50_ms:8.2f} {r.p99_ms:9.2f} {r.errors:7}{ratios}")
    for f, mb in rss.items():
        print(f"peak RSS of {f} ({backend} backend run): {mb:.0f} MB")


def run_stream(args: argparse.Namespace, workdir: Path) -> dict[int, dict[str, float]]:
    bport, gport = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{bport}/v1/chat/completions"
    duration = max(3.0, args.duration * 2)
    out: dict[int, dict[str, float]] = {}
    print(f"\nstreaming backend (first token after 100 ms): time to first delta, {duration:g} s per cell")
    print(f"{'conc':>5} {'front':8} {'streams':>8} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}")
    with uvicorn("bench.stream_backend:app", bport), \
            gateway(gport, backend_url, workdir, config=PRODUCTION_STREAM, name="gateway-stream"):
        for conc in (1, 200):
            medians: dict[str, list[float]] = {"direct": [], "gateway": []}
            for _ in range(args.repeat):
                for front, url, direct in (("direct", backend_url, True),
                                           ("gateway", f"http://127.0.0.1:{gport}/api/chat", False)):
                    ms = sorted(s * 1000 for s in asyncio.run(measure_ttfd(url, direct, conc, duration)))
                    medians[front].append(statistics.median(ms))
                    p90, p99 = (ms[min(len(ms) - 1, int(q * len(ms)))] for q in (0.9, 0.99))
                    print(f"{conc:5} {front:8} {len(ms):8} {medians[front][-1]:9.2f} {p90:9.2f} {p99:9.2f}")
            out[conc] = {f: statistics.median(v) for f, v in medians.items()}
    return out


def run_workers(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One worker (memory limits, SQLite) vs two workers (Redis limits, PostgreSQL), same backends."""
    from tests.pg_service import Postgres
    from tests.services import redis_server

    out: dict[str, Any] = {}
    pg = Postgres()
    pg.start()
    stack = contextlib.ExitStack()
    stack.callback(pg.cleanup)
    print("\ntwo workers with Redis-backed limits and PostgreSQL vs one worker (memory, SQLite)")
    print(f"{'backend':8} {'conns':>5} {'gateway':22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>9} {'errors':>7}"
          f" {'x 1':>6}")
    with stack, redis_server(workdir) as redis:
        pg_url = pg.create_database("bench")
        for backend, conns in (("fast", 64), ("slow", 1000)):
            bport, one, two = free_port(), free_port(), free_port()
            backend_url = f"http://127.0.0.1:{bport}/api/chat"
            with contextlib.ExitStack() as stack:
                if backend == "fast":
                    stack.enter_context(nginx_backend(bport))
                else:
                    stack.enter_context(uvicorn("bench.slow_backend:app", bport))
                stack.enter_context(gateway(one, backend_url, workdir, name=f"workers1-{backend}"))
                stack.enter_context(gateway(two, backend_url, workdir, workers=2, name=f"workers2-{backend}", env={
                    "RATE_LIMIT_STORAGE_URL": f"redis://127.0.0.1:{redis.port}/0", "DATABASE_URL": pg_url}))
                urls = {"1 worker": f"http://127.0.0.1:{one}/api/chat", "2 workers": f"http://127.0.0.1:{two}/api/chat"}
                for url in urls.values():
                    wrk(url, 16, 1.0)
                raw: dict[str, list[WrkResult]] = {k: [] for k in urls}
                for _ in range(args.repeat):
                    for k, url in urls.items():
                        raw[k].append(wrk(url, conns, args.duration))
            med = {k: median_result(v) for k, v in raw.items()}
            for k, r in med.items():
                ratio = r.rps / max(med["1 worker"].rps, 0.001)
                label = k + (" redis+pg" if k == "2 workers" else " memory+sqlite")
                print(f"{backend:8} {conns:5} {label:22} {r.rps:9.1f} {r.p50_ms:8.2f} {r.p99_ms:9.2f} {r.errors:7}"
                      f" {ratio:5.2f}x")
            out[backend] = med
    return out


def verdicts(chat: dict[str, Any], stream: dict[int, dict[str, float]] | None) -> list[str]:
    lines = []

    def cell(backend: str, front: str, c: int) -> WrkResult | None:
        return chat.get(backend, {}).get("median", {}).get(front, {}).get(c)

    def line(ok: bool, text: str) -> None:
        lines.append(f"[{'met ' if ok else 'MISS'}] {text}")

    gw, d = cell("slow", "gateway", 200), cell("slow", "direct", 200)
    if gw and d:
        line(gw.rps >= 0.97 * d.rps and gw.p99_ms <= d.p99_ms + 25,
             f"0.5 s backend, 200 conns: {gw.rps / d.rps:.2f}x direct (>= 0.97x), p99 {gw.p99_ms:.0f} ms vs direct "
             f"{d.p99_ms:.0f} ms + 25")
    gw, d = cell("slow", "gateway", 1000), cell("slow", "direct", 1000)
    if gw and d:
        rss = chat["slow"]["rss_mb"].get("gateway", 0.0)
        line(gw.rps >= 0.9 * d.rps and gw.errors == 0 and rss <= 150,
             f"0.5 s backend, 1000 conns: {gw.rps / d.rps:.2f}x direct (>= 0.9x), {gw.errors} errors, "
             f"peak RSS {rss:.0f} MB (<= 150)")
    gw, n = cell("fast", "gateway", 64), cell("fast", "naive_aiohttp", 64)
    if gw and n:
        line(gw.rps >= n.rps, f"fast backend, 64 conns: {gw.rps / n.rps:.2f}x naive Starlette+aiohttp (>= 1.0x)")
    gw, d = cell("fast", "gateway", 1), cell("fast", "direct", 1)
    if gw and d:
        added = gw.p50_ms - d.p50_ms
        line(added <= 0.3, f"one connection: +{added:.2f} ms median over direct (<= 0.3 ms)")
    if stream:
        for conc, m in stream.items():
            added = m["gateway"] - m["direct"]
            line(added <= 2.0, f"streaming, {conc} concurrent: time to first delta +{added:.2f} ms at the median"
                 " (<= 2 ms)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk cell (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 s per cell, 1 round")
    parser.add_argument("--sections", default="chat,stream,workers", help="chat,stream,workers (default all)")
    parser.add_argument("--backends", default="fast,slow", help="chat backends: fast,slow")
    parser.add_argument("--fronts", default=",".join(FRONTS), help=f"chat fronts (default {','.join(FRONTS)})")
    parser.add_argument("--conns", default=",".join(map(str, CONCURRENCY)),
                        help="wrk connections (default 1,64,200,1000)")
    parser.add_argument("--baseline", metavar="REV", help="also measure the gateway at git revision REV")
    parser.add_argument("--json", type=Path, help="write the medians here")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeat = 2.0, 1
    sections = set(args.sections.split(","))
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1]
    print(f"# bench/suite.py {time.strftime('%Y-%m-%d %H:%M')}  python {platform.python_version()}"
          f"  cpus {len(os.sched_getaffinity(0))}  load {os.getloadavg()[0]:.1f}"
          f"  {(wrk_version or ['wrk ?'])[0].strip()}  {args.duration:g} s x {args.repeat}")
    chat: dict[str, Any] = {}
    stream = None
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-suite-")))
        baseline = stack.enter_context(checkout(args.baseline)) if args.baseline else None
        if "chat" in sections:
            chat = run_chat(args, workdir, baseline)
        if "stream" in sections:
            stream = run_stream(args, workdir)
        if "workers" in sections:
            run_workers(args, workdir)
        log_lines = sum(1 for p in workdir.glob("gateway-*.log") for _ in p.open("rb"))
        print(f"\n(the gateways wrote {log_lines} JSON log lines)")
    print("\ntargets (issue 17), one gateway worker, every feature on:")
    for text in verdicts(chat, stream):
        print("  " + text)
    if args.json:
        args.json.write_text(json.dumps({
            "chat": {b: {f: {c: r.__dict__ for c, r in fm.items()} for f, fm in v["median"].items()}
                     for b, v in chat.items()},
            "rss_mb": {b: v["rss_mb"] for b, v in chat.items()},
            "stream": stream,
        }, indent=2))


if __name__ == "__main__":
    main()
