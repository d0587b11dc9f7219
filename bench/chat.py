"""Throughput and latency of /api/chat: direct-to-backend vs a naive httpx proxy vs the gateway.

One run drives every target at 1, 64 and 200 concurrent connections (wrk) against a fast
backend (nginx answering a fixed JSON body) and a slow one (0.5 s per answer), repeats
each cell, and prints medians and the ratios to direct-to-backend measured in the same run.

    .venv/bin/python bench/chat.py              # default: 5 s per cell, 3 repeats (~5 min)
    .venv/bin/python bench/chat.py --quick      # 2 s per cell, 1 repeat (smoke run)
    .venv/bin/python bench/chat.py --json out.json
    .venv/bin/python bench/chat.py --baseline main~3   # also run that revision's gateway, same run
    .venv/bin/python bench/chat.py --metrics-off       # also run this gateway with metrics.enabled false

Everything runs on loopback and is torn down at the end. The gateway runs as
``uvicorn gateway.app:create_app --factory`` with bench/gateway.bench.yaml (rate limit off).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lib import ROOT, WrkResult, checkout, free_port, median_result, nginx_backend, uvicorn, wrk

TARGETS: tuple[str, ...] = ("direct", "naive", "gateway")
BACKENDS: tuple[str, ...] = ("fast", "slow")
CONCURRENCY = (1, 64, 200)


@contextlib.contextmanager
def stack(backend: str, baseline: Path | None = None, metrics_off: Path | None = None) -> Iterator[dict[str, str]]:
    """Start a backend and the proxies in front of it; yield target -> chat URL."""
    bport, nport, gport, oport = free_port(), free_port(), free_port(), free_port()
    gateway_env = {"GATEWAY_CONFIG": str(ROOT / "bench/gateway.bench.yaml"), "CHAT_API_URL": ""}
    backend_url = f"http://127.0.0.1:{bport}/api/chat"
    with contextlib.ExitStack() as stack:
        if backend == "fast":
            stack.enter_context(nginx_backend(bport))
        else:
            stack.enter_context(uvicorn("bench.slow_backend:app", bport))
        stack.enter_context(uvicorn("bench.naive_proxy:app", nport, env={"NAIVE_UPSTREAM": backend_url}))
        gateway_env["CHAT_API_URL"] = backend_url
        stack.enter_context(uvicorn("gateway.app:create_app", gport, env=gateway_env, factory=True))
        urls = {
            "direct": backend_url,
            "naive": f"http://127.0.0.1:{nport}/api/chat",
            "gateway": f"http://127.0.0.1:{gport}/api/chat",
        }
        if baseline is not None:
            stack.enter_context(uvicorn("gateway.app:create_app", oport, env=gateway_env, factory=True, root=baseline))
            urls["baseline"] = f"http://127.0.0.1:{oport}/api/chat"
        if metrics_off is not None:
            mport = free_port()
            env = {**gateway_env, "GATEWAY_CONFIG": str(metrics_off)}
            stack.enter_context(uvicorn("gateway.app:create_app", mport, env=env, factory=True))
            urls["nometrics"] = f"http://127.0.0.1:{mport}/api/chat"
        yield urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per cell; medians are reported")
    parser.add_argument("--quick", action="store_true", help="2 s, 1 repeat")
    parser.add_argument("--json", type=Path, help="write raw results here")
    parser.add_argument("--baseline", metavar="REV", help="also measure the gateway at git revision REV")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: fast,slow (default both)")
    parser.add_argument("--metrics-off", action="store_true",
                        help="also measure this gateway with metrics.enabled: false (target 'nometrics')")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeat = 2.0, 1
    with contextlib.ExitStack() as trees:
        baseline = trees.enter_context(checkout(args.baseline)) if args.baseline else None
        metrics_off = None
        if args.metrics_off:
            directory = trees.enter_context(tempfile.TemporaryDirectory(prefix="bench-nometrics-"))
            metrics_off = Path(directory) / "gateway.nometrics.yaml"
            bench_yaml = (ROOT / "bench/gateway.bench.yaml").read_text()
            metrics_off.write_text(bench_yaml + "\nmetrics:\n  enabled: false\n")
        run(args, baseline, metrics_off)


def run(args: argparse.Namespace, baseline: Path | None, metrics_off: Path | None = None) -> None:
    global TARGETS, BACKENDS
    BACKENDS = tuple(b for b in BACKENDS if b in args.backends.split(","))
    if baseline is not None:
        TARGETS = (*TARGETS, "baseline")
    if metrics_off is not None:
        TARGETS = (*TARGETS, "nometrics")

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1]
    if baseline is not None:
        print(f"# baseline: the gateway at {args.baseline}")
    print(f"# bench/chat.py  python {platform.python_version()}  cpus {len(__import__('os').sched_getaffinity(0))}"
          f"  {(wrk_version or ['wrk ?'])[0].strip()}  duration {args.duration}s x {args.repeat}")
    raw: dict[str, dict[str, dict[int, list[WrkResult]]]] = {}
    for backend in BACKENDS:
        with stack(backend, baseline, metrics_off) as urls:
            for target in TARGETS:  # warm up connections, imports, JIT-less caches
                wrk(urls[target], 16, 1.0)
            cells = raw.setdefault(backend, {t: {c: [] for c in CONCURRENCY} for t in TARGETS})
            for _ in range(args.repeat):  # interleave targets so drift hits all of them alike
                for conns in CONCURRENCY:
                    for target in TARGETS:
                        cells[target][conns].append(wrk(urls[target], conns, args.duration))

    med = {b: {t: {c: median_result(raw[b][t][c]) for c in CONCURRENCY} for t in TARGETS} for b in BACKENDS}
    print(f"\n{'backend':8} {'conns':>5} {'target':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>9} {'errors':>7}"
          f" {'x direct':>9}")
    for b in BACKENDS:
        for c in CONCURRENCY:
            base = med[b]["direct"][c].rps
            for t in TARGETS:
                r = med[b][t][c]
                ratio = r.rps / base if base else 0.0
                print(f"{b:8} {c:5} {t:8} {r.rps:9.1f} {r.p50_ms:8.2f} {r.p99_ms:9.2f} {r.errors:7} {ratio:8.2f}x")
    print()
    if "slow" in med:
        slow = med["slow"]
        gw, naive = slow["gateway"][200].rps / slow["direct"][200].rps, slow["naive"][200].rps / slow["direct"][200].rps
        print(f"slow backend (0.5 s) @ 200 connections: gateway/direct = {gw:.2f}x (target >= 0.9x), "
              f"naive/direct = {naive:.2f}x")
    if "fast" in med:
        fast = med["fast"]
        print(f"fast backend @ 64 connections: gateway/direct = {fast['gateway'][64].rps / fast['direct'][64].rps:.2f}x"
              f", gateway/naive = {fast['gateway'][64].rps / max(fast['naive'][64].rps, 0.001):.2f}x")
    if baseline is not None:
        for b in BACKENDS:
            ratios = ", ".join(
                f"{c}: {med[b]['gateway'][c].rps / max(med[b]['baseline'][c].rps, 0.001):.2f}x" for c in CONCURRENCY
            )
            print(f"{b} backend, gateway / baseline ({args.baseline}) req/s by connections: {ratios}")
    if metrics_off is not None:
        for b in BACKENDS:
            ratios = ", ".join(
                f"{c}: {med[b]['gateway'][c].rps / max(med[b]['nometrics'][c].rps, 0.001):.3f}x" for c in CONCURRENCY
            )
            print(f"{b} backend, metrics on / metrics off req/s by connections: {ratios}")
    if args.json:
        args.json.write_text(json.dumps(
            {b: {t: {c: [r.__dict__ for r in raw[b][t][c]] for c in CONCURRENCY} for t in TARGETS} for b in BACKENDS},
            indent=2,
        ))


if __name__ == "__main__":
    main()
