"""The conversation log on both real backends (SQLite file, PostgreSQL server): the route,
idempotency, the admin API, chat-turn recording, analytics, retention, redaction."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from gateway.analytics import export
from gateway.cli import main as cli_main
from gateway.storage import NewConversation, open_store
from gateway.storage.base import ChatTurnRecord
from tests.conftest import BACKEND_URL, make_settings
from tests.pg_service import postgres, postgres_url  # noqa: F401  (fixtures)

ADMIN = "admin-key-0123456789"
DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    return str(request.getfixturevalue("postgres_url"))


def config_yaml(store_url: str, storage_extra: str = "", record: bool = False) -> str:
    return f"""
server: {{log_format: json}}
storage:
  url: "{store_url}"
  record_chat_turns: {str(record).lower()}
  admin_keys: "{ADMIN}, second-admin-key-000"
{storage_extra}
routes:
  - path: /api/chat
    handler: chat
    upstream: {{url: "{BACKEND_URL}"}}
  - path: /api/conversations/log
    handler: conversations
  - path: /api/health
    handler: health
"""


@pytest.fixture
def client(client_for, store_url: str):  # type: ignore[no-untyped-def]
    return client_for(make_settings(yaml_text=config_yaml(store_url)))


LOG = {
    "sessionId": "session-123",
    "messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there!"}],
    "metadata": {"duration": 180, "source": "web", "locale": "en-GB"},
}
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_log_is_stored_and_readable(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/conversations/log", json=LOG)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["conversationId"].startswith("conv-")
    got = client.get(f"/api/admin/conversations/{body['conversationId']}", headers=AUTH).json()
    assert got["sessionId"] == "session-123"
    assert got["messages"] == LOG["messages"]
    assert got["metadata"] == LOG["metadata"]  # unknown metadata keys are kept
    assert got["messageCount"] == 2 and got["createdAt"].endswith("Z")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": LOG["messages"]}, "Missing required field: sessionId"),
        ({**LOG, "sessionId": 7}, "Field 'sessionId' must be a string, got number"),
        ({**LOG, "sessionId": "abc\n"}, "Field 'sessionId' must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'"),
        ({**LOG, "sessionId": "a b"}, "Field 'sessionId' must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'"),
        ({"sessionId": "s"}, "Missing required field: messages"),
        ({**LOG, "messages": {}}, "Field 'messages' must be an array, got object"),
        ({**LOG, "messages": []}, "Field 'messages' must not be empty"),
        ({**LOG, "messages": ["hi"]}, "Field 'messages[0]' must be an object, got string"),
        ({**LOG, "messages": [{"role": "bot", "content": "x"}]}, "Field 'messages[0].role' must be one of: user, assistant, system"),
        ({**LOG, "messages": [{"role": "user"}]}, "Field 'messages[0].content' must be a string, got null"),
        ({**LOG, "messages": [{"role": "user", "content": "x" * 20001}]}, "Field 'messages[0].content' is longer than 20000 characters"),
        ({**LOG, "metadata": []}, "Field 'metadata' must be an object, got array"),
        ({**LOG, "metadata": {"duration": -1}}, "Field 'metadata.duration' must be a non-negative number"),
        ({**LOG, "metadata": {"duration": "3m"}}, "Field 'metadata.duration' must be a non-negative number"),
        ({**LOG, "metadata": {"source": 5}}, "Field 'metadata.source' must be a string, got number"),
    ],
)
def test_validation_errors(client, body: dict, message: str) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/conversations/log", json=body)
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "INVALID_REQUEST", "message": message}}


def test_idempotent_retries(client) -> None:  # type: ignore[no-untyped-def]
    key = {"Idempotency-Key": "retry-abc-1"}
    first = client.post("/api/conversations/log", json=LOG, headers=key).json()["conversationId"]
    second = client.post("/api/conversations/log", json=LOG, headers=key).json()["conversationId"]
    assert first == second
    listed = client.get("/api/admin/conversations?sessionId=session-123", headers=AUTH).json()["conversations"]
    assert [c["conversationId"] for c in listed] == [first]
    r = client.post("/api/conversations/log", json={**LOG, "sessionId": "other"}, headers=key)
    assert r.status_code == 422
    assert r.json() == {
        "error": {"code": "IDEMPOTENCY_KEY_REUSED", "message": "Idempotency-Key was already used with a different body"}
    }
    bad = client.post("/api/conversations/log", json=LOG, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400
    # Without a key every call is a new conversation.
    a = client.post("/api/conversations/log", json=LOG).json()["conversationId"]
    assert a != first


async def test_concurrent_retries_store_one_row(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    try:
        conversation = NewConversation("s", [{"role": "user", "content": "hi"}], {}, idempotency_key="same")
        ids = await asyncio.gather(*(store.record_conversation(conversation) for _ in range(20)))
        assert len(set(ids)) == 1
        page = await store.list_conversations(None, None, None, 100, None)
        assert len(page.items) == 1
    finally:
        await store.close()


def test_admin_api_requires_a_key(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/api/admin/conversations")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="admin"'
    assert r.json()["error"] == {"code": "UNAUTHORIZED", "message": "Missing Authorization: Bearer <admin key>"}
    assert client.get("/api/admin/conversations", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/admin/conversations", headers={"Authorization": "Bearer second-admin-key-000"}).status_code == 200
    assert client.get("/api/admin/conversations/conv-nope", headers=AUTH).status_code == 404


def test_admin_api_absent_without_keys(client_for, tmp_path: Path) -> None:
    yaml = config_yaml(f"sqlite:///{tmp_path}/x.db").replace(f'admin_keys: "{ADMIN}, second-admin-key-000"', "")
    assert client_for(make_settings(yaml_text=yaml)).get("/api/admin/conversations").status_code == 404


async def seed(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    try:
        for i in range(7):
            await store.record_conversation(
                NewConversation(
                    f"s{i % 2}",
                    [{"role": "user", "content": f"q{i}"}] * (i + 1),
                    {"duration": 10.0 * i, "source": "web"},
                    created_at=T0 + i * DAY / 2,  # two a day from 2026-01-01
                )
            )
        turns = [
            ChatTurnRecord("s0", f"r{i}", f"q{i}", "a", [{"title": "Returns", "url": "https://x/r"}] * (i % 2),
                           12.5, 200 if i < 8 else 502, None if i < 8 else "PROVIDER_ERROR", created_at=T0 + i * 3600)
            for i in range(10)
        ]
        turns.append(ChatTurnRecord("s1", "r10", "q", "a", [{"title": "Shipping", "url": "https://x/s"}], 5.0, 200,
                                    created_at=T0 + DAY))
        await store.record_turns(turns)
    finally:
        await store.close()


def test_pagination_and_filters(client, store_url: str) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(seed(store_url))
    seen, cursor = [], None
    while True:
        url = "/api/admin/conversations?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=AUTH).json()
        seen.extend(page["conversations"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == 7
    created = [c["createdAt"] for c in seen]
    assert created == sorted(created, reverse=True)  # newest first, no duplicates across pages
    assert len({c["conversationId"] for c in seen}) == 7
    s0 = client.get("/api/admin/conversations?sessionId=s0", headers=AUTH).json()["conversations"]
    assert len(s0) == 4 and {c["sessionId"] for c in s0} == {"s0"}
    window = client.get("/api/admin/conversations?from=2026-01-02&to=2026-01-03T00:00:00Z", headers=AUTH).json()
    assert [c["createdAt"] for c in window["conversations"]] == ["2026-01-02T12:00:00.000Z", "2026-01-02T00:00:00.000Z"]
    bad = client.get("/api/admin/conversations?from=yesterday", headers=AUTH)
    assert bad.json()["error"]["message"] == "Query parameter 'from' must be an ISO-8601 date or time, got 'yesterday'"
    assert client.get("/api/admin/conversations?cursor=garbage", headers=AUTH).status_code == 400
    assert client.get("/api/admin/conversations?limit=0", headers=AUTH).status_code == 400


async def test_statistics_on_a_known_data_set(store_url: str) -> None:
    await seed(store_url)
    store = open_store(store_url)
    await store.open()
    try:
        stats = (await store.stats(None, None)).to_json()
    finally:
        await store.close()
    assert stats["conversations"] == 7
    assert stats["averageDuration"] == pytest.approx(30.0)
    assert stats["averageMessages"] == pytest.approx(4.0)
    assert stats["turns"] == 11 and stats["backendErrors"] == 2
    assert stats["backendErrorRate"] == pytest.approx(2 / 11)
    assert stats["days"] == [
        {"day": "2026-01-01", "conversations": 2, "turns": 10},
        {"day": "2026-01-02", "conversations": 2, "turns": 1},
        {"day": "2026-01-03", "conversations": 2, "turns": 0},
        {"day": "2026-01-04", "conversations": 1, "turns": 0},
    ]
    assert stats["topSources"] == [
        {"title": "Returns", "url": "https://x/r", "citations": 5},
        {"title": "Shipping", "url": "https://x/s", "citations": 1},
    ]


def write_config(tmp_path: Path, store_url: str, extra: str = "") -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_yaml(store_url, extra))
    return path


def test_cli_export_formats_and_stats(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(seed(store_url))
    config = str(write_config(tmp_path, store_url))
    assert cli_main(["export", "--config", config, "--from", "2026-01-02", "--to", "2026-01-03"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [c["createdAt"] for c in lines] == ["2026-01-02T00:00:00.000Z", "2026-01-02T12:00:00.000Z"]
    assert lines[0]["messages"][0] == {"role": "user", "content": "q2"}

    out = tmp_path / "turns.csv"
    assert cli_main(["export", "--config", config, "--kind", "turns", "--format", "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 11
    assert rows[0]["requestId"] == "r0" and rows[1]["sources"] == '[{"title": "Returns", "url": "https://x/r"}]'
    assert rows[9]["status"] == "502" and rows[9]["errorCode"] == "PROVIDER_ERROR"
    capsys.readouterr()

    assert cli_main(["stats", "--config", config]) == 0
    text = capsys.readouterr().out
    assert "conversations: 7" in text and "2026-01-01" in text and "Returns" in text


def test_retention_purge(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(seed(store_url))
    config = str(write_config(tmp_path, store_url))
    assert cli_main(["purge", "--config", config]) == 2  # no retention configured
    assert "no retention period" in capsys.readouterr().err
    # The seed is from January 2026; everything is older than 30 days today.
    recent = NewConversation("keep", [{"role": "user", "content": "new"}], {})

    async def add_recent() -> None:
        store = open_store(store_url)
        await store.open()
        await store.record_conversation(recent)
        await store.close()

    asyncio.run(add_recent())
    config = str(write_config(tmp_path, store_url, "  retention_days: 30"))
    assert cli_main(["purge", "--config", config]) == 0
    assert capsys.readouterr().out.strip() == "purged 7 conversations and 11 chat turns older than 30 days"
    assert cli_main(["export", "--config", config]) == 0
    remaining = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [c["sessionId"] for c in remaining] == ["keep"]


def test_redaction(client_for, store_url: str) -> None:
    yaml = config_yaml(store_url, "  redact: {emails: true, phones: true}")
    client = client_for(make_settings(yaml_text=yaml))
    text = "Mail me at jane.doe+avatar@example.co.uk or call +1 (415) 555-0142; order 12345 ships in 3 days."
    body = {"sessionId": "s", "messages": [{"role": "user", "content": text}]}
    conversation_id = client.post("/api/conversations/log", json=body).json()["conversationId"]
    stored = client.get(f"/api/admin/conversations/{conversation_id}", headers=AUTH).json()["messages"][0]["content"]
    assert stored == "Mail me at [email] or call [phone]; order 12345 ships in 3 days."


def test_chat_turns_are_recorded_behind_the_answer(client_for, store_url: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=BACKEND_URL, json={"response": "Yes", "sources": [{"title": "T", "url": "https://u"}]})
    httpx_mock.add_response(url=BACKEND_URL, status_code=500)
    client = client_for(make_settings(yaml_text=config_yaml(store_url, record=True)))
    assert client.post("/api/chat", json={"message": "ok?", "sessionId": "c1"}, headers={"X-Request-ID": "t-1"}).status_code == 200
    assert client.post("/api/chat", json={"message": "fail?", "sessionId": "c1"}).status_code == 502
    client.__exit__(None, None, None)  # shutdown flushes the queue

    async def turns() -> list[dict]:
        store = open_store(store_url)
        await store.open()
        try:
            return [t async for t in store.export("turns", None, None)]
        finally:
            await store.close()

    recorded = asyncio.run(turns())
    assert [(t["requestId"], t["message"], t["answer"], t["status"], t["errorCode"]) for t in recorded] == [
        ("t-1", "ok?", "Yes", 200, None),
        (recorded[1]["requestId"], "fail?", None, 502, "PROVIDER_ERROR"),
    ]
    assert recorded[0]["sources"] == [{"title": "T", "url": "https://u"}] and recorded[0]["upstreamMs"] >= 0


def test_storage_down_log_is_503_and_chat_still_answers(client_for, httpx_mock: HTTPXMock) -> None:
    from tests.conftest import free_port

    httpx_mock.add_response(url=BACKEND_URL, json={"response": "Yes", "sources": []}, is_reusable=True)
    url = f"postgresql://gateway@127.0.0.1:{free_port()}/nothing"
    client = client_for(make_settings(yaml_text=config_yaml(url, record=True)))
    r = client.post("/api/conversations/log", json=LOG)
    assert r.status_code == 503
    assert r.json() == {"error": {"code": "SERVICE_UNAVAILABLE", "message": "Conversation storage is unavailable; try again shortly"}}
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 200
    health = client.get("/api/health").json()
    assert health["storage"] == "disconnected" and health["status"] == "degraded"
    assert "nothing" not in r.text


def test_health_reports_storage(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/health").json()["storage"] == "connected"


async def test_export_streams_in_chunks(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    try:
        for i in range(1203):
            await store.record_conversation(NewConversation("s", [{"role": "user", "content": str(i)}], {}, created_at=T0))
        out = io.StringIO()
        assert await export(store, "conversations", "jsonl", None, None, out) == 1203
        ids = [json.loads(line)["conversationId"] for line in out.getvalue().splitlines()]
        assert len(set(ids)) == 1203
    finally:
        await store.close()
