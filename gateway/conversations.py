"""POST /api/conversations/log, chat-turn recording, and the store's lifecycle.

Durability: a conversation log is answered ``{success: true, conversationId}``
only after its transaction has committed (SQLite: fsynced WAL; PostgreSQL:
COMMIT with synchronous_commit on). A retry carrying the same
``Idempotency-Key`` gets the same conversationId and stores nothing twice;
the same key with a different body is refused (422 IDEMPOTENCY_KEY_REUSED).

Chat turns are best effort by design: recorded write-behind through a bounded
queue so a chat answer never waits for the database; when the queue is full
a turn is dropped and counted (``turns_dropped`` in the log), never blocking
or failing the chat. The queue is flushed on shutdown.

The store opens in the lifespan (``open_conversations``); while the database
is down the gateway still starts and chats, and keeps retrying in the
background. The admin read API is in ``admin.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway import metrics
from gateway.body import json_type, read_json_object
from gateway.errors import InvalidRequest, StorageUnavailable
from gateway.fields import identifier, identifier_rule, is_identifier, message_list
from gateway.health import CachedProbe
from gateway.settings import Route, Settings, StorageSettings
from gateway.storage import NewConversation, Store, open_store
from gateway.storage.base import ChatTurnRecord

log = structlog.get_logger("gateway.conversations")

ROLES = ("user", "assistant", "system")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# International or national phone numbers: 7+ digits with optional +, spaces, dots, dashes, parentheses.
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d\s().\-]{5,}\d(?!\w)")


def redact(text: str, settings: StorageSettings) -> str:
    if settings.redact_emails:
        text = _EMAIL.sub("[email]", text)
    if settings.redact_phones:
        text = _PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
    return text


def validate_log(data: dict[str, Any], settings: StorageSettings, idempotency_key: str | None) -> NewConversation:
    session_id = identifier(data, "sessionId")
    if "messages" not in data:
        raise InvalidRequest("Missing required field: messages")
    if data["messages"] == []:
        raise InvalidRequest("Field 'messages' must not be empty")
    messages = message_list(data["messages"], "messages", ROLES, settings.max_messages, settings.max_message_chars)
    clean = [{"role": m["role"], "content": redact(m["content"], settings)} for m in messages]

    metadata = data.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidRequest(f"Field 'metadata' must be an object, got {json_type(metadata)}")
    if "duration" in metadata:
        duration = metadata["duration"]
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
            raise InvalidRequest("Field 'metadata.duration' must be a non-negative number")
    if "source" in metadata and not isinstance(metadata["source"], str):
        raise InvalidRequest(f"Field 'metadata.source' must be a string, got {json_type(metadata['source'])}")
    if len(json.dumps(metadata, ensure_ascii=False).encode()) > settings.max_metadata_bytes:
        raise InvalidRequest(f"Field 'metadata' is larger than {settings.max_metadata_bytes} bytes")
    return NewConversation(session_id=session_id, messages=clean, metadata=metadata, idempotency_key=idempotency_key)


def store_of(request: Request) -> Store:
    """The open conversation store, or 503 while it is not (yet) reachable."""
    conversations: Conversations | None = request.state.conversations
    if conversations is None or conversations.store is None:
        raise StorageUnavailable(detail="the store is not open")
    return conversations.store


async def log_conversation(request: Request, route: Route) -> JSONResponse:
    settings: Settings = request.state.settings
    data = await read_json_object(request, settings.server.max_body_bytes)
    key = request.headers.get("idempotency-key")
    if key is not None and not is_identifier(key):
        raise InvalidRequest(f"Header {identifier_rule('Idempotency-Key')}")
    conversation = validate_log(data, settings.storage, key)
    conversation_id = await store_of(request).record_conversation(conversation)
    return JSONResponse({"success": True, "conversationId": conversation_id})


# -- chat turns, write-behind -------------------------------------------------------


class TurnRecorder:
    """A bounded queue drained by one task into the store, in batches.

    The drain lingers ``LINGER`` seconds after the first turn of a batch, so that under
    load one transaction (one hop to the writer thread, one commit, one wake-up of this
    task) takes the turns of many requests rather than of a few (bench/README.md, issue 17).
    Nobody waits for a turn, so the delay costs nothing; shutdown writes what is held."""

    LINGER = 0.05

    def __init__(self, store: Store, settings: StorageSettings) -> None:
        self.store = store
        self.settings = settings
        self.queue: asyncio.Queue[ChatTurnRecord] = asyncio.Queue(settings.turn_queue_size)
        self.dropped = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self._held: list[ChatTurnRecord] = []  # taken off the queue, not yet handed to a write

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="turn-recorder")

    def record(self, turn: ChatTurnRecord) -> None:
        if self.settings.redact_emails or self.settings.redact_phones:
            turn = ChatTurnRecord(**{**turn.__dict__, "message": redact(turn.message, self.settings),
                                     "answer": None if turn.answer is None else redact(turn.answer, self.settings)})
        try:
            self.queue.put_nowait(turn)
            metrics.TURN_QUEUE.inc()
        except asyncio.QueueFull:
            self.dropped += 1
            metrics.TURNS_DROPPED.inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("turns_dropped", dropped=self.dropped, queue_size=self.settings.turn_queue_size)

    async def _drain(self) -> None:
        while True:
            self._held = [await self.queue.get()]
            await asyncio.sleep(self.LINGER)
            batch, self._held = self._held, []
            while not self.queue.empty() and len(batch) < 500:
                batch.append(self.queue.get_nowait())
            # Shielded: stopping the drain must not cancel a batch already taken off the queue.
            self._writing = asyncio.ensure_future(self._write(batch))
            await asyncio.shield(self._writing)

    async def _write(self, batch: list[ChatTurnRecord]) -> None:
        metrics.TURN_QUEUE.dec(len(batch))
        try:
            await self.store.record_turns(batch)
        except Exception as exc:  # best effort: a lost turn is counted, never raised into chat
            self.failed += len(batch)
            metrics.TURNS_FAILED.inc(len(batch))
            log.warning("turns_not_stored", count=len(batch), failed=self.failed, reason=str(exc))

    async def close(self) -> None:
        """Stop the drain task, let a write in progress finish, and write whatever is still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writing is not None:
            await self._writing
        batch, self._held = self._held, []
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        if batch:
            await self._write(batch)


