"""The analytics commands: ``avatar-gateway export | stats | purge``.

They open the configured store directly (no running gateway needed), so they
work against the SQLite file of a stopped gateway or a shared PostgreSQL. They never
create a database: a SQLite file that is not there is an error naming the path looked
at, since a relative ``storage.url`` resolves against the current folder.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import IO, Any

from gateway.errors import DatabaseNotFound, StorageUnavailable
from gateway.fields import parse_iso
from gateway.settings import Settings
from gateway.storage import Store, open_store, sqlite_path

CSV_COLUMNS = {
    "conversations": ["conversationId", "sessionId", "createdAt", "messageCount", "metadata", "messages"],
    "turns": [
        "createdAt", "sessionId", "requestId", "message", "answer", "sources", "upstreamMs", "status", "errorCode",
    ],
}


def parse_time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise SystemExit(f"error: --{name} {value!r} is not an ISO-8601 date or time") from None


def run_analytics(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_run(args, settings))
    except DatabaseNotFound as exc:
        print(f"error: {exc.detail} ({_looked_where(settings.storage.url)})", file=sys.stderr)
        return 1
    except StorageUnavailable as exc:
        print(f"error: {exc.detail or exc.message}", file=sys.stderr)
        return 1


def _looked_where(url: str) -> str:
    if os.path.isabs(sqlite_path(url)):
        return f"storage.url {url}"
    return (
        f"storage.url {url} is relative to the current folder; run this where the gateway runs "
        "or set DATABASE_URL=sqlite:////absolute/path/gateway.db"
    )


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    days = getattr(args, "days", None) or settings.storage.retention_days
    if args.command == "purge" and (not days or days <= 0):
        print("error: no retention period: set storage.retention_days or pass --days N", file=sys.stderr)
        return 2
    store = open_store(settings.storage.url, pool_size=2, create=False)
    await store.open()
    try:
        if args.command == "export":
            since, until = parse_time(args.since, "from"), parse_time(args.until, "to")
            if args.output:
                with open(args.output, "w", encoding="utf-8", newline="") as out:
                    count = await export(store, args.kind, args.format, since, until, out)
            else:
                count = await export(store, args.kind, args.format, since, until, sys.stdout)
            print(f"exported {count} {args.kind}", file=sys.stderr)
        elif args.command == "stats":
            stats = await store.stats(parse_time(args.since, "from"), parse_time(args.until, "to"))
            print(json.dumps(stats.to_json(), indent=2) if args.json else render_stats(stats.to_json()))
        else:
            assert days is not None
            conversations, turns = await store.purge(time.time() - days * 86400)
            print(f"purged {conversations} conversations and {turns} chat turns older than {days} days")
    finally:
        await store.close()
    return 0


async def export(store: Store, kind: str, fmt: str, since: float | None, until: float | None, out: IO[str]) -> int:
    count = 0
    async for chunk in export_chunks(store, kind, fmt, since, until):
        out.write(chunk)
        count += 1
    return count - (fmt == "csv")  # the CSV header is not a record


async def export_chunks(
    store: Store, kind: str, fmt: str, since: float | None, until: float | None
) -> AsyncIterator[str]:
    """The export as text, one record per chunk (after the CSV header): for a file here,
    for a download from the admin API (``GET /api/admin/export``)."""
    buffer = io.StringIO()
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS[kind], extrasaction="ignore")
        writer.writeheader()
        yield _drain(buffer)
    async for record in store.export(kind, since, until):
        record.pop("type", None)
        if writer is None:
            yield json.dumps(record, ensure_ascii=False) + "\n"
        else:
            writer.writerow({k: _cell(v) for k, v in record.items()})
            yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def render_stats(stats: dict[str, Any]) -> str:
    def fmt(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"conversations: {stats['conversations']}  (average duration {fmt(stats['averageDuration'])} s, "
        f"average messages {fmt(stats['averageMessages'])})",
        f"chat turns:    {stats['turns']}  (backend errors {stats['backendErrors']}, "
        f"error rate {fmt(None if stats['backendErrorRate'] is None else stats['backendErrorRate'] * 100)}%)",
        "",
        f"{'day':10}  {'conversations':>13}  {'turns':>7}",
        *(f"{d['day']:10}  {d['conversations']:13}  {d['turns']:7}" for d in stats["days"]),
        "",
        "most cited sources:",
        *(f"  {s['citations']:5}  {s['title']}  <{s['url']}>" for s in stats["topSources"]),
    ]
    return "\n".join(lines)
