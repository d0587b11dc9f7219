"""The read side both SQL backends share: listing, fetching, exporting, statistics.

A backend provides ``_fetch(query, args)`` (``?`` placeholders) and ``dialect``;
everything else is the same SQL and the same Python for SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from gateway.storage import sql
from gateway.storage.base import (
    Conversation,
    Page,
    Stats,
    conversation_json,
    conversation_row,
    decode_cursor,
    encode_cursor,
    top_sources,
    turn_json,
)

EXPORT_CHUNK = 500
PERCENTILES = (50, 90, 99)


class SQLReads:
    dialect: str

    async def _fetch(self, query: str, args: list[object]) -> list[Any]:
        raise NotImplementedError

    async def list_conversations(
        self,
        session_id: str | None,
        since: float | None,
        until: float | None,
        limit: int,
        cursor: str | None,
        text: str | None = None,
    ) -> Page:
        after = decode_cursor(cursor) if cursor else None
        query, args = sql.list_query(session_id, since, until, limit, after, text)
        rows = await self._fetch(query, args)
        items = [conversation_row(r, with_messages=False) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor(items[-1].created_at, items[-1].id) if more and items else None)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        rows = await self._fetch(sql.GET_CONVERSATION, [conversation_id])
        return conversation_row(rows[0], with_messages=True) if rows else None

    async def export(self, kind: str, since: float | None, until: float | None) -> AsyncIterator[dict[str, Any]]:
        """Oldest first, read in keyset chunks so an export of any size runs in bounded memory."""
        after: tuple[float, Any] | None = None
        render = conversation_json if kind == "conversations" else turn_json
        while True:
            query, args = sql.export_query(kind, since, until, after, EXPORT_CHUNK)
            rows = await self._fetch(query, args)
            for row in rows:
                yield render(row)
            if len(rows) < EXPORT_CHUNK:
                return
            after = (rows[-1]["created_at"], rows[-1]["id"])

    async def stats(self, since: float | None, until: float | None, top: int = 10) -> Stats:
        clauses, args = sql.time_range(since, until)
        w = sql.where(clauses)
        conv = (await self._fetch(sql.CONVERSATION_TOTALS + w, args))[0]
        turns = (await self._fetch(sql.TURN_TOTALS + w, args))[0]
        days: dict[str, dict[str, Any]] = {}
        for table, name in (("conversations", "conversations"), ("chat_turns", "turns")):
            query, qargs = sql.per_day(self.dialect, table, since, until)
            for row in await self._fetch(query, qargs):
                days.setdefault(row["day"], {"day": row["day"], "conversations": 0, "turns": 0})[name] = row["n"]
        cited = await self._fetch(f"SELECT sources FROM chat_turns{w}", args)
        query, qargs = sql.top_questions(self.dialect, since, until, top)
        questions = [{"question": r["question"], "count": r["n"]} for r in await self._fetch(query, qargs)]
        answered, latency = await self._latency(since, until)
        return Stats(
            days=[days[d] for d in sorted(days)],
            conversations=conv["n"],
            average_duration=None if conv["d"] is None else float(conv["d"]),
            average_messages=None if conv["m"] is None else float(conv["m"]),
            turns=turns["n"],
            backend_errors=int(turns["e"]),
            top_sources=top_sources(cited, top),
            conversation_seconds=float(conv["t"] or 0),
            answered=answered,
            latency_ms=latency,
            top_questions=questions,
        )

    async def _latency(self, since: float | None, until: float | None) -> tuple[int, dict[str, float | None]]:
        """Nearest-rank percentiles (the smallest value with at least p% of values at or below it),
        one read each: the same SQL on both dialects, no rows brought into Python."""
        query, args = sql.answered_count(since, until)
        n = int((await self._fetch(query, args))[0]["n"])
        latency: dict[str, float | None] = {}
        for p in PERCENTILES:
            if n == 0:
                latency[f"p{p}"] = None
                continue
            query, args = sql.latency_at(since, until, max(math.ceil(p / 100 * n), 1) - 1)
            latency[f"p{p}"] = float((await self._fetch(query, args))[0]["v"])
        return n, latency
