"""The OpenAPI document and the implementation agree: every route the app mounts is
described and nothing else is; the kept copy is current; a property-based run
(schemathesis) against a live gateway finds no 5xx, no error outside the envelope and
no response outside the document."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from examples.reference_backend.app import create_app as create_backend
from gateway import openapi
from gateway.app import create_app
from gateway.config import load_settings
from gateway.settings import DEFAULT_CONFIG_PATH, Settings
from tests.conftest import free_port, make_settings, serve
from tests.services import gateway_process

ROOT = Path(__file__).resolve().parent.parent
KEPT = ROOT / "docs" / "openapi.json"
KEY = "schemathesis-key-0123456789"


def mounted(app: Starlette) -> set[tuple[str, str]]:
    """(path, method) of every route the app answers, HEAD aside (Starlette adds it to GET)."""
    return {
        (route.path, method)
        for route in app.routes
        if isinstance(route, StarletteRoute)
        for method in (route.methods or ()) if method != "HEAD"
    }


def described(document: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item}


def bundled() -> Settings:
    return load_settings(DEFAULT_CONFIG_PATH, env=openapi.DOCUMENTATION_ENV)


@pytest.mark.parametrize("settings", [
    pytest.param(bundled, id="bundled-config-with-admin-api"),
    pytest.param(lambda: make_settings(), id="minimal-config"),
    pytest.param(lambda: make_settings(yaml_text="metrics: {enabled: false}\nroutes: [{path: /h, handler: health}]"),
                 id="metrics-off"),
])
def test_the_served_document_describes_exactly_the_mounted_routes(settings) -> None:  # type: ignore[no-untyped-def]
    settings = settings()
    app = create_app(settings)
    with TestClient(app) as client:
        served = client.get("/openapi.json").json()
    assert served == openapi.build_document(settings)
    assert described(served) == mounted(app)


def test_an_undescribed_handler_shows_up_as_a_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new route (say /api/transcribe) whose handler has no operation yet is reported, not hidden."""
    monkeypatch.delitem(openapi._OPERATIONS, "health")
    settings = make_settings()
    assert mounted(create_app(settings)) - described(openapi.build_document(settings)) == {("/api/health", "GET")}


def test_the_kept_document_is_current() -> None:
    kept = json.loads(KEPT.read_text())
    assert kept == openapi.build_document(bundled()), (
        "docs/openapi.json is stale: regenerate with `python -m gateway.openapi > docs/openapi.json`"
    )
    assert kept["openapi"] == "3.1.0"
    contract = {("/api/chat", "POST"), ("/api/get-access-token", "POST"), ("/api/health", "GET"),
                ("/api/conversations/log", "POST")}
    assert contract <= described(kept)


def test_validation_limits_come_from_the_settings() -> None:
    settings = make_settings(chat_extra="    limits: {max_message_chars: 100, max_history: 3}")
    chat = openapi.build_document(settings)["paths"]["/api/chat"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["message"]["maxLength"] == 100
    assert body["properties"]["history"]["maxItems"] == 3
    # The streaming variant is described as what it is: the same 200, as Server-Sent Events.
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}


def test_every_error_response_is_the_envelope() -> None:
    document = openapi.build_document(bundled())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and (path, status) != ("/api/health", "503"):
                    assert response == {"$ref": f"#/components/responses/E{status}"}, (path, method, status)
    for response in document["components"]["responses"].values():
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


# -- the property-based run against a live gateway ------------------------------------------


@pytest.fixture
def live_gateway(tmp_path: Path) -> Iterator[str]:
    knowledge = ROOT / "examples" / "reference_backend" / "knowledge"
    with serve(create_backend(knowledge)) as backend:
        config = {
            "server": {"log_format": "json", "log_level": "warning"},
            "storage": {"url": f"sqlite:///{tmp_path}/gateway.db"},
            "auth": {"api_keys": KEY, "admin_keys": KEY},
            "avatar": {"provider": "local", "max_concurrent_sessions": "off"},
            "routes": [
                {"path": "/api/chat", "handler": "chat", "rate_limit": "off",
                 "upstream": {"url": f"{backend}/api/chat"}},
                {"path": "/api/get-access-token", "handler": "token", "rate_limit": "off"},
                {"path": "/api/sessions/end", "handler": "session_end", "rate_limit": "off"},
                {"path": "/api/health", "handler": "health", "rate_limit": "off"},
                {"path": "/api/conversations/log", "handler": "conversations", "rate_limit": "off"},
            ],
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        with gateway_process(path, port):
            yield f"http://127.0.0.1:{port}"


@pytest.mark.integration
def test_schemathesis_finds_no_5xx_no_bare_error_and_no_undocumented_response(live_gateway: str) -> None:
    # Every check schemathesis has (not_a_server_error, status_code_conformance,
    # response_schema_conformance, content_type_conformance, negative_data_rejection, ...);
    # the exceptions, each with its reason, are in tests/schemathesis.toml. Bounded: ~10-15 s.
    cli = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [str(cli), "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "--no-color", "run",
         f"{live_gateway}/openapi.json", "-H", f"Authorization: Bearer {KEY}",
         "--max-examples", "40", "--phases", "examples,coverage,fuzzing", "--request-timeout", "10"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # every operation of the document but /openapi.json itself, which schemathesis loaded
    operations = sum(len(item) for path, item in httpx.get(f"{live_gateway}/openapi.json").json()["paths"].items()
                     if path != "/openapi.json")
    assert operations >= 11 and f"Tested: {operations}" in result.stdout
