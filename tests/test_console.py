"""The console's server side: mounted only when enabled, a strict CSP, pages without inline
code; the console's session route (POST /console/session: mounted with avatar sessions only,
same origin, rate limited per client, capped by the cost guard, its chatToken good for the
visitor's routes); the admin API the dashboard reads (statistics, search, export, chart) on
both real stores (SQLite file, PostgreSQL server). The pages themselves:
tests/test_console_browser.py."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.console import CONTENT_SECURITY_POLICY, STATIC, console_csp
from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.storage import NewConversation, open_store
from gateway.storage.base import ChatTurnRecord
from tests.conftest import make_settings, serve
from tests.pg_service import postgres, postgres_url  # noqa: F401  (fixtures)

ADMIN = "admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def yaml_text(store_url: str = "sqlite:///:memory:", console: str = "", admin: bool = True) -> str:
    return f"""
server: {{log_format: json}}
storage: {{url: "{store_url}", record_chat_turns: false}}
auth: {{admin_keys: "{ADMIN if admin else ''}"}}
{console}
routes:
  - path: /api/health
    handler: health
  - path: /api/conversations/log
    handler: conversations
"""


# -- mounting and headers ---------------------------------------------------------------------


def test_the_console_is_off_unless_enabled(client_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = client_for(make_settings(yaml_text=yaml_text(f"sqlite:///{tmp_path}/g.db")))
    response = client.get("/console/")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "NOT_FOUND", "message": "No route for /console/"}}


@pytest.mark.parametrize(
    ("env", "file", "enabled"),
    [
        pytest.param({}, "console: {enabled: true}", True, id="file-true"),
        pytest.param({"GATEWAY_CONSOLE": "1"}, "", True, id="env-1"),
        pytest.param({"GATEWAY_CONSOLE": "on"}, "console: {enabled: false}", True, id="env-wins-over-file"),
        pytest.param({"GATEWAY_CONSOLE": "0"}, "console: {enabled: true}", False, id="env-0"),
        pytest.param({}, "", False, id="default-off"),
    ],
)
def test_console_switch(env: dict[str, str], file: str, enabled: bool) -> None:
    assert make_settings(yaml_text=yaml_text(console=file), env=env).console.enabled is enabled


def test_console_switch_errors_name_where_the_value_came_from() -> None:
    with pytest.raises(ConfigError) as env_error:
        make_settings(yaml_text=yaml_text(), env={"GATEWAY_CONSOLE": "maybe"})
    assert str(env_error.value) == "GATEWAY_CONSOLE (environment): 'maybe' is not a boolean (1/true/on or 0/false/off)"
    with pytest.raises(ConfigError) as file_error:
        make_settings(yaml_text=yaml_text(console="console: {enabled: 'yes'}"))
    assert str(file_error.value) == "console.enabled: 'yes' is not a boolean (true or false)"


def test_console_pages_and_assets_carry_a_strict_csp(client_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = client_for(make_settings(yaml_text=yaml_text(f"sqlite:///{tmp_path}/g.db", "console: {enabled: true}")))
    for path in ("/console/", "/console/analytics", "/console/assets/playground.js", "/console/assets/console.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self';" in csp and "style-src 'self';" in csp
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get("/console/assets/playground.js").headers["content-type"].startswith("text/javascript")
    redirect = client.get("/console", follow_redirects=False)
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/console/")
    assert client.get("/console/assets/nothing.js").status_code == 404


def test_pages_have_no_inline_script_or_style_and_every_control_a_label() -> None:
    for page in ("index.html", "analytics.html"):
        html = (STATIC / page).read_text()
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], page
        assert "<style" not in html and " style=" not in html and re.search(r"\son\w+=", html) is None, page
        for control in re.finditer(r"<(?:input|select)\b[^>]*>", html):
            ident = re.search(r'\bid="([^"]+)"', control.group())
            wrapped = html[: control.start()].endswith("<label>")
            assert wrapped or (ident is not None and f'for="{ident.group(1)}"' in html), control.group()
    for script in (STATIC / "assets").glob("*.js"):
        code = script.read_text()
        assert "innerHTML" not in code and "eval(" not in code and "new Function" not in code, script.name


# -- POST /console/session: the console's stand-in for the company's server ----------------------

SECRET = "console_signing_secret_0123456789abcdef"
SESSION = "/console/session"


def session_yaml(db: Path, console: str = "console: {enabled: true}", avatar: str = "", routes: str = "") -> str:
    return f"""
