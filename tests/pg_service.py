"""A real PostgreSQL server for the tests: initdb into a temporary directory, started once
per test session on a free port (Debian's postgresql package; scripts/install installs it).

PostgreSQL refuses to run as root, so when the tests run as root (CI) the cluster
belongs to the ``postgres`` user and is driven through ``runuser``."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed; run scripts/install (Debian package postgresql)")
    return str(found[-1])


def _as_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class Postgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_owner([_bin("initdb"), "-D", str(self.data), "-U", "gateway", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True,
        )

    @property
    def base_url(self) -> str:
        return f"postgresql://gateway@127.0.0.1:{self.port}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        subprocess.run(
            _as_owner([_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start"]),
            check=True, capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_owner([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]), capture_output=True)

    def create_database(self, name: str) -> str:
        subprocess.run(
            [_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "gateway", "-d", "postgres", "-q",
             "-c", f'CREATE DATABASE "{name}"'],
            check=True, capture_output=True,
        )
        return f"{self.base_url}/{name}"

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def postgres_url(postgres: Postgres) -> str:
    """A fresh, empty database on the session's server."""
    return postgres.create_database(f"test_{os.getpid()}_{next(_counter)}_{int(time.time() * 1000) % 100000}")
