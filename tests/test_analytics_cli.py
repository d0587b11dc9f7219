"""The analytics commands never create a database, and say where they looked.

A relative SQLite path (the default ``sqlite:///data/gateway.db``) resolves against the
current folder of the process, so running ``stats`` from another folder used to print
zeros and leave an empty ``data/gateway.db`` behind.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.storage import NewConversation, open_store

ROOT = Path(__file__).resolve().parent.parent
RELATIVE_HINT = (
    "storage.url sqlite:///data/gateway.db is relative to the current folder; run this where the gateway runs "
    "or set DATABASE_URL=sqlite:////absolute/path/gateway.db"
)


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, the bundled config, no DATABASE_URL: a newcomer's shell."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    return folder


def gateway_database(folder: Path) -> None:
    """What a gateway started in ``folder`` leaves: data/gateway.db with one conversation."""

    async def write() -> None:
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            store = open_store("sqlite:///data/gateway.db")
        finally:
            os.chdir(cwd)
        await store.open()
        await store.record_conversation(NewConversation("s1", [{"role": "user", "content": "hi"}], {}))
        await store.close()

    asyncio.run(write())


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["stats"], id="stats"),
        pytest.param(["stats", "--json"], id="stats-json"),
        pytest.param(["export"], id="export"),
        pytest.param(["export", "--kind", "turns", "--format", "csv", "-o", "out.csv"], id="export-to-file"),
        pytest.param(["purge", "--days", "30"], id="purge"),
    ],
)
def test_no_database_is_an_error_naming_the_path_and_creates_nothing(
    elsewhere: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: no database at {elsewhere}/data/gateway.db ({RELATIVE_HINT})\n"
    assert list(elsewhere.iterdir()) == []


def test_the_console_script_in_an_empty_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GATEWAY_CONFIG")}
    result = subprocess.run(
        [str(ROOT / ".venv/bin/avatar-gateway"), "stats"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"error: no database at {tmp_path}/data/gateway.db ({RELATIVE_HINT})\n"
    assert list(tmp_path.iterdir()) == []


def test_an_absolute_url_is_named_as_given(
    elsewhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{elsewhere}/gw.db")
    assert cli_main(["stats"]) == 1
    assert capsys.readouterr().err == f"error: no database at {elsewhere}/gw.db (storage.url sqlite:///{elsewhere}/gw.db)\n"
    assert list(elsewhere.iterdir()) == []


def test_an_empty_file_is_not_taken_for_a_database(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What `stats` used to leave behind: it must not be filled with tables now and read as zeros.
    (elsewhere / "data").mkdir()
    (elsewhere / "data/gateway.db").touch()
    assert cli_main(["stats"]) == 1
    assert capsys.readouterr().err == (
        f"error: {elsewhere}/data/gateway.db is not a gateway database (it has no gateway tables) ({RELATIVE_HINT})\n"
    )
    assert [p.name for p in (elsewhere / "data").iterdir()] == ["gateway.db"]
    assert (elsewhere / "data/gateway.db").stat().st_size == 0


def test_relative_paths_resolve_against_the_current_folder(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gateway_database(elsewhere)
    assert cli_main(["stats", "--json"]) == 0
    assert '"conversations": 1' in capsys.readouterr().out

    sub = elsewhere / "sub"
    sub.mkdir()
    os.chdir(sub)  # the fixture's monkeypatch restores the folder afterwards
    assert cli_main(["stats"]) == 1
    assert capsys.readouterr().err == f"error: no database at {sub}/data/gateway.db ({RELATIVE_HINT})\n"
    assert list(sub.iterdir()) == []


def test_purge_checks_the_retention_before_the_database(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["purge"]) == 2
    assert capsys.readouterr().err == "error: no retention period: set storage.retention_days or pass --days N\n"
    assert list(elsewhere.iterdir()) == []
