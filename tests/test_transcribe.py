"""POST /api/transcribe and /api/stt-token: what audio is accepted, every kind of bad
audio (400 naming the problem), the byte limit (413), auth like the token route,
per-session rate limits, and no key or token in any log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import parse_settings
from gateway.signing import CHAT_AUDIENCE, Signer
from gateway.transcribe import form_file
from tests.stt_support import encode, tone, webm
from tests.test_stt_providers import FakeVendor, parse_form, vendor, vendor_server  # noqa: F401  # noqa: F401  (fixtures)

KEY = "srv_key_0f1e2d3c4b5a69788796"
VENDOR_KEY = "vendor_key_a1b2c3d4e5f6a7b8c9d0"
VENDOR_TOKEN = "vendor_stream_token_9a8b7c6d5e4f"
SIGNING_SECRET = "sig_1f2e3d4c5b6a79880a1b2c3d4e5f6a7b8c"
AUTH = {"authorization": f"Bearer {KEY}"}
WAV = tone(1.0)


def settings(url: str, provider: str = "openai", routes: list[dict[str, Any]] | None = None,
             avatar: dict[str, Any] | None = None, **stt: Any) -> Any:
    doc = {
        "server": {"log_format": "json", "log_level": "debug"},
        "storage": {"record_chat_turns": False},
        "auth": {"api_keys": KEY},
        "avatar": {"signing_secret": SIGNING_SECRET, **(avatar or {})},
        "stt": {"provider": provider, "base_url": url, "api_key": VENDOR_KEY, "max_seconds": "2s",
                "max_bytes": 200_000, **stt},
        "routes": routes or [{"path": "/api/transcribe", "handler": "transcribe"}],
    }
    return parse_settings(json.dumps(doc), env={})


@pytest.fixture
def client(vendor) -> Iterator[Any]:  # noqa: F811
    fake, url = vendor
    fake.reply("/v1/audio/transcriptions", (200, {"text": "hello there"}))
    clients: list[TestClient] = []

    def build(**kwargs: Any) -> TestClient:
        c = TestClient(create_app(settings(url, **kwargs)), raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield build
    for c in clients:
        c.__exit__(None, None, None)


def post(c: TestClient, body: bytes, content_type: str = "audio/wav", headers: dict[str, str] | None = None) -> Any:
    return c.post("/api/transcribe", content=body, headers={**AUTH, "content-type": content_type, **(headers or {})})


def multipart(fields: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "xYz0123boundary"
    parts = []
    for name, (filename, data, media) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {media}\r\n\r\n".encode()
                     + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# -- accepted audio -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "media", "sent_as"),
    [
        pytest.param(lambda: WAV, "audio/wav", "audio/wav", id="wav"),
        pytest.param(lambda: webm(WAV), "audio/webm;codecs=opus", "audio/webm", id="webm-opus"),
        pytest.param(lambda: encode(WAV, "ogg", "libopus"), "audio/ogg", "audio/ogg", id="ogg-opus"),
        pytest.param(lambda: encode(WAV, "mp4", "aac", 16_000), "audio/mp4", "audio/mp4", id="mp4-aac"),
        pytest.param(lambda: encode(WAV, "mp3", "libmp3lame", 16_000), "audio/mpeg", "audio/mpeg", id="mp3"),
        pytest.param(lambda: encode(WAV, "flac", "flac", 16_000), "audio/flac", "audio/flac", id="flac"),
    ],
)
def test_browser_formats_are_accepted_raw_and_as_multipart(client, vendor, make, media, sent_as) -> None:  # noqa: F811
    fake, _ = vendor
    c = client()
    audio = make()
    r = post(c, audio, media)
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "hello there", "language": "en"}
    assert parse_form(fake.seen[-1].body, fake.seen[-1].headers["content-type"])["file"] == audio
    assert f"Content-Type: {sent_as}".encode() in fake.seen[-1].body  # the sniffed type, not the client's label
    body, content_type = multipart({"model": ("", b"whisper-1", "text/plain"), "file": ("a.bin", audio, media)})
    assert post(c, body, content_type).json()["text"] == "hello there"


# -- bad audio: 400 in the envelope, naming the problem --------------------------------

FORMATS = "send WAV, WebM/Opus, Ogg/Opus, MP4/AAC, MP3 or FLAC"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: b"", "Audio is empty", id="empty"),
        pytest.param(lambda: b"hello, this is text, not audio" * 10, f"Body is not audio in a supported format; {FORMATS}",
                     id="not-audio"),
        pytest.param(lambda: tone(2.5), "Audio is longer than the limit of 2 seconds", id="too-long-wav"),
        pytest.param(lambda: webm(tone(2.5)), "Audio is longer than the limit of 2 seconds", id="too-long-webm"),
        pytest.param(lambda: encode(WAV, "wav", "adpcm_ms", 16_000),
                     f"Audio codec 'adpcm_ms' is not supported; {FORMATS}", id="unsupported-codec"),
        pytest.param(lambda: b"OggS" + bytes(200), "Audio could not be decoded: the Ogg data is damaged or truncated",
                     id="damaged-ogg"),
        pytest.param(lambda: webm(WAV)[:60], "Audio could not be decoded: the WebM data is damaged or truncated",
                     id="truncated-webm"),
        pytest.param(lambda: tone(0.0), "Audio contains no sound samples", id="no-samples"),
    ],
)
def test_bad_audio_is_400_naming_the_problem(client, vendor, make, message) -> None:  # noqa: F811
    fake, _ = vendor
    r = post(client(), make())
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "INVALID_REQUEST", "message": message}}
    assert not any(s.path == "/v1/audio/transcriptions" for s in fake.seen)  # the vendor is never billed for it


def test_bytes_over_the_limit_are_413_while_reading(client) -> None:
    c = client()
    r = post(c, tone(7.0))  # 224 KB > 200,000 bytes
    assert r.status_code == 413
    assert r.json()["error"] == {"code": "PAYLOAD_TOO_LARGE", "message": "Audio exceeds the limit of 200000 bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while streaming
        for _ in range(100):
            yield bytes(4096)

    r = c.post("/api/transcribe", content=chunks(), headers={**AUTH, "content-type": "audio/wav"})
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        pytest.param(b"{}", "application/json", 415, "Content-Type must be multipart/form-data or audio/*, got application/json",
                     id="json"),
        pytest.param(b"x", "multipart/form-data", 400, "Content-Type multipart/form-data has no boundary", id="no-boundary"),
        pytest.param(multipart({"audio": ("a.wav", WAV, "audio/wav")})[0], multipart({})[1], 400,
                     "Missing required field: file", id="no-file-field"),
        pytest.param(b"--xYz0123boundary\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc", multipart({})[1],
                     400, "Malformed multipart body: no closing boundary", id="unterminated"),
    ],
)
def test_malformed_requests(client, body, content_type, status, message) -> None:
    r = post(client(), body, content_type)
    assert r.status_code == status
    assert r.json()["error"]["message"] == message


def test_form_file_keeps_binary_bytes_exactly() -> None:
    data = bytes(range(256)) * 8 + b"\r\n--not-the-boundary\r\n\r\n\n\r"
    body, content_type = multipart({"file": ("a.wav", data, "audio/wav")})
    assert form_file(body, content_type) == data


# -- who may call, and how often ----------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({}, "Missing Authorization header; expected 'Authorization: Bearer <key>'", id="none"),
        pytest.param({"authorization": "Bearer wrong_key_0123456789abcdef"}, "Invalid API key", id="wrong-key"),
    ],
)
def test_routes_need_a_server_key(client, headers, message) -> None:
    c = client()
    r = c.post("/api/transcribe", content=WAV, headers={"content-type": "audio/wav", **headers})
    assert r.status_code == 401 and r.json()["error"]["message"] == message
    assert r.headers["www-authenticate"].startswith('Bearer realm="smarteravatar-gateway"')


def test_chat_token_is_accepted_when_sessions_are_scoped(client, vendor) -> None:  # noqa: F811
    routes = [{"path": "/api/transcribe", "handler": "transcribe", "rate_limit": {"limit": "2/minute", "key": "session"}}]
    c = client(avatar={"require_session_token": True}, routes=routes)
    signer = Signer(SIGNING_SECRET)
    token_a = signer.issue(CHAT_AUDIENCE, "session-a", 2e9)
    token_b = signer.issue(CHAT_AUDIENCE, "session-b", 2e9)
    as_a = {"authorization": f"Bearer {token_a}"}
    assert post(c, WAV, headers=as_a).status_code == 200
    assert post(c, WAV, headers=as_a).status_code == 200
    r = post(c, WAV, headers=as_a)
    assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
    assert post(c, WAV, headers={"authorization": f"Bearer {token_b}"}).status_code == 200  # its own budget
    expired = signer.issue(CHAT_AUDIENCE, "session-c", 1.0)
    r = post(c, WAV, headers={"authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "Chat token has expired"
    r = post(c, WAV, headers={"authorization": "Bearer garbage"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "Chat token is not valid"


def test_a_chat_token_is_accepted_wherever_the_gateway_has_avatar_sessions(client) -> None:
    """The decision (README, "Speech-to-text"): a chatToken is proof of a session this
    gateway minted, so transcribe takes one whenever an avatar runtime exists, whether or
    not /api/chat requires tokens (require_session_token is off here)."""
    routes = [{"path": "/api/transcribe", "handler": "transcribe"},
              {"path": "/api/sessions/end", "handler": "session_end"}]
    c = client(routes=routes)
    token = Signer(SIGNING_SECRET).issue(CHAT_AUDIENCE, "session-a", 2e9)
    r = c.post("/api/transcribe", content=WAV, headers={"content-type": "audio/wav", "authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["text"] == "hello there"
    forged = Signer("another_secret_0123456789abcdef0123").issue(CHAT_AUDIENCE, "session-a", 2e9)
    r = post(c, WAV, headers={"authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "Chat token is not valid"
    r = c.post("/api/transcribe", content=WAV, headers={"content-type": "audio/wav"})
    assert r.json()["error"]["message"] == "Missing Authorization header; expected 'Authorization: Bearer <key or chatToken>'"


def test_without_avatar_sessions_a_chat_token_is_refused(client) -> None:
    token = Signer(SIGNING_SECRET).issue(CHAT_AUDIENCE, "session-a", 2e9)
    r = post(client(), WAV, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "Invalid API key"


def test_key_callers_are_limited_per_named_session(client) -> None:
    routes = [{"path": "/api/transcribe", "handler": "transcribe", "rate_limit": {"limit": "1/minute", "key": "session"}}]
    c = client(routes=routes)
    url = "/api/transcribe?sessionId="
    send = lambda session: c.post(url + session, content=WAV, headers={**AUTH, "content-type": "audio/wav"})  # noqa: E731
    assert send("visitor-1").status_code == 200
    assert send("visitor-1").status_code == 429
    assert send("visitor-2").status_code == 200
    r = send("bad%20id")
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("Field 'sessionId' must be 1 to 128")


# -- secrets ----------------------------------------------------------------------------


def test_no_key_or_token_in_any_log_line(
    client, vendor, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, url = vendor
    fake.reply("/v1/auth/grant", (200, {"access_token": VENDOR_TOKEN, "expires_in": 30}))
    fake.reply("/v1/listen", (401, {"message": f"invalid key {VENDOR_KEY}"}),
               (200, {"results": {"channels": [{"alternatives": [{"transcript": "hi"}]}]}}))
    fake.reply("/v1/projects", (200, {"projects": []}))
    routes = [{"path": "/api/transcribe", "handler": "transcribe"}, {"path": "/api/stt-token", "handler": "stt_token"},
              {"path": "/api/health", "handler": "health"}]
    c = client(provider="deepgram", routes=routes)
    chat_token = Signer(SIGNING_SECRET).issue(CHAT_AUDIENCE, "s", 2e9)
    assert post(c, WAV).status_code == 502  # the vendor echoes our key in its error body
    assert post(c, WAV).status_code == 200
    assert post(c, WAV, headers={"authorization": f"Bearer {chat_token}"}).status_code == 401
    minted = c.post("/api/stt-token", headers=AUTH).json()
    assert minted["token"] == VENDOR_TOKEN
    assert c.get("/api/health").json()["providers"]["stt"] == "connected"
    logs = capsys.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    events = {json.loads(line)["event"] for line in logs.splitlines() if line.startswith("{")}
    assert {"stt_transcribed", "stt_token_minted", "request_failed", "request"} <= events
    for secret in (KEY, VENDOR_KEY, VENDOR_TOKEN, chat_token, SIGNING_SECRET):
        assert secret not in logs
        assert secret[:16] not in logs
    shown = repr(settings(url, provider="deepgram").stt)
    assert VENDOR_KEY not in shown and "api_key=set" in shown