server: {{log_format: json}}
storage: {{url: "sqlite:///{db}", record_chat_turns: false}}
auth: {{api_keys: "server-key-0123456789abcdef"}}
avatar: {{signing_secret: "{SECRET}", {avatar}}}
{console}
routes:
  - path: /api/health
    handler: health
  - path: /api/sessions/end
    handler: session_end
{routes}"""


def test_the_session_route_exists_only_with_the_console_and_avatar_sessions(client_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    off = client_for(make_settings(yaml_text=session_yaml(tmp_path / "off.db", console="")))
    assert off.post(SESSION).json() == {"error": {"code": "NOT_FOUND", "message": "No route for /console/session"}}
    no_avatar = client_for(make_settings(yaml_text=yaml_text(f"sqlite:///{tmp_path}/n.db",
                                                             console="console: {enabled: true}")))
    assert no_avatar.get("/console/").status_code == 200
    assert no_avatar.post(SESSION).status_code == 404  # the page then talks without a session
    on = client_for(make_settings(yaml_text=session_yaml(tmp_path / "g.db")))
    assert on.post(SESSION).status_code == 200
    wrong = on.get(SESSION)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_a_console_session_is_a_capped_session_with_a_chat_token_and_nothing_else(client_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = client_for(make_settings(yaml_text=session_yaml(tmp_path / "g.db", avatar="max_concurrent_sessions: 1, session_ttl: 2m")))
    r = client.post(SESSION)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in r.headers
    body = r.json()
    assert set(body) == {"sessionId", "expiresAt", "chatToken"}  # no avatar token, no key
    claims = jwt.decode(body["chatToken"], SECRET, algorithms=["HS256"], audience="chat")
    assert claims["sid"] == body["sessionId"]
    # The cost guard counts it like any other session: the cap (1) is reached.
    full = client.post(SESSION)
    assert full.status_code == 429 and full.json()["error"]["message"].startswith(
        "Concurrent avatar session limit reached (1); retry in ")
    assert int(full.headers["retry-after"]) > 0
    # The visitor ends it with its own chatToken, which frees the slot.
    ended = client.post("/api/sessions/end", headers={"Authorization": f"Bearer {body['chatToken']}"})
    assert ended.json() == {"success": True, "sessionId": body["sessionId"], "ended": True}
    assert client.post(SESSION).status_code == 200


def test_console_sessions_are_rate_limited_per_client_ip(tmp_path: Path) -> None:
    yaml = session_yaml(tmp_path / "g.db", console="console: {enabled: true, session_rate_limit: 2/minute}",
                        avatar="max_concurrent_sessions: off")
    # Behind the trusted local proxy (the default trusted_proxies), X-Forwarded-For names the visitor.
    with TestClient(create_app(make_settings(yaml_text=yaml)), client=("127.0.0.1", 50000)) as client:
        def open_as(ip: str) -> Any:
            return client.post(SESSION, headers={"X-Forwarded-For": ip})

        assert [open_as("203.0.113.5").status_code for _ in range(2)] == [200, 200]
        refused = open_as("203.0.113.5")
        assert refused.status_code == 429
        assert refused.json()["error"]["message"] == "Too many requests: limit is 2 per minute; retry in 60s"
        assert refused.headers["ratelimit-policy"] == '"default";q=2;w=60' and refused.headers["retry-after"] == "60"
        assert open_as("203.0.113.6").status_code == 200  # another visitor has its own budget


def test_the_session_route_refuses_other_sites_before_counting_them(client_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    yaml = session_yaml(tmp_path / "g.db", console="console: {enabled: true, session_rate_limit: 1/minute}")
    client = client_for(make_settings(yaml_text=yaml))
    for site in ("cross-site", "same-site", "none"):
        r = client.post(SESSION, headers={"Sec-Fetch-Site": site})
        assert r.status_code == 403, site
        assert r.json() == {"error": {"code": "FORBIDDEN", "message":
                                      f"/console/session only answers the console's own pages (Sec-Fetch-Site: {site})"}}
    # Those refusals did not spend the one request a minute the page has.
    assert client.post(SESSION, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_session_rate_limit_setting(tmp_path: Path) -> None:
    default = make_settings(yaml_text=session_yaml(tmp_path / "g.db")).console.session_rate_limit
    assert [(r.text, r.key) for r in default] == [("10/minute", "ip")]
    assert make_settings(yaml_text=session_yaml(tmp_path / "g.db", console="console: {enabled: true, session_rate_limit: off}")
                         ).console.session_rate_limit == ()
    with pytest.raises(ConfigError) as bad:
        make_settings(yaml_text=session_yaml(tmp_path / "g.db", console="console: {enabled: true, session_rate_limit: often}"))
    assert str(bad.value) == "console.session_rate_limit: 'often' is not a rate limit like '60/minute' or '10/second;60/minute'"


# -- the admin API behind the dashboard, on both stores ----------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    return str(request.getfixturevalue("postgres_url"))


QUESTIONS = ["Do you ship to Canada?", "do you ship to canada", "  DO YOU SHIP TO CANADA!! ", "Returns?"]


async def seed(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    try:
        for i, text in enumerate(['50% "off"_now', "plain words", "50 percent off now"]):
            await store.record_conversation(NewConversation(
                f"s{i}", [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}],
                {"duration": 60.0 * (i + 1)}, created_at=T0 + i * 3600,
            ))
        # 100 answered turns of 1..100 ms, and failures whose timings must not count.
        turns = [ChatTurnRecord("s0", f"r{ms}", QUESTIONS[ms % 4], "a", [], float(ms), 200, created_at=T0 + ms)
                 for ms in range(1, 101)]
        turns += [ChatTurnRecord("s0", f"e{i}", "Down?", None, [], 5000.0, 502, "PROVIDER_ERROR", created_at=T0 + 200 + i)
                  for i in range(25)]
        await store.record_turns(turns)
    finally:
        await store.close()


@pytest.fixture
def admin_client(client_for, store_url: str):  # type: ignore[no-untyped-def]
    asyncio.run(seed(store_url))
    return client_for(make_settings(yaml_text=yaml_text(store_url)))


def test_stats_latency_failures_questions_and_minutes(admin_client) -> None:  # type: ignore[no-untyped-def]
    stats = admin_client.get("/api/admin/stats?top=3", headers=AUTH).json()
    assert stats["turns"] == 125 and stats["backendErrors"] == 25 and stats["backendErrorRate"] == pytest.approx(0.2)
    # Nearest rank over answered turns only: the 5000 ms failures are not answers.
    assert stats["answeredTurns"] == 100
    assert stats["latencyMs"] == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert stats["topQuestions"] == [
        {"question": "do you ship to canada", "count": 75},
        {"question": "down", "count": 25},
        {"question": "returns", "count": 25},
    ]
    assert stats["conversationMinutes"] == 6.0  # 60 + 120 + 180 seconds
    assert stats["conversations"] == 3
    window = admin_client.get("/api/admin/stats?from=2026-01-02", headers=AUTH).json()
    assert window["turns"] == 0 and window["latencyMs"] == {"p50": None, "p90": None, "p99": None}
    assert admin_client.get("/api/admin/stats?top=0", headers=AUTH).json()["error"]["message"] == (
        "Query parameter 'top' must be an integer from 1 to 100"
    )


def test_search_by_text_is_literal_and_ignores_case(admin_client) -> None:  # type: ignore[no-untyped-def]
    def found(query: str) -> list[str]:
        page = admin_client.get("/api/admin/conversations", params={"q": query}, headers=AUTH).json()
        return [c["sessionId"] for c in page["conversations"]]

    assert found("50%") == ["s0"]  # % is a character, not a wildcard
    assert found('"OFF"_') == ["s0"]  # quotes as typed, _ literal, case ignored
    assert found("off") == ["s2", "s0"]
    assert found("PLAIN") == ["s1"]
    assert found("nowhere") == []
    both = admin_client.get("/api/admin/conversations", params={"q": "off", "sessionId": "s2"}, headers=AUTH).json()
    assert [c["sessionId"] for c in both["conversations"]] == ["s2"]
    long = admin_client.get("/api/admin/conversations", params={"q": "x" * 201}, headers=AUTH)
    assert long.status_code == 400


def test_export_downloads_what_the_cli_writes(admin_client) -> None:  # type: ignore[no-untyped-def]
    response = admin_client.get("/api/admin/export?kind=turns&format=csv", headers=AUTH)
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="turns-\d{8}T\d{6}Z\.csv"', response.headers["content-disposition"])
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 125 and rows[0]["requestId"] == "r1"
    jsonl = admin_client.get("/api/admin/export?kind=conversations&format=jsonl", headers=AUTH)
    records = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [r["sessionId"] for r in records] == ["s0", "s1", "s2"] and "type" not in records[0]
    bad = admin_client.get("/api/admin/export?kind=users", headers=AUTH)
    assert bad.json()["error"]["message"] == "Query parameter 'kind' must be one of: conversations, turns"


def test_activity_chart_draws_every_day_with_its_counts(admin_client) -> None:  # type: ignore[no-untyped-def]
    response = admin_client.get("/api/admin/charts/activity?from=2025-12-31&to=2026-01-03", headers=AUTH)
    assert response.headers["content-type"].startswith("image/svg+xml")
    bars = re.findall(r'data-series="(\w+)" data-day="([\d-]+)" data-value="(\d+)"', response.text)
    assert bars == [
        ("conversations", "2025-12-31", "0"), ("turns", "2025-12-31", "0"),
        ("conversations", "2026-01-01", "3"), ("turns", "2026-01-01", "125"),
        ("conversations", "2026-01-02", "0"), ("turns", "2026-01-02", "0"),
    ]
    assert "<desc id=\"activity-desc\">3 conversations and 125 chat turns from 2025-12-31 to 2026-01-02</desc>" in response.text


@pytest.mark.parametrize("path", ["/api/admin/stats", "/api/admin/export", "/api/admin/charts/activity"])
def test_every_dashboard_call_needs_the_admin_key(client_for, tmp_path: Path, path: str) -> None:  # type: ignore[no-untyped-def]
    client = client_for(make_settings(yaml_text=yaml_text(f"sqlite:///{tmp_path}/g.db")))
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}):
        response = client.get(path, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHORIZED"
    assert client.get(path, headers=AUTH).status_code == 200
    off = client_for(make_settings(yaml_text=yaml_text(f"sqlite:///{tmp_path}/h.db", admin=False)))
    assert off.get(path, headers=AUTH).status_code == 404  # no admin keys: the API does not exist


# -- LiveAvatar: the vendor's session token for the page's SDK, and a CSP widened for it ----------

LA_KEY = "la_vendor_api_key_0123456789abcdef"
LA_SESSION_TOKEN = "la_session_token_for_the_browser_0123"
LIVEKIT_URL = "wss://gateway-tests.livekit.cloud"  # no network here: the SDK cannot reach it


class FakeLiveAvatar:
    """LiveAvatar's API on loopback, as far as the gateway and the SDK's first call go: token
    creation (the gateway, with the API key), start (the browser, with the session token: it
    answers with a LiveKit room nobody can reach), keep-alive and stop. CORS as the vendor
    answers the browser. LiveKit itself is not faked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str | None]] = []  # (path, X-API-KEY, Authorization)

    def app(self) -> Starlette:
        async def handle(request: Request) -> JSONResponse:
            self.calls.append((request.url.path, request.headers.get("x-api-key"), request.headers.get("authorization")))
            data: Any = None
            if request.url.path == "/v1/sessions/token":
                data = {"session_id": f"la-session-{len(self.calls)}", "session_token": LA_SESSION_TOKEN}
            elif request.url.path == "/v1/sessions/start":
                data = {"session_id": "la-session", "max_session_duration": 600,
                        "livekit_url": LIVEKIT_URL, "livekit_client_token": "livekit-token-nobody-accepts"}
            return JSONResponse({"code": 1000, "data": data, "message": "ok"})

        paths = ("/v1/sessions/token", "/v1/sessions/start", "/v1/sessions/stop", "/v1/sessions/keep-alive")
        routes = [Route(path, handle, methods=["POST"]) for path in paths]
        routes.append(Route("/v1/users/credits", handle, methods=["GET"]))
        return Starlette(routes=routes, middleware=[Middleware(
            CORSMiddleware, allow_origin_regex=".*", allow_credentials=True, allow_methods=["*"], allow_headers=["*"])])


