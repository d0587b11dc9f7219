"""SQLite, the embedded default: one file, WAL, durable commits, group commit on a writer thread.

Writes never run on the event loop. Requests hand their write to a single
writer thread through a queue; the thread takes everything that is waiting
(up to ``BATCH_MAX``), runs it in one transaction (each write in its own
savepoint, so one failing write does not undo the others) and commits once
with ``synchronous=FULL``: the WAL is fsynced before any of those requests is
told its write succeeded. Under load one fsync covers hundreds of writes; at
rest a write costs one fsync, as it must. Reads use short-lived connections
in worker threads; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gateway.errors import DatabaseNotFound, IdempotencyKeyReused, StorageUnavailable
from gateway.storage import sql
from gateway.storage.base import (
    ChatTurnRecord,
    NewConversation,
    new_conversation_id,
    turn_rows,
)
from gateway.storage.reads import SQLReads

BATCH_MAX = 1000
Op = Callable[[sqlite3.Connection], Any]


def _connect(path: Path, create: bool = True) -> sqlite3.Connection:
    # mode=rw opens an existing file and never creates one, even if it vanished since open() looked.
    target = str(path) if create else f"file:{quote(str(path))}?mode=rw"
    conn = sqlite3.connect(target, uri=not create, isolation_level=None, check_same_thread=False, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


class SQLiteStore(SQLReads):
    kind = "sqlite"
    dialect = "sqlite"

    def __init__(self, path: str | Path, create: bool = True) -> None:
        # Resolved once, against the working directory of the process opening the store.
        self.path = Path(os.path.abspath(path))
        self.create = create
        self._queue: queue.SimpleQueue[tuple[Op, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def open(self) -> None:
        if self.create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise DatabaseNotFound(self.path)
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._writer, args=(ready,), name="sqlite-writer", daemon=True)
        self._thread.start()
        await ready

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)  # processed after every write queued before it
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # -- the writer thread ---------------------------------------------------

    def _writer(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            conn = _connect(self.path, self.create)
            if not self.create and not _has_schema(conn):
                conn.close()
                raise DatabaseNotFound(self.path, f"{self.path} is not a gateway database (it has no gateway tables)")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            _migrate(conn)
        except sqlite3.Error as exc:
            failure = StorageUnavailable(detail=f"cannot open SQLite database {self.path}: {exc}")
            self._loop.call_soon_threadsafe(_settle, ready, failure)
            return
        except Exception as exc:
            self._loop.call_soon_threadsafe(_settle, ready, exc)
            return
        self._loop.call_soon_threadsafe(_settle, ready, None)
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        assert self._loop is not None
        results: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    results.append(op(conn))
                    conn.execute("RELEASE op")
                except (IdempotencyKeyReused, sqlite3.IntegrityError) as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append(exc)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StorageUnavailable(detail=f"SQLite write failed: {exc}")
            results = [failure] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            self._loop.call_soon_threadsafe(_settle, future, result)

    async def _write(self, op: Op) -> Any:
        if self._thread is None or self._loop is None:
            raise StorageUnavailable(detail="SQLite store is not open")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((op, future))
        return await future

    async def _fetch(self, query: str, args: list[object]) -> list[Any]:
        rows: list[Any] = await self._read(_fetch_all(query, args))
        return rows

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def run() -> Any:
            conn = _connect(self.path, self.create)
            try:
                return fn(conn)
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StorageUnavailable(detail=f"SQLite read failed: {exc}") from None

    # -- the Store interface ---------------------------------------------------

    async def ping(self) -> bool:
        if self._thread is None or not self._thread.is_alive():
            return False
        try:
            await self._read(lambda c: c.execute("SELECT 1").fetchone())
        except StorageUnavailable:
            return False
        return True

    async def record_conversation(self, conversation: NewConversation) -> str:
        body_hash = conversation.body_hash
        new_id = new_conversation_id()
        meta = conversation.metadata

        def op(conn: sqlite3.Connection) -> str:
            if conversation.idempotency_key is not None:
                row = conn.execute(sql.FIND_BY_KEY, (conversation.idempotency_key,)).fetchone()
                if row is not None:
                    if row["body_hash"] != body_hash:
                        raise IdempotencyKeyReused()
                    return str(row["id"])
            conn.execute(
                sql.INSERT_CONVERSATION,
                (
                    new_id, conversation.idempotency_key, body_hash, conversation.session_id, conversation.created_at,
                    meta.get("duration"), meta.get("source"), len(conversation.messages),
                    json.dumps(conversation.messages, ensure_ascii=False), json.dumps(meta, ensure_ascii=False),
                ),
            )
            return new_id

        return str(await self._write(op))

    async def record_turns(self, turns: list[ChatTurnRecord]) -> None:
        rows = turn_rows(turns)
        await self._write(lambda conn: conn.executemany(sql.INSERT_TURN, rows))

    async def purge(self, before: float) -> tuple[int, int]:
        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            conversations = conn.execute(sql.PURGE[0], (before,)).rowcount
            turns = conn.execute(sql.PURGE[1], (before,)).rowcount
            return conversations, turns

        result: tuple[int, int] = await self._write(op)
        return result


def _fetch_all(query: str, args: list[object]) -> Callable[[sqlite3.Connection], list[sqlite3.Row]]:
    return lambda conn: conn.execute(query, args).fetchall()


def _has_schema(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
    return row is not None


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute(sql.SCHEMA_TABLE)
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for version, statements in sql.MIGRATIONS["sqlite"]:
        if version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, time.time()))
        conn.execute("COMMIT")


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
