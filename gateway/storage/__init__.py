"""Durable storage for conversation logs and chat turns: SQLite (embedded default) or PostgreSQL.

Chosen by URL: ``sqlite:///data/gateway.db`` (relative to the current working directory
of the process that opens it, as in SQLAlchemy), ``sqlite:////var/lib/gateway/gateway.db``
(absolute), or ``postgresql://user:pass@host/db``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from gateway.storage.base import IdempotencyConflict, NewConversation, StorageUnavailable, Store

__all__ = [
    "DatabaseNotFound", "IdempotencyConflict", "NewConversation", "StorageUnavailable", "Store", "open_store",
    "sqlite_path",
]


class DatabaseNotFound(StorageUnavailable):
    """A store opened with ``create=False`` found no gateway database where its URL points."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL, as written."""
    path = url.removeprefix("sqlite://")
    return path[1:] if path.startswith("/") else path


def open_store(url: str, pool_size: int = 20, create: bool = True) -> Store:
    """The store for ``url``. ``create=False`` (the analytics commands) opens only an existing
    SQLite gateway database and raises :class:`DatabaseNotFound` otherwise; PostgreSQL
    databases are never created by the gateway, only the tables in them."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from gateway.storage.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url), create=create)
    if scheme in ("postgres", "postgresql"):
        from gateway.storage.postgres import PostgresStore

        return PostgresStore(url, max_size=pool_size)
    raise ValueError(f"unsupported storage URL scheme {scheme!r} (use sqlite:/// or postgresql://)")