@pytest.fixture(name="fake_liveavatar")
def fake_liveavatar_fixture() -> Iterator[tuple[FakeLiveAvatar, str]]:
    fake = FakeLiveAvatar()
    with serve(fake.app()) as url:
        yield fake, url


def liveavatar_settings(db: Path, vendor_url: str, console: str = "console: {enabled: true}") -> Settings:
    avatar = f'provider: liveavatar, api_key: "${{LIVEAVATAR_API_KEY}}", base_url: "{vendor_url}/"'
    return make_settings(yaml_text=session_yaml(db, console=console, avatar=avatar), env={"LIVEAVATAR_API_KEY": LA_KEY})


def connect_src(csp: str) -> list[str]:
    [directive] = [d.strip() for d in csp.split(";") if d.strip().startswith("connect-src ")]
    return directive.split()[1:]


def test_with_liveavatar_the_session_carries_the_vendor_token_and_the_csp_its_origins(
    client_for, tmp_path: Path, fake_liveavatar: tuple[FakeLiveAvatar, str]  # type: ignore[no-untyped-def]
) -> None:
    fake, vendor_url = fake_liveavatar
    client = client_for(liveavatar_settings(tmp_path / "g.db", vendor_url))
    r = client.post(SESSION)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"sessionId", "expiresAt", "chatToken", "avatar"}
    assert body["avatar"] == {"provider": "liveavatar", "sessionToken": LA_SESSION_TOKEN, "apiUrl": vendor_url}
    assert body["sessionId"] == "la-session-1"
    assert LA_KEY not in r.text  # the vendor's API key stays on the server
    assert fake.calls == [("/v1/sessions/token", LA_KEY, None)]
    # Every console response: connect-src widened by exactly the vendor API and LiveKit Cloud.
    strict = CONTENT_SECURITY_POLICY.split("; ")
    for path in ("/console/", "/console/analytics", "/console/assets/playground.js", "/console/vendor/liveavatar-web-sdk.js"):
        page = client.get(path)
        assert page.status_code == 200, path
        csp = page.headers["content-security-policy"]
        assert connect_src(csp) == ["'self'", vendor_url, "wss://*.livekit.cloud", "https://*.livekit.cloud"]
        assert [d for d in csp.split("; ") if not d.startswith("connect-src")] == [
            d for d in strict if not d.startswith("connect-src")]  # everything else as strict as ever
    # A session nobody uses is ended like any other: the gateway stops it at the vendor.
    ended = client.post("/api/sessions/end", headers={"Authorization": f"Bearer {body['chatToken']}"})
    assert ended.json()["ended"] is True
    assert fake.calls[-1] == ("/v1/sessions/stop", LA_KEY, None)


