"""PostgreSQL for deployments with several gateway replicas, through asyncpg.

A pool opened in the app's lifespan; each conversation log is one
transaction, acknowledged after COMMIT (PostgreSQL's default
``synchronous_commit = on`` flushes the WAL first, and it groups concurrent
commits into one flush itself). Idempotency rides on a UNIQUE column and
``INSERT ... ON CONFLICT DO NOTHING``, so concurrent retries on different
replicas still produce one row. Migrations take an advisory lock, so replicas
starting together migrate once.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg

from gateway.errors import IdempotencyKeyReused, StorageUnavailable
from gateway.storage import sql
from gateway.storage.base import (
    ChatTurnRecord,
    NewConversation,
    new_conversation_id,
    turn_rows,
)
from gateway.storage.reads import SQLReads

MIGRATION_LOCK = 7_202_611  # an arbitrary advisory-lock key for schema migrations
ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
Q = sql.numbered


class PostgresStore(SQLReads):
    kind = "postgres"
    dialect = "postgres"

    def __init__(self, dsn: str, min_size: int = 2, max_size: int = 20, timeout: float = 5.0) -> None:
        self._dsn = dsn
        self.min_size, self.max_size, self.timeout = min_size, max_size, timeout
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return "PostgresStore(<dsn hidden>)"

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self.min_size, max_size=self.max_size, timeout=self.timeout,
                command_timeout=self.timeout,
            )
            async with self._pool.acquire() as conn:
                await _migrate(conn)
        except ERRORS as exc:
            raise StorageUnavailable(detail=f"PostgreSQL is unavailable: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _acquire(self) -> Any:
        if self._pool is None:
            raise StorageUnavailable(detail="PostgreSQL store is not open")
        return self._pool.acquire(timeout=self.timeout)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout), self._acquire() as conn:
                await conn.fetchval("SELECT 1")
        except (*ERRORS, StorageUnavailable):
            return False
        return True

    async def record_conversation(self, conversation: NewConversation) -> str:
        meta = conversation.metadata
        body_hash = conversation.body_hash
        try:
            async with self._acquire() as conn, conn.transaction():
                inserted = await conn.fetchval(
                    Q(sql.INSERT_CONVERSATION) + " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                    new_conversation_id(), conversation.idempotency_key, body_hash, conversation.session_id,
                    conversation.created_at, _float(meta.get("duration")), _str(meta.get("source")),
                    len(conversation.messages), json.dumps(conversation.messages, ensure_ascii=False),
                    json.dumps(meta, ensure_ascii=False),
                )
                if inserted is not None:
                    return str(inserted)
                row = await conn.fetchrow(Q(sql.FIND_BY_KEY), conversation.idempotency_key)
        except ERRORS as exc:
            raise StorageUnavailable(detail=f"PostgreSQL write failed: {type(exc).__name__}") from None
        if row is None or row["body_hash"] != body_hash:
            raise IdempotencyKeyReused()
        return str(row["id"])

    async def record_turns(self, turns: list[ChatTurnRecord]) -> None:
        rows = turn_rows(turns)
        try:
            async with self._acquire() as conn:
                await conn.executemany(Q(sql.INSERT_TURN), rows)
        except ERRORS as exc:
            raise StorageUnavailable(detail=f"PostgreSQL write failed: {type(exc).__name__}") from None

    async def _fetch(self, query: str, args: list[object]) -> list[Any]:
        try:
            async with self._acquire() as conn:
                return list(await conn.fetch(Q(query), *args))
        except ERRORS as exc:
            raise StorageUnavailable(detail=f"PostgreSQL read failed: {type(exc).__name__}") from None

    async def purge(self, before: float) -> tuple[int, int]:
        try:
            async with self._acquire() as conn, conn.transaction():
                conversations = await conn.execute(Q(sql.PURGE[0]), before)
                turns = await conn.execute(Q(sql.PURGE[1]), before)
        except ERRORS as exc:
            raise StorageUnavailable(detail=f"PostgreSQL purge failed: {type(exc).__name__}") from None
        return int(conversations.split()[-1]), int(turns.split()[-1])


async def _migrate(conn: Any) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(sql.SCHEMA_TABLE)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, statements in sql.MIGRATIONS["postgres"]:
            if version in done:
                continue
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", version, time.time()
            )


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
