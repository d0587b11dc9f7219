"""Durable storage for conversation logs and chat turns: SQLite (embedded default) or PostgreSQL.

Chosen by URL: ``sqlite:///data/gateway.db`` (relative to the working directory),
``sqlite:////var/lib/gateway/gateway.db`` (absolute), or ``postgresql://user:pass@host/db``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.storage.base import NewConversation, Store

__all__ = ["NewConversation", "Store", "open_store"]


def open_store(url: str, pool_size: int = 20, timeout: float = 5.0) -> Store:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from gateway.storage.sqlite import SQLiteStore

        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel and sqlite:////abs
        return SQLiteStore(path)
    if scheme in ("postgres", "postgresql"):
        from gateway.storage.postgres import PostgresStore

        return PostgresStore(url, max_size=pool_size, timeout=timeout)
    raise ValueError(f"unsupported storage URL scheme {scheme!r} (use sqlite:/// or postgresql://)")
