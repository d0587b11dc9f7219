"""SQL shared by both backends (written with ``?`` placeholders; PostgreSQL numbers them),
and the versioned migrations applied at startup."""

from __future__ import annotations

import json
import re

# Column types that differ between the dialects; the schema is written once with these.
_TYPES = {
    "sqlite": {"float": "REAL", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgres": {"float": "DOUBLE PRECISION", "serial": "BIGSERIAL PRIMARY KEY"},
}

_VERSION_1 = [
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        idempotency_key TEXT UNIQUE,
        body_hash TEXT NOT NULL,
        session_id TEXT NOT NULL,
        created_at {float} NOT NULL,
        duration {float},
        source TEXT,
        message_count INTEGER NOT NULL,
        messages TEXT NOT NULL,
        metadata TEXT NOT NULL)""",
    "CREATE INDEX conversations_created ON conversations (created_at, id)",
    "CREATE INDEX conversations_session ON conversations (session_id, created_at)",
    """CREATE TABLE chat_turns (
        id {serial},
        created_at {float} NOT NULL,
        session_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        message TEXT NOT NULL,
        answer TEXT,
        sources TEXT NOT NULL,
        upstream_ms {float},
        status INTEGER NOT NULL,
        error_code TEXT)""",
    "CREATE INDEX chat_turns_created ON chat_turns (created_at, id)",
]

# (version, statements) per dialect, applied in order, each version in one transaction,
# recorded in schema_migrations. Never edit a released version: add the next one.
MIGRATIONS: dict[str, list[tuple[int, list[str]]]] = {
    dialect: [(1, [statement.format(**types) for statement in _VERSION_1])] for dialect, types in _TYPES.items()
}

SCHEMA_TABLE = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"

DAY = {
    "sqlite": "strftime('%Y-%m-%d', created_at, 'unixepoch')",
    "postgres": "to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}

FIND_BY_KEY = "SELECT id, body_hash FROM conversations WHERE idempotency_key = ?"
INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, idempotency_key, body_hash, session_id, created_at, duration, source,"
    " message_count, messages, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_TURN = (
    "INSERT INTO chat_turns (created_at, session_id, request_id, message, answer, sources, upstream_ms, status,"
    " error_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SUMMARY_COLUMNS = "id, session_id, created_at, duration, source, message_count, metadata"
GET_CONVERSATION = f"SELECT {SUMMARY_COLUMNS}, messages FROM conversations WHERE id = ?"
# Durations are summed exactly where the database can: PostgreSQL raises on a double that
# overflows (finite durations near the largest double add up past it), numeric does not.
_DURATION = {"sqlite": "duration", "postgres": "duration::numeric"}


def conversation_totals(dialect: str) -> str:
    d = _DURATION[dialect]
    return f"SELECT count(*) AS n, avg({d}) AS d, avg(message_count) AS m, sum({d}) AS t FROM conversations"


def duration_totals(dialect: str) -> str:
    d = _DURATION[dialect]
    return f"SELECT avg({d}) AS d, sum({d}) AS t FROM conversations"
TURN_TOTALS = "SELECT count(*) AS n, coalesce(sum(CASE WHEN status <> 200 THEN 1 ELSE 0 END), 0) AS e FROM chat_turns"
PURGE = ("DELETE FROM conversations WHERE created_at < ?", "DELETE FROM chat_turns WHERE created_at < ?")
EXPORT_COLUMNS = {
    "conversations": f"{SUMMARY_COLUMNS}, messages",
    "turns": "id, created_at, session_id, request_id, message, answer, sources, upstream_ms, status, error_code",
}
EXPORT_TABLES = {"conversations": "conversations", "turns": "chat_turns"}


# A question, normalised for counting: lower case, without the spaces and punctuation around it
# ("Do you ship to Canada?" and "do you ship to canada" are one question). trim(X, Y) in SQLite
# and btrim(X, Y) in PostgreSQL strip the same characters; the question mark is written as a
# code (63, \x3F) because a literal one would be taken for a placeholder.
QUESTION = {
    "sqlite": "lower(trim(message, ' !.,;:' || char(63, 9, 10, 13)))",
    "postgres": "lower(btrim(message, E' !.,;:\\x3F\\t\\n\\r'))",
}
# Latency is the backend's answer time of the turns it answered.
ANSWERED = ["status = 200", "upstream_ms IS NOT NULL"]


def where(clauses: list[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def time_range(since: float | None, until: float | None) -> tuple[list[str], list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if since is not None:
        clauses.append("created_at >= ?")
        args.append(since)
    if until is not None:
        clauses.append("created_at < ?")
        args.append(until)
    return clauses, args


def list_query(
    session_id: str | None,
    since: float | None,
    until: float | None,
    limit: int,
    after: tuple[float, str] | None,
    text: str | None = None,
) -> tuple[str, list[object]]:
    """Newest first, keyset-paginated on (created_at, id); ``text`` is found anywhere in the
    transcript, ignoring case."""
    clauses, args = time_range(since, until)
    if session_id is not None:
        clauses.append("session_id = ?")
        args.append(session_id)
    if text:
        clauses.append("lower(messages) LIKE lower(?) ESCAPE '!'")
        args.append(f"%{_like(text)}%")
    if after is not None:
        clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
        args.extend([after[0], after[0], after[1]])
    sql = f"SELECT {SUMMARY_COLUMNS} FROM conversations{where(clauses)} ORDER BY created_at DESC, id DESC LIMIT ?"
    return sql, [*args, limit + 1]


def _like(text: str) -> str:
    """``text`` as it appears inside the stored JSON of the messages (quotes and backslashes
    escaped, non-ASCII kept), with LIKE's wildcards escaped."""
    encoded = json.dumps(text, ensure_ascii=False)[1:-1]
    return encoded.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def export_query(
    kind: str, since: float | None, until: float | None, after: tuple[float, object] | None, chunk: int
) -> tuple[str, list[object]]:
    """Oldest first, in chunks keyed on (created_at, id)."""
    clauses, args = time_range(since, until)
    if after is not None:
        clauses.append("(created_at > ? OR (created_at = ? AND id > ?))")
        args.extend([after[0], after[0], after[1]])
    table, columns = EXPORT_TABLES[kind], EXPORT_COLUMNS[kind]
    return f"SELECT {columns} FROM {table}{where(clauses)} ORDER BY created_at, id LIMIT ?", [*args, chunk]


def per_day(dialect: str, table: str, since: float | None, until: float | None) -> tuple[str, list[object]]:
    clauses, args = time_range(since, until)
    day = DAY[dialect]
    return f"SELECT {day} AS day, count(*) AS n FROM {table}{where(clauses)} GROUP BY 1 ORDER BY 1", args


def top_questions(dialect: str, since: float | None, until: float | None, top: int) -> tuple[str, list[object]]:
    clauses, args = time_range(since, until)
    q = QUESTION[dialect]
    return (
        f"SELECT {q} AS question, count(*) AS n FROM chat_turns{where(clauses)} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
        [*args, top],
    )


def answered_count(since: float | None, until: float | None) -> tuple[str, list[object]]:
    clauses, args = time_range(since, until)
    return f"SELECT count(*) AS n FROM chat_turns{where([*clauses, *ANSWERED])}", args


def latency_at(since: float | None, until: float | None, offset: int) -> tuple[str, list[object]]:
    """The answered turn's latency at ``offset`` in ascending order (nearest-rank percentiles)."""
    clauses, args = time_range(since, until)
    return (
        f"SELECT upstream_ms AS v FROM chat_turns{where([*clauses, *ANSWERED])} ORDER BY upstream_ms LIMIT 1 OFFSET ?",
        [*args, offset],
    )


def numbered(sql: str) -> str:
    """``?`` placeholders to PostgreSQL's ``$1, $2, ...``."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)
