"""The Deepgram, AssemblyAI and OpenAI-compatible adapters against fake vendors:
real HTTP servers on loopback speaking each vendor's wire format. What each vendor
receives (key header, audio, the domain phrases as its biasing parameter), what
the gateway answers, every failure mode, and health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import parse_settings
from tests.conftest import free_port, serve
from tests.stt_support import tone

KEY = "srv_key_5e6f7a8b9c0d1e2f3a4b"
VENDOR_KEY = "vendor_key_9f8e7d6c5b4a39281706"
VENDOR_TOKEN = "vendor_stream_token_1a2b3c4d5e6f"
PHRASES = ["Ridgeline 2", "Trailblazer membership"]
AUDIO = tone(0.5)
AUTH = {"authorization": f"Bearer {KEY}"}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeVendor:
    """Answers each path with the reply set for it; records every request."""

    replies: dict[str, list[Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def reply(self, path: str, *answers: Any) -> None:
        self.replies[path] = list(answers)

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.seen.append(Seen(request.method, path, parse_qs(request.url.query), dict(request.headers),
                              await request.body()))
        answers = self.replies.get(path) or self.replies.get("*") or [(404, {"error": "no such path"})]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        status, body = answer[0], answer[1]
        if len(answer) > 2:
            await asyncio.sleep(answer[2])
        if isinstance(body, bytes):
            return Response(body, status, media_type="text/html")
        return JSONResponse(body, status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])


@pytest.fixture(scope="module")
def vendor_server() -> Iterator[tuple[FakeVendor, str]]:
    fake = FakeVendor()
    with serve(fake.app()) as url:
        yield fake, url


@pytest.fixture
def vendor(vendor_server: tuple[FakeVendor, str]) -> tuple[FakeVendor, str]:
    fake, url = vendor_server
    fake.replies.clear()
    fake.seen.clear()
    return fake, url


def settings(provider: str, base_url: str, **stt: Any) -> Any:
    doc = {
        "server": {"log_format": "json"},
        "storage": {"record_chat_turns": False},
        "auth": {"api_keys": KEY},
        "health": {"cache": "1ms"},
        "stt": {"provider": provider, "api_key": VENDOR_KEY, "base_url": base_url, "phrases": PHRASES,
                "timeouts": {"connect": "1s", "total": "1s"}, **stt},
        "routes": [
            {"path": "/api/transcribe", "handler": "transcribe"},
            {"path": "/api/health", "handler": "health"},
        ] + ([{"path": "/api/stt-token", "handler": "stt_token"}] if provider != "openai" else []),
    }
    return parse_settings(json.dumps(doc), env={})


@pytest.fixture
def client() -> Iterator[Any]:
    clients: list[TestClient] = []

    def build(provider: str, base_url: str, **stt: Any) -> TestClient:
        c = TestClient(create_app(settings(provider, base_url, **stt)), raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield build
    for c in clients:
        c.__exit__(None, None, None)


def post_audio(c: TestClient, body: bytes = AUDIO, content_type: str = "audio/wav") -> Any:
    return c.post("/api/transcribe", content=body, headers={**AUTH, "content-type": content_type})


# -- what each vendor receives, and what the gateway answers -----------------------


def test_deepgram_transcribes_with_keyterms(client, vendor) -> None:
    fake, url = vendor
    fake.reply("/v1/listen", (200, {"metadata": {}, "results": {"channels": [
        {"alternatives": [{"transcript": "how much is the ridgeline 2", "confidence": 0.9}]}]}}))
    r = post_audio(client("deepgram", url))
    assert r.status_code == 200
    assert r.json() == {"text": "how much is the ridgeline 2", "language": "en"}
    sent = fake.seen[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/listen")
    assert sent.headers["authorization"] == f"Token {VENDOR_KEY}"
    assert sent.headers["content-type"] == "audio/wav" and sent.body == AUDIO
    assert sent.query["model"] == ["nova-3"] and sent.query["language"] == ["en"]
    assert sent.query["keyterm"] == PHRASES  # the domain phrases, one keyterm each


def test_deepgram_older_models_get_keywords(client, vendor) -> None:
    fake, url = vendor
    fake.reply("/v1/listen", (200, {"results": {"channels": [{"alternatives": [{"transcript": "hi"}]}]}}))
    assert post_audio(client("deepgram", url, model="nova-2")).status_code == 200
    assert fake.seen[-1].query["keywords"] == ["Ridgeline 2:2", "Trailblazer membership:2"]
    assert "keyterm" not in fake.seen[-1].query


def test_deepgram_stream_token(client, vendor) -> None:
    fake, url = vendor
    fake.reply("/v1/auth/grant", (200, {"access_token": VENDOR_TOKEN, "expires_in": 30}))
    r = client("deepgram", url, token_ttl="45s").post("/api/stt-token", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["token"] == VENDOR_TOKEN and body["expiresIn"] == 30 and body["provider"] == "deepgram"
    assert body["expiresAt"].endswith("Z") and r.headers["cache-control"] == "no-store"
    sent = fake.seen[-1]
    assert sent.headers["authorization"] == f"Token {VENDOR_KEY}"
    assert json.loads(sent.body) == {"ttl_seconds": 45}


def test_assemblyai_uploads_submits_and_polls_with_keyterms(client, vendor) -> None:
    fake, url = vendor
    fake.reply("/v2/upload", (200, {"upload_url": "https://cdn.example/upload/abc"}))
    fake.reply("/v2/transcript", (200, {"id": "tr_1", "status": "queued"}))
    fake.reply("/v2/transcript/tr_1", (200, {"id": "tr_1", "status": "processing"}),
               (200, {"id": "tr_1", "status": "completed", "text": "Do you ship to Canada?", "language_code": "en_us"}))
    r = post_audio(client("assemblyai", url))
    assert r.status_code == 200
    assert r.json() == {"text": "Do you ship to Canada?", "language": "en_us"}
    paths = [(s.method, s.path) for s in fake.seen]
    assert paths == [("POST", "/v2/upload"), ("POST", "/v2/transcript"), ("GET", "/v2/transcript/tr_1"),
                     ("GET", "/v2/transcript/tr_1")]
    assert all(s.headers["authorization"] == VENDOR_KEY for s in fake.seen)
    assert fake.seen[0].body == AUDIO
    assert json.loads(fake.seen[1].body) == {"audio_url": "https://cdn.example/upload/abc", "speech_model": "universal",
                                             "language_code": "en", "keyterms_prompt": PHRASES}


def test_assemblyai_stream_token(client, vendor) -> None:
    fake, url = vendor
    fake.reply("/v3/token", (200, {"token": VENDOR_TOKEN, "expires_in_seconds": 60}))
    r = client("assemblyai", url, token_ttl="60s").post("/api/stt-token", headers=AUTH)
    assert r.status_code == 200 and r.json()["token"] == VENDOR_TOKEN and r.json()["expiresIn"] == 60
    sent = fake.seen[-1]
    assert (sent.method, sent.path, sent.query) == ("GET", "/v3/token", {"expires_in_seconds": ["60"]})
    assert sent.headers["authorization"] == VENDOR_KEY


def test_openai_compatible_sends_a_multipart_form_with_a_prompt(client, vendor) -> None:
    fake, url = vendor
    fake.reply("/v1/audio/transcriptions", (200, {"text": " Can I pay with PayPal? "}))
    r = post_audio(client("openai", url))
    assert r.status_code == 200 and r.json() == {"text": "Can I pay with PayPal?", "language": "en"}
    sent = fake.seen[-1]
    assert sent.headers["authorization"] == f"Bearer {VENDOR_KEY}"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    form = parse_form(sent.body, sent.headers["content-type"])
    assert form["model"] == b"whisper-1" and form["language"] == b"en" and form["response_format"] == b"json"
    assert form["prompt"] == b"Ridgeline 2, Trailblazer membership"
    assert form["file"] == AUDIO


def test_openai_compatible_self_hosted_needs_no_key(client, vendor) -> None:
    fake, url = vendor
    fake.reply("/v1/audio/transcriptions", (200, {"text": "hello"}))
    c = TestClient(create_app(parse_settings(json.dumps({
        "auth": {"api_keys": KEY}, "storage": {"record_chat_turns": False},
        "stt": {"provider": "openai", "base_url": url, "model": "large-v3"},
        "routes": [{"path": "/api/transcribe", "handler": "transcribe"}]}), env={})))
    with c:
        assert post_audio(c).json()["text"] == "hello"
    assert "authorization" not in fake.seen[-1].headers
    assert parse_form(fake.seen[-1].body, fake.seen[-1].headers["content-type"])["model"] == b"large-v3"


def parse_form(body: bytes, content_type: str) -> dict[str, bytes]:
    from gateway.transcribe import _BOUNDARY, _PART_NAME

    match = _BOUNDARY.search(content_type)
    assert match
    out = {}
    for chunk in body.split(b"--" + match.group(1).encode())[1:-1]:
        headers, _, content = chunk[2:].partition(b"\r\n\r\n")
        name = _PART_NAME.search(headers)
        assert name
        out[name.group(1).decode()] = content[:-2]
    return out


# -- failures: 502 naming the provider and what happened, never the key -------------


TRANSCRIBE_PATH = {"deepgram": "/v1/listen", "assemblyai": "/v2/upload", "openai": "/v1/audio/transcriptions"}
FAILURES = [
    pytest.param((401, {"err": VENDOR_KEY}), "rejected the API key (HTTP 401)", id="401"),
    pytest.param((403, {}), "rejected the API key (HTTP 403)", id="403"),
    pytest.param((429, {}), "is rate limiting (HTTP 429)", id="429"),
    pytest.param((503, {}), "answered HTTP 503", id="503"),
    pytest.param((500, b"<html>oops</html>"), "answered HTTP 500", id="500"),
    pytest.param((200, b"<html>not json</html>"), "answered with a body that is not JSON", id="not-json"),
    pytest.param((200, {}, 1.5), "did not answer within 1s (total timeout)", id="timeout"),
]
SHAPES = {
    "deepgram": ({"results": {"channels": []}}, "no 'results.channels[0].alternatives[0].transcript'"),
    "assemblyai": ({"url": "x"}, "no 'upload_url' string"),
    "openai": ({"transcript": "x"}, "no 'text' string"),
}


@pytest.mark.parametrize("provider", ["deepgram", "assemblyai", "openai"])
@pytest.mark.parametrize(("answer", "message"), FAILURES)
def test_vendor_failures_are_502_naming_the_provider(client, vendor, provider, answer, message) -> None:
    fake, url = vendor
    fake.reply(TRANSCRIBE_PATH[provider], answer)
    r = post_audio(client(provider, url))
    assert r.status_code == 502
    assert r.json() == {"error": {"code": "PROVIDER_ERROR", "message": f"Speech provider {provider} {message}"}}
    assert VENDOR_KEY not in r.text


@pytest.mark.parametrize("provider", ["deepgram", "assemblyai", "openai"])
def test_vendor_wrong_shape(client, vendor, provider) -> None:
    fake, url = vendor
    body, what = SHAPES[provider]
    fake.reply(TRANSCRIBE_PATH[provider], (200, body))
    r = post_audio(client(provider, url))
    assert r.status_code == 502
    assert r.json()["error"]["message"] == f"Speech provider {provider} answered with an unexpected shape: {what}"


@pytest.mark.parametrize("provider", ["deepgram", "assemblyai", "openai"])
def test_vendor_refused(client, provider) -> None:
    r = post_audio(client(provider, f"http://127.0.0.1:{free_port()}"))
    assert r.status_code == 502
    assert r.json()["error"]["message"] == (
        f"Speech provider {provider} could not be reached: connection refused or host unknown")


def test_assemblyai_job_error_and_bad_status(client, vendor) -> None:
    fake, url = vendor
    fake.reply("/v2/upload", (200, {"upload_url": "https://cdn.example/u"}))
    fake.reply("/v2/transcript", (200, {"id": "tr_2", "status": "error", "error": f"bad audio {VENDOR_KEY}"}))
    c = client("assemblyai", url)
    r = post_audio(c)
    assert r.status_code == 502
    assert r.json()["error"]["message"] == "Speech provider assemblyai could not transcribe the audio"
    fake.reply("/v2/transcript", (200, {"id": "../../x", "status": "queued"}))
    assert post_audio(c).json()["error"]["message"] == (
        "Speech provider assemblyai answered with an unexpected shape: no 'id' string")


@pytest.mark.parametrize(
    ("provider", "path", "answer", "message"),
    [
        pytest.param("deepgram", "/v1/auth/grant", (200, {"access_token": "t"}),
                     "answered with an unexpected shape: no positive 'expires_in' number", id="deepgram-no-ttl"),
        pytest.param("deepgram", "/v1/auth/grant", (401, {}), "rejected the API key (HTTP 401)", id="deepgram-401"),
        pytest.param("assemblyai", "/v3/token", (200, {"expires_in_seconds": 60}),
                     "answered with an unexpected shape: no 'token' string", id="assemblyai-no-token"),
        pytest.param("assemblyai", "/v3/token", (429, {}), "is rate limiting (HTTP 429)", id="assemblyai-429"),
    ],
)
def test_stream_token_failures(client, vendor, provider, path, answer, message) -> None:
    fake, url = vendor
    fake.reply(path, answer)
    r = client(provider, url).post("/api/stt-token", headers=AUTH)
    assert r.status_code == 502
    assert r.json()["error"]["message"] == f"Speech provider {provider} {message}"


# -- health: an authenticated probe, cached -----------------------------------------


@pytest.mark.parametrize(
    ("provider", "path"), [("deepgram", "/v1/projects"), ("assemblyai", "/v2/transcript"), ("openai", "/v1/models")]
)
def test_health_probes_the_vendor_with_its_key(client, vendor, provider, path) -> None:
    fake, url = vendor
    fake.reply(path, (200, {"projects": [], "transcripts": [], "data": []}))
    c = client(provider, url)
    assert c.get("/api/health").json()["providers"]["stt"] == "connected"
    probe = fake.seen[-1]
    assert (probe.method, probe.path) == ("GET", path) and VENDOR_KEY in probe.headers["authorization"]
    fake.reply(path, (401, {}))
    assert c.get("/api/health").json()["providers"]["stt"] == "disconnected"


def test_stt_token_route_needs_a_streaming_provider() -> None:
    from gateway.errors import ConfigError

    doc = {"stt": {"provider": "openai", "api_key": "k"},
           "routes": [{"path": "/api/stt-token", "handler": "stt_token"}]}
    with pytest.raises(ConfigError) as err:
        parse_settings(json.dumps(doc), env={})
    assert str(err.value) == ("routes[0].handler: 'stt_token' needs stt.provider deepgram or assemblyai "
                              "(provider 'openai' has no browser streaming tokens)")
