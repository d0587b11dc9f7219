"""Metrics: every collector present with the value known traffic must produce, scraped over
HTTP from a real two-worker gateway (uvicorn's supervisor, multiprocess mode); who may scrape."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway import metrics
from gateway.app import create_app
from gateway.conversations import TurnRecorder
from gateway.settings import StorageSettings
from gateway.storage.base import ChatTurnRecord
from tests.conftest import free_port, make_settings, serve
from tests.services import gateway_serve, redis_server

API_KEY = "metrics-test-api-key-0123456789"
ADMIN_KEY = "metrics-test-admin-key-0123456789"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name + sorted labels -> value, for every sample of a scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return scrape.get((name, tuple(sorted(labels.items()))))


def backend_app() -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        if request.method == "GET":  # the health probe
            return JSONResponse({})
        body = await request.json()
        return JSONResponse({"response": f"echo {body['message']}", "sources": []})

    return Starlette(routes=[Route("/api/chat", chat, methods=["POST", "GET"])])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("metrics")
    with serve(backend_app()) as backend, redis_server(tmp) as redis:
        config = {
            "server": {"log_format": "json", "log_level": "warning"},
            "rate_limit": {"storage": redis.url},
            "storage": {"url": f"sqlite:///{tmp}/gateway.db", "record_chat_turns": True},
            "auth": {"api_keys": API_KEY, "admin_keys": ADMIN_KEY},
            "avatar": {"provider": "local", "max_concurrent_sessions": 10},
            "routes": [
                {"path": "/api/chat", "handler": "chat", "rate_limit": "5/minute",
                 "upstream": {"url": f"{backend}/api/chat"}},
                {"path": "/api/chat-down", "handler": "chat", "rate_limit": "off",
                 "upstream": {"url": f"http://127.0.0.1:{free_port()}/api/chat"}},
                {"path": "/api/get-access-token", "handler": "token"},
                {"path": "/api/health", "handler": "health", "rate_limit": "off"},
            ],
        }
        path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        with gateway_serve(path, port, tmp / "gateway.log", workers=2):
            yield f"http://127.0.0.1:{port}"


async def known_traffic(url: str) -> None:
    # Fresh connections, so both workers take a share.
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        chats = await asyncio.gather(*(client.post("/api/chat", json={"message": f"q{i}"}) for i in range(8)))
        assert sorted(r.status_code for r in chats) == [200] * 5 + [429] * 3
        down = await asyncio.gather(*(client.post("/api/chat-down", json={"message": "hi"}) for _ in range(3)))
        assert [r.status_code for r in down] == [502] * 3
        assert (await client.get("/api/nowhere/42")).status_code == 404
        for _ in range(2):
            minted = await client.post("/api/get-access-token", json={"avatarId": "a", "voiceId": "v"},
                                       headers={"Authorization": f"Bearer {API_KEY}"})
            assert minted.status_code == 200


def test_each_metric_after_known_traffic_from_two_workers(gateway: str) -> None:
    asyncio.run(known_traffic(gateway))
    r = httpx.get(f"{gateway}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    s = samples(r.text)

    assert value(s, "gateway_requests_total", route="/api/chat", method="POST", status="200") == 5
    assert value(s, "gateway_requests_total", route="/api/chat", method="POST", status="429") == 3
    assert value(s, "gateway_requests_total", route="/api/chat-down", method="POST", status="502") == 3
    assert value(s, "gateway_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(s, "gateway_requests_total", route="/api/get-access-token", method="POST", status="200") == 2
    assert value(s, "gateway_request_duration_seconds_count", route="/api/chat") == 8
    assert value(s, "gateway_request_duration_seconds_bucket", route="/api/chat", le="+Inf") == 8
    assert value(s, "gateway_ratelimit_rejections_total", route="/api/chat") == 3
    assert value(s, "gateway_upstream_errors_total", upstream="chat_backend", kind="connect_refused") == 3
    # Five chats answered by the backend (no health check ran, so no probe).
    assert (value(s, "gateway_upstream_request_duration_seconds_count", upstream="chat_backend") or 0) == 5
    # Handlers ran for 5 + 3 chats and 2 tokens (429s and the 404 reach none; this scrape is not over).
    assert value(s, "gateway_request_queue_seconds_count") == 10
    assert value(s, "gateway_requests_in_flight") == 1  # this scrape
    assert value(s, "gateway_avatar_sessions_open") == 2
    assert value(s, "gateway_storage_up") == 1
    assert value(s, "gateway_chat_turns_dropped_total") == 0
    assert value(s, "gateway_chat_turns_failed_total") == 0
    depth = value(s, "gateway_chat_turn_queue_depth")
    assert depth is not None and 0 <= depth <= 8
    assert value(s, "gateway_draining") == 0
    # Bounded labels: no raw path, no session id, no key.
    assert "/api/nowhere/42" not in r.text and API_KEY not in r.text


def test_counts_stay_whole_across_workers(gateway: str) -> None:
    """Health checks spread over fresh connections land on both workers; the count is whole."""
    before = value(samples(httpx.get(f"{gateway}/metrics").text), "gateway_requests_total",
                   route="/api/health", method="GET", status="200") or 0
    for _ in range(20):
        assert httpx.get(f"{gateway}/api/health").status_code == 200
    after = samples(httpx.get(f"{gateway}/metrics").text)
    assert value(after, "gateway_requests_total", route="/api/health", method="GET", status="200") == before + 20


def test_a_forwarded_public_client_cannot_scrape_without_the_admin_key(gateway: str) -> None:
    # The peer is loopback (a trusted proxy); the client it forwards is public.
    forged = {"X-Forwarded-For": "203.0.113.9"}
    r = httpx.get(f"{gateway}/metrics", headers=forged)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHORIZED"
    assert httpx.get(f"{gateway}/metrics", headers={**forged, "Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200


# -- unit level -----------------------------------------------------------------------


def test_metrics_refused_outside_trusted_networks_and_off_when_disabled() -> None:
    settings = make_settings(yaml_text="""
