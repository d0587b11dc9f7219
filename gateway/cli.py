"""Command line: ``avatar-gateway serve``, ``check``, ``try`` and the analytics commands."""

from __future__ import annotations

import argparse
import os
import sys

from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.settings import CONFIG_ENV, DEFAULT_CONFIG_PATH, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avatar-gateway", description="SmarterAvatar hybrid-integration gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="validate a config file and exit (non-zero on error)")
    check.add_argument("config", nargs="?", help=f"config file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH})")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"config file (default: ${CONFIG_ENV} or the bundled config/gateway.yaml)")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    serve.add_argument("--workers", type=int, default=1)

    export = commands.add_parser("export", help="export conversations or chat turns as JSON Lines or CSV")
    export.add_argument("--config", help="config file (its storage.url, or DATABASE_URL, is read)")
    export.add_argument("--kind", choices=("conversations", "turns"), default="conversations")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--from", dest="since", help="ISO-8601 date or time (inclusive, UTC unless given)")
    export.add_argument("--to", dest="until", help="ISO-8601 date or time (exclusive)")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")

    stats = commands.add_parser("stats", help="summary statistics of conversations and chat turns")
    stats.add_argument("--config")
    stats.add_argument("--from", dest="since")
    stats.add_argument("--to", dest="until")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")

    purge = commands.add_parser("purge", help="delete conversations and turns older than the retention period")
    purge.add_argument("--config")
    purge.add_argument("--days", type=int, help="override storage.retention_days")

    attempt = commands.add_parser(
        "try", help="send one question through a chat route's mapping to its backend and show each step"
    )
    attempt.add_argument("question")
    attempt.add_argument("--config", help=f"config file (default: ${CONFIG_ENV} or the bundled config/gateway.yaml)")
    attempt.add_argument("--route", default="/api/chat", help="the chat route's path (default: /api/chat)")
    attempt.add_argument("--session", help="sessionId (default: a new one)")
    attempt.add_argument("--history", help="JSON array of earlier messages, each {role, content}")
    attempt.add_argument("--context", help="JSON object of client context, e.g. {\"locale\": \"de\"}")

    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(_summary(settings))
        return 0
    if args.command == "try":
        from gateway.trial import run_trial

        return run_trial(args, settings)
    if args.command in ("export", "stats", "purge"):
        from gateway.analytics import run_analytics

        return run_analytics(args, settings)
    return _serve(args, settings)


def _summary(settings: Settings) -> str:
    lines = [f"{settings.source}: OK"]
    for route in settings.routes:
        limits = "; ".join(f"{r.text} per {r.key}" for r in route.rate_limits) or "no rate limit"
        target = "-> upstream" if route.upstream else "served locally"
        lines.append(f"  {','.join(route.methods):5} {route.path:28} {route.handler:14} {target:15} {limits}")
    return "\n".join(lines)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers > 1 and settings.rate_limit.storage_url.removeprefix("async+").startswith("memory"):
        print(
            f"warning: {args.workers} workers with rate_limit.storage memory:// each count separately, so clients get "
            f"{args.workers}x the configured limits; use redis:// (RATE_LIMIT_STORAGE_URL) to share them",
            file=sys.stderr,
        )
    os.environ[CONFIG_ENV] = settings.source
    if args.workers > 1 and settings.metrics.enabled:
        from gateway.metrics import prepare_multiprocess

        prepare_multiprocess()  # one scrape sees every worker
    # SIGHUP reloads the config, SIGTERM drains: gateway/lifecycle.py.
    from gateway.lifecycle import serve

    return serve(settings, args.host, args.port, args.workers)
