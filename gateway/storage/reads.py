"""The read side both SQL backends share: listing, fetching, exporting, statistics.

A backend provides ``_fetch(query, args)`` (``?`` placeholders) and ``dialect``;
everything else is the same SQL and the same Python for SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from gateway.storage import sql
from gateway.storage.base import (
    Conversation,
    Page,
    Stats,
    conversation_row,
    decode_cursor,
    encode_cursor,
    top_sources,
    turn_json,
)

EXPORT_CHUNK = 500
PERCENTILES = (50, 90, 99)
_LARGEST_DOUBLE = 1.7976931348623157e308


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
        items = [_conversation(r, with_messages=False) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor(items[-1].created_at, items[-1].id) if more and items else None)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        rows = await self._fetch(sql.GET_CONVERSATION, [conversation_id])
        return _conversation(rows[0], with_messages=True) if rows else None

    async def export(self, kind: str, since: float | None, until: float | None) -> AsyncIterator[dict[str, Any]]:
        """Oldest first, read in keyset chunks so an export of any size runs in bounded memory."""
        after: tuple[float, Any] | None = None
        render = _conversation_json if kind == "conversations" else _turn_json
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
        conv = (await self._fetch(sql.conversation_totals(self.dialect) + w, args))[0]
        average_duration = None if conv["d"] is None else float(conv["d"])
        total_duration = float(conv["t"] or 0)
        if average_duration is not None and not math.isfinite(average_duration):
            # An Infinity stored by an older version would swallow the average and the sum: leave it out.
            finite = sql.where([*clauses, "duration < ?", "duration > ?"])
            query = sql.duration_totals(self.dialect) + finite
            row = (await self._fetch(query, [*args, _LARGEST_DOUBLE, -_LARGEST_DOUBLE]))[0]
            average_duration = None if row["d"] is None else float(row["d"])
            total_duration = float(row["t"] or 0)
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
        if average_duration is not None and not math.isfinite(average_duration):
            average_duration = None  # finite durations whose sum overflows a double
        return Stats(
            days=[days[d] for d in sorted(days)],
            conversations=conv["n"],
            average_duration=average_duration,
            average_messages=None if conv["m"] is None else float(conv["m"]),
            turns=turns["n"],
            backend_errors=int(turns["e"]),
            top_sources=top_sources(cited, top),
            conversation_seconds=total_duration,
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


# Versions before issue 11 accepted numbers beyond a double (``1e999``) and stored them as
# ``Infinity``, which is not JSON: such values are read as null, so one old row cannot make
# the admin API answer 500 or an export write a line that is not JSON.


def _non_json(text: str) -> bool:
    return "Infinity" in text or "NaN" in text  # rare; a false positive only costs a second parse


def _as_json(text: str) -> Any:
    return json.loads(text, parse_constant=lambda _: None)


def _conversation(row: Any, with_messages: bool) -> Conversation:
    conversation = conversation_row(row, with_messages)
    if _non_json(row["metadata"]):
        conversation = replace(conversation, metadata=_as_json(row["metadata"]))
    return conversation


def _conversation_json(row: Any) -> dict[str, Any]:
    return {"type": "conversation", **_conversation(row, with_messages=True).to_json()}


def _turn_json(row: Any) -> dict[str, Any]:
    record = turn_json(row)
    if _non_json(row["sources"]):
        record["sources"] = _as_json(row["sources"])
    return record
