"""Durable storage for conversation logs and chat turns: SQLite (embedded default) or PostgreSQL.

Chosen by URL: ``sqlite:///data/gateway.db`` (relative to the current working directory
of the process that opens it, as in SQLAlchemy), ``sqlite:////var/lib/gateway/gateway.db``
(absolute), or ``postgresql://user:pass@host/db``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.storage.base import NewConversation, Store

__all__ = ["NewConversation", "Store", "open_store", "sqlite_path"]


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL, as written."""
    path = url.removeprefix("sqlite://")
    return path[1:] if path.startswith("/") else path


def open_store(url: str, pool_size: int = 20, timeout: float = 5.0, *, create: bool = True) -> Store:
    """The store for ``url``. ``create=False`` (the analytics commands) opens only an existing
    SQLite gateway database and raises ``errors.DatabaseNotFound`` otherwise; PostgreSQL
    databases are never created by the gateway, only the tables in them."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from gateway.storage.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url), create=create)
    if scheme in ("postgres", "postgresql"):
        from gateway.storage.postgres import PostgresStore

        return PostgresStore(url, max_size=pool_size, timeout=timeout)
    raise ValueError(f"unsupported storage URL scheme {scheme!r} (use sqlite:/// or postgresql://)")