# -- the store's lifecycle ------------------------------------------------------------------


class Conversations:
    """The conversation store and the chat-turn recorder of one process."""

    def __init__(self, settings: StorageSettings, health_cache: float) -> None:
        self.settings = settings
        self.pending: Store = open_store(settings.url, settings.pool_size, settings.timeout)
        self.store: Store | None = None  # set once the database has answered
        self.turns: TurnRecorder | None = None
        self.probe = CachedProbe(self._ping, health_cache)

    async def _ping(self) -> bool:
        return self.store is not None and await self.store.ping()

    def record_turn(self, turn: ChatTurnRecord) -> None:
        """Hand a chat exchange to the write-behind recorder (never waits, never fails the chat)."""
        if self.turns is not None:
            self.turns.record(turn)

    async def connect(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.pending.open()
            except (StorageUnavailable, OSError) as exc:
                reason = exc.detail if isinstance(exc, StorageUnavailable) else str(exc)
                log.error("storage_unavailable", store=self.pending.kind, reason=reason, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.store = self.pending
            if self.settings.record_chat_turns:
                self.turns = TurnRecorder(self.store, self.settings)
                self.turns.start()
            log.info("storage_ready", store=self.store.kind)
            return


@contextlib.asynccontextmanager
async def open_conversations(settings: Settings) -> AsyncIterator[Conversations | None]:
    """Open the store (retrying in the background while the database is down: the gateway
    still starts and chats), run the chat-turn recorder, flush and close on shutdown."""
    if not settings.uses_storage:
        yield None
        return
    conversations = Conversations(settings.storage, settings.health.cache_seconds)
    connecting = asyncio.create_task(conversations.connect())
    await asyncio.wait({connecting}, timeout=3)  # normally ready before the first request
    try:
        yield conversations
    finally:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        if conversations.turns is not None:
            await conversations.turns.close()
        if conversations.store is not None:
            await conversations.store.close()
