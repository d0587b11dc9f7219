"""The admin read API: ``GET /api/admin/conversations`` and one conversation by id.

It exists only when admin keys are configured (``auth.admin_keys``), and
every call needs one (``auth.require_admin_key``). Pages are keyset cursors
over (created_at, id), so paging stays correct while logs keep arriving.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.auth import require_admin_key
from gateway.conversations import store_of
from gateway.errors import InvalidRequest, NotFound
from gateway.fields import parse_iso
from gateway.storage.base import decode_cursor


def _timestamp(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise InvalidRequest(f"Query parameter '{name}' must be an ISO-8601 date or time, got {value!r}") from None


def _check_cursor(cursor: str) -> None:
    try:
        decode_cursor(cursor)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Query parameter 'cursor' is not a cursor this API issued") from None


async def admin_list(request: Request) -> JSONResponse:
    require_admin_key(request, request.state.settings.auth.admin_keys)
    raw_limit = request.query_params.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
        raise InvalidRequest("Query parameter 'limit' must be an integer from 1 to 500")
    session_id = request.query_params.get("sessionId")
    cursor = request.query_params.get("cursor") or None
    if cursor is not None:
        _check_cursor(cursor)
    since, until = _timestamp(request, "from"), _timestamp(request, "to")
    page = await store_of(request).list_conversations(session_id, since, until, int(raw_limit), cursor)
    return JSONResponse({"conversations": [c.to_json() for c in page.items], "nextCursor": page.next_cursor})


async def admin_get(request: Request) -> JSONResponse:
    require_admin_key(request, request.state.settings.auth.admin_keys)
    conversation_id = request.path_params["conversation_id"]
    conversation = await store_of(request).get_conversation(conversation_id)
    if conversation is None:
        raise NotFound(f"No conversation {conversation_id!r}")
    return JSONResponse(conversation.to_json())
