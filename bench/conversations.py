"""Durable conversation logs per second, SQLite and PostgreSQL, 64 concurrent clients.

Each acknowledged POST /api/conversations/log is committed (SQLite: WAL fsynced with
synchronous=FULL; PostgreSQL: synchronous_commit on) before the answer. The baseline,
measured in the same run against the same gateway process, is GET /api/health with no
providers configured: the gateway's cheapest route, i.e. everything but the storage.

    .venv/bin/python bench/conversations.py [--duration 5] [--repeat 3]

Starts its own PostgreSQL (Debian's package) and gateway processes on loopback.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # tests.conftest's TestClient import warns about httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lib import free_port, median_result, uvicorn, wrk  # noqa: E402
from tests.pg_service import Postgres  # noqa: E402

LOG_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local body = '{"sessionId": "bench-' .. counter .. '", "messages": [{"role": "user", "content": "Do you ship to ' ..
    'Canada?"}, {"role": "assistant", "content": "Yes, in 7 to 14 business days."}], ' ..
    '"metadata": {"duration": 42, "source": "bench"}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""
HEALTH_SCRIPT = 'wrk.method = "GET"\n'

CONFIG = """
server: {{log_format: json, log_level: warning}}
storage: {{url: "{url}", record_chat_turns: false}}
routes:
  - path: /api/conversations/log
    handler: conversations
    rate_limit: "off"
  - path: /api/health
    handler: health
    rate_limit: "off"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    print(f"# bench/conversations.py  {args.connections} connections, {args.duration:g}s x {args.repeat}, medians")
    pg = Postgres()
    pg.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stores = {"sqlite": f"sqlite:///{tmp}/bench.db", "postgres": pg.create_database("bench")}
            header = f"{'storage':9} {'route':22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
            print(f"\n{header} {'x health':>9}")
            for name, url in stores.items():
                config = Path(tmp) / f"{name}.yaml"
                config.write_text(CONFIG.format(url=url))
                port = free_port()
                with uvicorn("gateway.app:create_app", port, env={"GATEWAY_CONFIG": str(config)}, factory=True):
                    base = f"http://127.0.0.1:{port}"
                    wrk(f"{base}/api/conversations/log", 16, 1.0, LOG_SCRIPT)
                    health = median_result(
                        [wrk(f"{base}/api/health", args.connections, args.duration, HEALTH_SCRIPT)
                         for _ in range(args.repeat)]
                    )
                    logs = median_result(
                        [wrk(f"{base}/api/conversations/log", args.connections, args.duration, LOG_SCRIPT)
                         for _ in range(args.repeat)]
                    )
                for route, r in (("GET /api/health", health), ("POST conversations/log", logs)):
                    print(f"{name:9} {route:22} {r.rps:9.1f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7} "
                          f"{r.rps / health.rps:8.2f}x")
            print("\ntarget: >= 2000 durable logs/s on SQLite")
    finally:
        pg.cleanup()


if __name__ == "__main__":
    main()
