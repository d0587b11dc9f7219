"""The storage interface for conversation logs and chat turns, and what both backends share."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.fields import iso


@dataclass(frozen=True)
class NewConversation:
    session_id: str
    messages: list[dict[str, str]]
    metadata: dict[str, Any]
    idempotency_key: str | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def body_hash(self) -> str:
        canonical = json.dumps(
            {"sessionId": self.session_id, "messages": self.messages, "metadata": self.metadata},
            sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChatTurnRecord:
    session_id: str
    request_id: str
    message: str
    answer: str | None
    sources: list[dict[str, str]]
    upstream_ms: float | None
    status: int
    error_code: str | None = None
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Conversation:
    id: str
    session_id: str
    created_at: float
    duration: float | None
    source: str | None
    message_count: int
    metadata: dict[str, Any]
    messages: list[dict[str, str]] | None = None  # only when fetched one by one

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "conversationId": self.id,
            "sessionId": self.session_id,
            "createdAt": iso(self.created_at, milliseconds=True),
            "messageCount": self.message_count,
            "metadata": self.metadata,
        }
        if self.messages is not None:
            data["messages"] = self.messages
        return data


@dataclass(frozen=True)
class Page:
    items: list[Conversation]
    next_cursor: str | None


@dataclass(frozen=True)
class Stats:
    days: list[dict[str, Any]]  # {"day", "conversations", "turns"}
    conversations: int
    average_duration: float | None
    average_messages: float | None
    turns: int
    backend_errors: int
    top_sources: list[dict[str, Any]]  # {"title", "url", "citations"}
    conversation_seconds: float = 0.0  # the sum of the logged conversations' metadata.duration
    answered: int = 0  # turns the backend answered (status 200) with a measured latency
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # {"p50", "p90", "p99"}, nearest rank
    top_questions: list[dict[str, Any]] = field(default_factory=list)  # {"question", "count"}, normalised

    @property
    def backend_error_rate(self) -> float | None:
        return None if not self.turns else self.backend_errors / self.turns

    def to_json(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "conversations": self.conversations,
            "averageDuration": self.average_duration,
            "averageMessages": self.average_messages,
            "turns": self.turns,
            "backendErrors": self.backend_errors,
            "backendErrorRate": self.backend_error_rate,
            "topSources": self.top_sources,
            # Durations near the largest double add up past it: null rather than Infinity (not JSON).
            "conversationMinutes": round(self.conversation_seconds / 60, 2)
            if math.isfinite(self.conversation_seconds) else None,
            "answeredTurns": self.answered,
            "latencyMs": self.latency_ms,
            "topQuestions": self.top_questions,
        }


class Store(Protocol):
    """One interface, two real backends (SQLite, PostgreSQL)."""

    kind: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def record_conversation(self, conversation: NewConversation) -> str:
        """Store durably and return its id; the same idempotency key returns the first id."""
        ...
    async def record_turns(self, turns: list[ChatTurnRecord]) -> None: ...
    async def list_conversations(
        self,
        session_id: str | None,
        since: float | None,
        until: float | None,
        limit: int,
        cursor: str | None,
        text: str | None = None,
    ) -> Page: ...
    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...
    def export(self, kind: str, since: float | None, until: float | None) -> AsyncIterator[dict[str, Any]]: ...
    async def stats(self, since: float | None, until: float | None, top: int = 10) -> Stats: ...
    async def purge(self, before: float) -> tuple[int, int]:
        """Delete conversations and turns created before ``before``; return the counts."""
        ...


def new_conversation_id() -> str:
    return f"conv-{uuid.uuid4().hex}"



def encode_cursor(created_at: float, conversation_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at!r}|{conversation_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raises ValueError for anything that is not a cursor we issued."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created, _, conversation_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    if not conversation_id.startswith("conv-"):
        raise ValueError("not a cursor")
    return float(created), conversation_id


def conversation_row(row: Any, with_messages: bool) -> Conversation:
    return Conversation(
        id=row["id"],
        session_id=row["session_id"],
        created_at=row["created_at"],
        duration=row["duration"],
        source=row["source"],
        message_count=row["message_count"],
        metadata=json.loads(row["metadata"]),
        messages=json.loads(row["messages"]) if with_messages else None,
    )


def turn_json(row: Any) -> dict[str, Any]:
    return {
        "type": "turn",
        "createdAt": iso(row["created_at"], milliseconds=True),
        "sessionId": row["session_id"],
        "requestId": row["request_id"],
        "message": row["message"],
        "answer": row["answer"],
        "sources": json.loads(row["sources"]),
        "upstreamMs": row["upstream_ms"],
        "status": row["status"],
        "errorCode": row["error_code"],
    }


def conversation_json(row: Any) -> dict[str, Any]:
    return {"type": "conversation", **conversation_row(row, with_messages=True).to_json()}


def top_sources(rows: list[Any], top: int) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        for source in json.loads(row["sources"]):
            key = (str(source.get("title", "")), str(source.get("url", "")))
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [{"title": t, "url": u, "citations": n} for (t, u), n in ranked]


def turn_rows(turns: list[ChatTurnRecord]) -> list[tuple[Any, ...]]:
    """Chat turns as INSERT_TURN parameter tuples."""
    return [
        (t.created_at, t.session_id, t.request_id, t.message, t.answer, json.dumps(t.sources, ensure_ascii=False),
         t.upstream_ms, t.status, t.error_code)
        for t in turns
    ]
