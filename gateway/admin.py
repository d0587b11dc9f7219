"""The admin read API: conversations (a page, with search; one by id), statistics, exports
and the dashboard's chart.

It exists only when admin keys are configured (``auth.admin_keys``), and
every call needs one (``auth.require_admin_key``). Pages are keyset cursors
over (created_at, id), so paging stays correct while logs keep arriving.
Every figure comes from the store's read side (``storage/reads.py``), the same
queries ``avatar-gateway stats`` and ``export`` run.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.analytics import export_chunks
from gateway.auth import require_admin_key
from gateway.console.charts import activity_chart
from gateway.conversations import store_of
from gateway.errors import InvalidRequest, NotFound
from gateway.fields import parse_iso
from gateway.storage.base import decode_cursor

MAX_SEARCH_CHARS = 200
EXPORT_KINDS = ("conversations", "turns")
EXPORT_FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
_NO_STORE = {"Cache-Control": "no-store"}


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
    session_id = request.query_params.get("sessionId") or None
    text = request.query_params.get("q") or None
    if text is not None and len(text) > MAX_SEARCH_CHARS:
        raise InvalidRequest(f"Query parameter 'q' is longer than {MAX_SEARCH_CHARS} characters")
    cursor = request.query_params.get("cursor") or None
    if cursor is not None:
        _check_cursor(cursor)
    since, until = _timestamp(request, "from"), _timestamp(request, "to")
    page = await store_of(request).list_conversations(session_id, since, until, int(raw_limit), cursor, text)
    return JSONResponse({"conversations": [c.to_json() for c in page.items], "nextCursor": page.next_cursor})


async def admin_get(request: Request) -> JSONResponse:
    require_admin_key(request, request.state.settings.auth.admin_keys)
    conversation_id = request.path_params["conversation_id"]
    conversation = await store_of(request).get_conversation(conversation_id)
    if conversation is None:
        raise NotFound(f"No conversation {conversation_id!r}")
    return JSONResponse(conversation.to_json())


def _choice(request: Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in choices:
        raise InvalidRequest(f"Query parameter '{name}' must be one of: {', '.join(choices)}")
    return value


def _top(request: Request) -> int:
    raw = request.query_params.get("top", "10")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest("Query parameter 'top' must be an integer from 1 to 100")
    return int(raw)


async def admin_stats(request: Request) -> JSONResponse:
    """``GET /api/admin/stats?from=&to=&top=``: what ``avatar-gateway stats --json`` prints."""
    require_admin_key(request, request.state.settings.auth.admin_keys)
    since, until = _timestamp(request, "from"), _timestamp(request, "to")
    stats = await store_of(request).stats(since, until, _top(request))
    return JSONResponse(stats.to_json(), headers=_NO_STORE)


async def admin_chart(request: Request) -> Response:
    """``GET /api/admin/charts/activity?from=&to=``: conversations and chat turns per day as SVG,
    every day of the range drawn, days without activity as zero."""
    require_admin_key(request, request.state.settings.auth.admin_keys)
    since, until = _timestamp(request, "from"), _timestamp(request, "to")
    stats = await store_of(request).stats(since, until, 1)
    svg = activity_chart(stats.days, _day(since), _day(None if until is None else until - 1))
    return Response(svg, media_type="image/svg+xml", headers=_NO_STORE)


def _day(timestamp: float | None) -> str | None:
    # isoformat, not strftime("%Y"): glibc writes year 911 as "911", which is no ISO date.
    if timestamp is None:
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC).date().isoformat()
    except (ValueError, OverflowError, OSError):  # a bound at the edge of the calendar: draw the data's own range
        return None


async def admin_export(request: Request) -> StreamingResponse:
    """``GET /api/admin/export?kind=conversations|turns&format=jsonl|csv&from=&to=``: what
    ``avatar-gateway export`` writes, streamed in bounded memory, as a download."""
    require_admin_key(request, request.state.settings.auth.admin_keys)
    kind = _choice(request, "kind", EXPORT_KINDS, "conversations")
    fmt = _choice(request, "format", tuple(EXPORT_FORMATS), "jsonl")
    since, until = _timestamp(request, "from"), _timestamp(request, "to")
    store = store_of(request)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        export_chunks(store, kind, fmt, since, until),
        media_type=EXPORT_FORMATS[fmt],
        headers={**_NO_STORE, "Content-Disposition": f'attachment; filename="{kind}-{stamp}.{fmt}"'},
    )
