"""POST /api/conversations/log, chat-turn recording, and the admin read API.

Durability: a conversation log is answered ``{success: true, conversationId}``
only after its transaction has committed (SQLite: fsynced WAL; PostgreSQL:
COMMIT with synchronous_commit on). A retry carrying the same
``Idempotency-Key`` gets the same conversationId and stores nothing twice;
the same key with a different body is refused (422 IDEMPOTENCY_KEY_REUSED).

Chat turns are best effort by design: recorded write-behind through a bounded
queue so a chat answer never waits for the database; when the queue is full
a turn is dropped and counted (``turns_dropped`` in the log), never blocking
or failing the chat. The queue is flushed on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.body import json_type, read_json_object
from gateway.config import Route, StorageSettings
from gateway.errors import GatewayError, InvalidRequest, NotFound, ServiceUnavailable, Unauthorized
from gateway.storage import IdempotencyConflict, NewConversation, StorageUnavailable, Store
from gateway.storage.base import ChatTurnRecord

log = structlog.get_logger("gateway.conversations")

ROLES = ("user", "assistant", "system")
_SESSION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# International or national phone numbers: 7+ digits with optional +, spaces, dots, dashes, parentheses.
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d\s().\-]{5,}\d(?!\w)")


class IdempotencyKeyReused(GatewayError):
    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"


def redact(text: str, settings: StorageSettings) -> str:
    if settings.redact_emails:
        text = _EMAIL.sub("[email]", text)
    if settings.redact_phones:
        text = _PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
    return text


def validate_log(data: dict[str, Any], settings: StorageSettings, idempotency_key: str | None) -> NewConversation:
    if "sessionId" not in data:
        raise InvalidRequest("Missing required field: sessionId")
    session_id = data["sessionId"]
    if not isinstance(session_id, str):
        raise InvalidRequest(f"Field 'sessionId' must be a string, got {json_type(session_id)}")
    if not _SESSION_ID.fullmatch(session_id):
        raise InvalidRequest("Field 'sessionId' must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'")

    if "messages" not in data:
        raise InvalidRequest("Missing required field: messages")
    messages = data["messages"]
    if not isinstance(messages, list):
        raise InvalidRequest(f"Field 'messages' must be an array, got {json_type(messages)}")
    if not messages:
        raise InvalidRequest("Field 'messages' must not be empty")
    if len(messages) > settings.max_messages:
        raise InvalidRequest(f"Field 'messages' has more than {settings.max_messages} entries")
    clean = []
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"Field '{where}' must be an object, got {json_type(item)}")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise InvalidRequest(f"Field '{where}.role' must be one of: {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise InvalidRequest(f"Field '{where}.content' must be a string, got {json_type(content)}")
        if len(content) > settings.max_message_chars:
            raise InvalidRequest(f"Field '{where}.content' is longer than {settings.max_message_chars} characters")
        clean.append({"role": role, "content": redact(content, settings)})

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


def _store(request: Request) -> Store:
    store: Store | None = getattr(request.app.state, "store", None)
    if store is None:
        raise ServiceUnavailable("Conversation storage is unavailable; try again shortly")
    return store


async def log_conversation(request: Request, route: Route) -> JSONResponse:
    settings: StorageSettings = request.app.state.settings.storage
    data = await read_json_object(request, request.app.state.settings.server.max_body_bytes)
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest(
            "Header 'Idempotency-Key' must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'"
        )
    conversation = validate_log(data, settings, key)
    try:
        conversation_id = await _store(request).record_conversation(conversation)
    except IdempotencyConflict:
        raise IdempotencyKeyReused("Idempotency-Key was already used with a different body") from None
    except StorageUnavailable as exc:
        log.error("conversation_not_stored", reason=str(exc))
        raise ServiceUnavailable("Conversation storage is unavailable; the log was not stored, retry later") from None
    return JSONResponse({"success": True, "conversationId": conversation_id})


# -- chat turns, write-behind -------------------------------------------------------


class TurnRecorder:
    """A bounded queue drained by one task into the store, in batches."""

    def __init__(self, store: Store, settings: StorageSettings) -> None:
        self.store = store
        self.settings = settings
        self.queue: asyncio.Queue[ChatTurnRecord] = asyncio.Queue(settings.turn_queue_size)
        self.dropped = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="turn-recorder")

    def record(self, turn: ChatTurnRecord) -> None:
        if self.settings.redact_emails or self.settings.redact_phones:
            turn = ChatTurnRecord(**{**turn.__dict__, "message": redact(turn.message, self.settings),
                                     "answer": None if turn.answer is None else redact(turn.answer, self.settings)})
        try:
            self.queue.put_nowait(turn)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("turns_dropped", dropped=self.dropped, queue_size=self.settings.turn_queue_size)

    async def _drain(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < 500:
                batch.append(self.queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[ChatTurnRecord]) -> None:
        try:
            await self.store.record_turns(batch)
        except Exception as exc:  # best effort: a lost turn is counted, never raised into chat
            self.failed += len(batch)
            log.warning("turns_not_stored", count=len(batch), failed=self.failed, reason=str(exc))

    async def close(self) -> None:
        """Stop the drain task and write whatever is still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        batch: list[ChatTurnRecord] = []
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        if batch:
            await self._write(batch)


# -- the admin read API -----------------------------------------------------------------


def _require_admin(request: Request) -> None:
    keys = request.app.state.settings.storage.admin_keys
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    ok = False
    if scheme.lower() == "bearer" and presented:
        for key in keys:  # compare against every key: timing does not reveal which matched
            ok |= hmac.compare_digest(presented.encode(), key.encode())
    if not ok:
        raise Unauthorized(
            "Missing or invalid admin credential" if header else "Missing Authorization: Bearer <admin key>",
            headers={"WWW-Authenticate": 'Bearer realm="admin"'},
        )


def _timestamp(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"Query parameter '{name}' must be an ISO-8601 date or time, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


async def admin_list(request: Request) -> JSONResponse:
    _require_admin(request)
    raw_limit = request.query_params.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
        raise InvalidRequest("Query parameter 'limit' must be an integer from 1 to 500")
    session_id = request.query_params.get("sessionId")
    cursor = request.query_params.get("cursor")
    try:
        page = await _store(request).list_conversations(
            session_id, _timestamp(request, "from"), _timestamp(request, "to"), int(raw_limit), cursor
        )
    except ValueError:
        raise InvalidRequest("Query parameter 'cursor' is not a cursor this API issued") from None
    except StorageUnavailable:
        raise ServiceUnavailable("Conversation storage is unavailable; try again shortly") from None
    return JSONResponse({"conversations": [c.to_json() for c in page.items], "nextCursor": page.next_cursor})


async def admin_get(request: Request) -> JSONResponse:
    _require_admin(request)
    conversation_id = request.path_params["conversation_id"]
    try:
        conversation = await _store(request).get_conversation(conversation_id)
    except StorageUnavailable:
        raise ServiceUnavailable("Conversation storage is unavailable; try again shortly") from None
    if conversation is None:
        raise NotFound(f"No conversation {conversation_id!r}")
    return JSONResponse(conversation.to_json())