metrics: {trusted_networks: []}
storage: {record_chat_turns: false}
routes: [{path: /api/health, handler: health}]
""")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.get("/metrics")
        assert r.status_code == 401
        assert r.json() == {"error": {"code": "UNAUTHORIZED", "message": "Missing Authorization: Bearer <admin key>"}}
    off = make_settings(yaml_text="""
metrics: {enabled: false}
storage: {record_chat_turns: false}
routes: [{path: /api/health, handler: health}]
""")
    with TestClient(create_app(off), raise_server_exceptions=False) as client:
        assert client.get("/metrics").status_code == 404


class StalledStore:
    async def record_turns(self, batch: list[ChatTurnRecord]) -> None:
        raise OSError("disk full")


async def test_turn_queue_depth_drops_and_failures_are_counted() -> None:
    read = _sample
    depth0, dropped0, failed0 = read("gateway_chat_turn_queue_depth"), read(
        "gateway_chat_turns_dropped_total"), read("gateway_chat_turns_failed_total")
    recorder = TurnRecorder(StalledStore(), StorageSettings(turn_queue_size=2))  # type: ignore[arg-type]
    turn = ChatTurnRecord(session_id="s", request_id="r", message="m", answer="a", sources=[], upstream_ms=1.0,
                          status=200, error_code=None)
    for _ in range(3):
        recorder.record(turn)
    assert read("gateway_chat_turn_queue_depth") == depth0 + 2
    assert read("gateway_chat_turns_dropped_total") == dropped0 + 1
    await recorder.close()  # flushes into the failing store
    assert read("gateway_chat_turn_queue_depth") == depth0
    assert read("gateway_chat_turns_failed_total") == failed0 + 2


def _sample(name: str) -> float:
    from prometheus_client import REGISTRY

    found = REGISTRY.get_sample_value(name)
    return 0.0 if found is None else found


def test_upstream_labels_are_bounded_names() -> None:
    assert metrics.upstream_label("Chat backend") == "chat_backend"
    assert metrics.upstream_label("LiveAvatar") == "liveavatar"


def test_queue_time_believes_x_request_start_only_from_a_trusted_proxy() -> None:
    from gateway.proxies import parse_networks

    m = metrics.RequestMetrics(parse_networks(["127.0.0.1"]))
    header = [(b"x-request-start", b"t=999.5")]
    assert m.arrival({"headers": header, "client": ("127.0.0.1", 1)}, 1000.0) == 999.5
    assert m.arrival({"headers": header, "client": ("203.0.113.9", 1)}, 1000.0) == 1000.0
    assert m.arrival({"headers": [(b"x-request-start", b"t=1.0")], "client": ("127.0.0.1", 1)}, 1000.0) == 1000.0
    assert m.arrival({"headers": [(b"x-request-start", b"nonsense")], "client": ("127.0.0.1", 1)}, 1000.0) == 1000.0


def test_circuit_breaker_state_is_a_metric() -> None:
    # One failure opens this breaker: the gauge says 2 (open) for the route's upstream.
    settings = make_settings(yaml_text=f"""
auth: {{admin_keys: "{ADMIN_KEY}"}}
storage: {{record_chat_turns: false}}
routes:
  - path: /api/chat-breaker
    handler: chat
    rate_limit: "off"
    upstream:
      url: "http://127.0.0.1:{free_port()}/api/chat"
      retries: {{attempts: 0}}
      breaker: {{failures: 1, cooldown: 1h}}
""")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/api/chat-breaker", json={"message": "hi"}).status_code == 502
        s = samples(client.get("/metrics", headers=admin).text)
        assert value(s, "gateway_circuit_breaker_state", upstream="/api/chat-breaker") == 2
        refused = client.post("/api/chat-breaker", json={"message": "hi"})
        assert refused.status_code == 502 and "circuit breaker open" in refused.json()["error"]["message"]