def test_the_default_liveavatar_origin_is_the_vendor_api(tmp_path: Path) -> None:
    settings = make_settings(yaml_text=session_yaml(tmp_path / "g.db", avatar='provider: liveavatar, api_key: "${K}"'),
                             env={"K": LA_KEY})
    assert connect_src(console_csp(settings)) == [
        "'self'", "https://api.liveavatar.com", "wss://*.livekit.cloud", "https://*.livekit.cloud"]


def test_with_the_local_provider_neither_vendor_token_nor_wider_csp(client_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = client_for(make_settings(yaml_text=session_yaml(tmp_path / "g.db", avatar="provider: local")))
    body = client.post(SESSION).json()
    assert set(body) == {"sessionId", "expiresAt", "chatToken"}
    for path in ("/console/", "/console/vendor/liveavatar-web-sdk.js"):
        response = client.get(path)
        assert response.status_code == 200  # the bundle is served (and simply not loaded by the page)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert connect_src(CONTENT_SECURITY_POLICY) == ["'self'"]


def test_the_vendored_sdk_is_one_self_contained_module_with_its_licences() -> None:
    vendor = STATIC / "vendor"
    bundle = (vendor / "liveavatar-web-sdk.js").read_text()
    assert re.search(r"^\s*import\b|\bimport\(|\brequire\(", bundle, re.M) is None  # nothing fetched at run time
    assert "eval(" not in bundle and "new Function" not in bundle and "new Worker" not in bundle  # strict CSP holds
    assert bundle.rstrip().endswith("export{Jr as LiveAvatarSession,It as SessionEvent,Ce as SessionState};")
    readme = (vendor / "README.md").read_text()
    assert "@heygen/liveavatar-web-sdk@0.0.18" in readme and "esbuild@0.28.2" in readme
    digest = hashlib.sha256((vendor / "liveavatar-web-sdk.js").read_bytes()).hexdigest()
    assert digest in readme  # the README describes this very file
    assert {p.name for p in (vendor / "licenses").iterdir()} >= {
        "heygen_liveavatar-web-sdk.txt", "livekit-client.txt", "webrtc-issue-detector.txt", "events.txt"}


def test_stats_stay_json_when_durations_add_up_past_a_double(client_for, store_url: str) -> None:
    # Found by the schemathesis run: two logs with metadata.duration near the largest double
    # (valid, finite) summed to Infinity, and /api/admin/stats answered 500.
    async def huge() -> None:
        store = open_store(store_url)
        await store.open()
        try:
            for i in range(2):
                await store.record_conversation(NewConversation(
                    f"h{i}", [{"role": "user", "content": "hi"}], {"duration": 1.5e308}, created_at=T0 + i))
        finally:
            await store.close()

    asyncio.run(huge())
    client = client_for(make_settings(yaml_text=yaml_text(store_url)))
    r = client.get("/api/admin/stats", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["conversationMinutes"] is None  # 3e308 s is past a double: null, not Infinity
    # SQLite averages in doubles (the sum overflows: null); PostgreSQL in numeric (exact).
    assert r.json()["averageDuration"] in (None, 1.5e308)
    assert r.json()["conversations"] == 2
