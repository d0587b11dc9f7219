"""The console in a real browser: Debian's Chromium driven by Playwright, against real gateways
and the reference backend on loopback. No browser download: Playwright drives /usr/bin/chromium
(scripts/install installs it); without it these tests fail, they do not skip.

Screenshots of both pages at desktop and phone widths are written to docs/screenshots/.
"""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from examples.reference_backend.app import create_app as create_backend
from gateway.app import create_app
from tests.conftest import free_port, make_settings, serve
from tests.test_console import (
    LA_KEY,
    LA_SESSION_TOKEN,
    LIVEKIT_URL,
    FakeLiveAvatar,
    fake_liveavatar_fixture,  # noqa: F401  (fixture)
)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ADMIN = "console-admin-key-0123456789"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.integration


def gateway_yaml(db: Path, chat_url: str, chat_extra: str = "", routes_extra: str = "", top_extra: str = "") -> str:
    return f"""
{top_extra}
server: {{log_format: json, log_level: warning}}
storage: {{url: "sqlite:///{db}", record_chat_turns: true}}
auth: {{admin_keys: "{ADMIN}"}}
console: {{enabled: true}}
routes:
  - path: /api/chat
    handler: chat
    upstream: {{url: "{chat_url}", timeouts: {{connect: 1s, total: 5s}}}}
{chat_extra}
  - path: /api/health
    handler: health
  - path: /api/conversations/log
    handler: conversations
{routes_extra}"""


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    port = free_port()
    with serve(create_backend(public_url=f"http://127.0.0.1:{port}"), port) as url:
        yield url


@pytest.fixture
def gateway(tmp_path: Path, backend: str) -> Callable[..., str]:
    """Start a gateway with the console on (fresh SQLite file each) and return its base URL."""
    stack: list[Any] = []

    def start(chat_url: str = f"{backend}/api/chat", chat_extra: str = "", routes_extra: str = "",
              top_extra: str = "") -> str:
        db = tmp_path / f"gateway-{len(stack)}.db"
        yaml_text = gateway_yaml(db, chat_url, chat_extra, routes_extra, top_extra)
        server = serve(create_app(make_settings(yaml_text=yaml_text)))
        stack.append(server)
        return server.__enter__()

    yield start
    for server in reversed(stack):
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: scripts/install installs Debian's chromium package"
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        # A CSP violation or a script error is a bug in the page, whatever the test checks.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(message.text)

    page.on("console", watch)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page
    context.close()
    assert problems == []


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=SCREENSHOTS / f"{name}-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=SCREENSHOTS / f"{name}-phone.png", full_page=True)
    # Nothing sticks out sideways on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(DESKTOP)


def ask(page: Page, question: str) -> None:
    page.get_by_label("Your question").fill(question)
    page.get_by_label("Your question").press("Enter")


# -- the playground ---------------------------------------------------------------------------


def test_playground_answers_a_typed_question_with_its_source_link_speaks_and_logs(
    page: Page, gateway: Callable[..., str], backend: str
) -> None:
    base = gateway()
    page.goto(f"{base}/console/")
    expect(page.locator("#health")).to_have_text("Gateway ok: the chat backend is connected.")
    ask(page, "How long do I have to return a jacket?")

    answer = page.locator("#transcript li.assistant").last
    expect(answer).to_contain_text("60 days")
    link = answer.get_by_role("link", name="Returns & Exchanges")
    expect(link).to_have_attribute("href", f"{backend}/docs/returns")
    assert answer.get_attribute("data-transport") == "sse"  # the answer streamed in (Server-Sent Events)
    # Headless Chromium has no voices: the page must have tried to speak, and not broken.
    speech = page.locator("#speech-status")
    expect(speech).to_have_attribute("data-attempts", "1")
    assert speech.get_attribute("data-state") in ("speaking", "spoken", "unavailable")

    ask(page, "Do you ship to Canada?")
    expect(page.locator("#transcript li.assistant")).to_have_count(2)
    expect(page.locator("#transcript li.assistant").last.get_by_role("link", name="Shipping")).to_be_visible()
    shoot(page, "playground")

    page.get_by_role("button", name="End conversation").click()
    expect(page.locator("#saved")).to_contain_text("Conversation saved (conv-")
    conversation_id = page.locator("#saved").get_attribute("data-conversation-id")
    stored = httpx.get(f"{base}/api/admin/conversations/{conversation_id}",
                       headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "assistant"]
    assert stored["messages"][0]["content"] == "How long do I have to return a jacket?"
    assert stored["metadata"]["source"] == "console"


def test_playground_is_keyboard_usable(page: Page, gateway: Callable[..., str]) -> None:
    page.goto(f"{gateway()}/console/")
    page.keyboard.press("Tab")  # the skip link first
    page.keyboard.press("Enter")
    page.keyboard.type("What is your warranty on tents?")
    page.keyboard.press("Enter")
    expect(page.locator("#transcript li.assistant").last.get_by_role("link")).to_have_count(1)


def test_playground_says_when_the_backend_is_down_then_rate_limited(page: Page, gateway: Callable[..., str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api/chat"
    page.goto(f"{gateway(dead, '    rate_limit: 1/minute')}/console/")
    expect(page.locator("#health")).to_contain_text("the chat backend is not answering")
    ask(page, "Anyone there?")
    expect(page.get_by_role("alert")).to_have_text(
        "No answer: Chat backend could not be reached: connection refused or host unknown. Try again shortly."
    )
    ask(page, "Anyone there now?")
    expect(page.get_by_role("alert")).to_contain_text("Too many requests: the gateway's rate limit was reached. Try again in")
    expect(page.locator("#transcript li.assistant")).to_have_count(0)
    expect(page.get_by_label("Your question")).to_be_enabled()


def test_playground_marks_a_fallback_answer(page: Page, gateway: Callable[..., str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api/chat"
    page.goto(f"{gateway(dead, '    fallback_response: Our assistant is resting.')}/console/")
    ask(page, "Hello?")
    expect(page.locator("#transcript li.assistant").last).to_contain_text("Our assistant is resting.")
    expect(page.locator("#notice")).to_have_text(
        "The chat backend is unavailable right now; this is the gateway's fallback answer."
    )


# -- the dashboard ----------------------------------------------------------------------------


def seed(base: str) -> dict[str, str]:
    """Through the public routes: three chat turns, two logged conversations."""
    sessions = {}
    with httpx.Client(base_url=base) as client:
        for question in ("How long do I have to return a jacket?", "how long do I have to return a jacket",
                         "Do you ship to Canada?"):
            assert client.post("/api/chat", json={"message": question}).status_code == 200
        for name, text in (("tents", "Do you sell tent pegs?"), ("boots", "Are my boots waterproof?")):
            body = {"sessionId": f"session-{name}", "messages": [{"role": "user", "content": text},
                                                                  {"role": "assistant", "content": f"About {name}."}],
                    "metadata": {"duration": 90, "source": "test"}}
            sessions[name] = client.post("/api/conversations/log", json=body).json()["conversationId"]
        deadline = time.monotonic() + 5  # chat turns are written behind the answer
        while client.get("/api/admin/stats", headers={"Authorization": f"Bearer {ADMIN}"}).json()["turns"] < 3:
            assert time.monotonic() < deadline, "chat turns were not recorded"
            time.sleep(0.05)
    return sessions


def test_dashboard_refuses_a_wrong_key_then_shows_what_visitors_did(
    page: Page, gateway: Callable[..., str]
) -> None:
    base = gateway()
    sessions = seed(base)
    page.goto(f"{base}/console/analytics")

    page.get_by_label("Admin key").fill("not-the-admin-key-at-all")
    page.get_by_role("button", name="Open the dashboard").click()
    expect(page.get_by_role("alert")).to_have_text("The admin key was refused. Check it and try again.")
    expect(page.locator("#dashboard")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0

    page.get_by_label("Admin key").fill(ADMIN)
    page.get_by_label("Admin key").press("Enter")
    expect(page.locator("#t-conversations")).to_have_text("2")
    expect(page.locator("#t-turns")).to_have_text("3")
    expect(page.locator("#t-failed")).to_have_text("0.0% 0 of 3")
    expect(page.locator("#t-minutes")).to_have_text("3")
    expect(page.locator("#t-p50")).to_contain_text(" ms")

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    bars = page.locator(f"#activity svg rect[data-day='{today}']")
    expect(bars).to_have_count(2)
    assert page.locator(f"#activity rect[data-series='conversations'][data-day='{today}']").get_attribute("data-value") == "2"
    assert page.locator(f"#activity rect[data-series='turns'][data-day='{today}']").get_attribute("data-value") == "3"
    assert page.locator("#activity rect[data-series='turns']").count() == 14  # every day of the period drawn
    assert float(page.locator(f"#activity rect[data-series='turns'][data-day='{today}']").get_attribute("height") or 0) > 0

    first_question = page.locator("#questions tr").first
    expect(first_question).to_have_text("how long do i have to return a jacket2")
    expect(page.locator("#sources tr").first.get_by_role("link")).to_have_text("Returns & Exchanges")
    expect(page.locator("#conversations tr")).to_have_count(2)
    shoot(page, "dashboard")

    page.get_by_label("Text").fill("tent pegs")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#conversations tr")).to_have_count(1)
    expect(page.locator("#conversations tr")).to_have_attribute("data-id", sessions["tents"])
    page.get_by_label("Text").fill("")
    page.get_by_label("Session").fill("session-boots")
    page.get_by_label("Session").press("Enter")
    expect(page.locator("#conversations tr")).to_have_attribute("data-id", sessions["boots"])

    page.get_by_role("button", name=f"View the transcript of {sessions['boots']}").click()
    expect(page.locator("#transcript li")).to_have_text(["userAre my boots waterproof?", "assistantAbout boots."])
    expect(page.locator("#transcript-panel")).to_be_focused()

    with page.expect_download() as download:
        page.get_by_role("button", name="Conversations (CSV)").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == "conversationId,sessionId,createdAt,messageCount,metadata,messages"
    assert len(lines) == 3 and download.value.suggested_filename.endswith(".csv")
    with page.expect_download() as download:
        page.get_by_role("button", name="Chat turns (JSONL)").click()
    assert len(Path(download.value.path()).read_text().splitlines()) == 3


# -- the microphone: Chromium's fake audio device plays an espeak-ng WAV -----------------------

KNOWLEDGE = Path(__file__).resolve().parent.parent / "examples" / "reference_backend" / "knowledge"
SPOKEN = "How long do I have to return a jacket?"  # tests/test_stt_embedded.py recognises it reliably


def padded(wav: bytes, before: float = 0.4, after: float = 0.6) -> tuple[bytes, float]:
    """``wav`` with silence around it (the recorder starts and stops by hand), and its length."""
    with wave.open(io.BytesIO(wav)) as source:
        params, frames = source.getparams(), source.readframes(source.getnframes())
    silence = b"\0" * params.sampwidth * params.nchannels
    out = io.BytesIO()
    with wave.open(out, "wb") as target:
        target.setparams(params)
        target.writeframes(silence * int(before * params.framerate) + frames + silence * int(after * params.framerate))
    # Not params.nframes: espeak-ng writing to stdout cannot know the length and puts 0x7fffffff there.
    speech = len(frames) / (params.sampwidth * params.nchannels * params.framerate)
    return out.getvalue(), before + speech + after


def test_spoken_question_through_the_microphone_is_answered_with_its_source(
    tmp_path: Path, playwright: Playwright, gateway: Callable[..., str], backend: str
) -> None:
    """The whole microphone path in a real browser: the page opens its avatar session
    (POST /console/session, as the company's page would get one from its server), records
    through Chromium's fake microphone playing espeak-ng speech, uploads the recording to
    /api/transcribe with the session's chatToken (the embedded engine, biased with the
    reference knowledge base), asks the transcript, shows the answer citing the returns
    document, and ends the session with the chatToken when the conversation ends."""
    from tests.stt_support import speak

    audio, seconds = padded(speak(SPOKEN))
    wav = tmp_path / "question.wav"
    wav.write_bytes(audio)
    base = gateway(
        routes_extra="  - path: /api/transcribe\n    handler: transcribe\n"
                     "  - path: /api/sessions/end\n    handler: session_end\n",
        top_extra=f"stt: {{provider: embedded, phrases_file: '{KNOWLEDGE}', concurrency: 1}}",
    )
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",  # played once from the start of each capture
    ])
    started = time.monotonic()
    try:
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(f"{base}/console/")
        expect(page.get_by_role("button", name="Hold to speak")).to_be_visible()  # health reports speech-to-text
        mic = page.locator("#mic")  # its name changes while it records

        with (
            page.expect_response(lambda r: r.url.endswith("/console/session")) as opened,
            page.expect_request(lambda r: r.url.endswith("/api/transcribe") and r.method == "POST") as upload,
        ):
            mic.focus()
            page.keyboard.down(" ")
            expect(mic).to_have_attribute("aria-pressed", "true")
            page.wait_for_timeout(seconds * 1000)
            page.keyboard.up(" ")
        session = opened.value.json()
        assert opened.value.status == 200 and set(session) == {"sessionId", "expiresAt", "chatToken"}
        assert upload.value.headers["authorization"] == f"Bearer {session['chatToken']}"
        assert (upload.value.headers.get("content-type") or "").startswith("multipart/form-data")

        question = page.locator("#transcript li.user").last
        expect(question).to_contain_text("return", timeout=15_000)  # the transcript, asked as the question
        answer = page.locator("#transcript li.assistant").last
        expect(answer).to_contain_text("60 days", timeout=15_000)
        expect(answer.get_by_role("link", name="Returns & Exchanges")).to_have_attribute("href", f"{backend}/docs/returns")
        expect(page.locator("#error")).to_be_empty()

        with page.expect_response(lambda r: r.url.endswith("/api/sessions/end")) as ended:
            page.get_by_role("button", name="End conversation").click()
        assert ended.value.request.headers["authorization"] == f"Bearer {session['chatToken']}"
        assert ended.value.status == 200
        expect(page.locator("#saved")).to_contain_text("Conversation saved (conv-")
        expect(page.locator("body")).to_have_attribute("data-session-ended", "true")
        again = httpx.post(f"{base}/api/sessions/end", headers={"Authorization": f"Bearer {session['chatToken']}"})
        assert again.json() == {"success": True, "sessionId": session["sessionId"], "ended": False}  # already ended
        assert problems == []
    finally:
        browser.close()
    assert time.monotonic() - started < 60, "the microphone path took over a minute"


# -- LiveAvatar: the vendored SDK, and the fallback when it cannot connect ---------------------


def test_with_liveavatar_the_page_loads_the_vendored_sdk_and_falls_back_to_the_browser_voice(
    tmp_path: Path, browser: Browser, backend: str, fake_liveavatar: tuple[FakeLiveAvatar, str]
) -> None:
    """The provider is LiveAvatar (faked on loopback): the session answer hands the page the
    vendor's session token; the page loads the vendored SDK from this origin, which starts the
    session at the (fake) vendor with that token and is told to join a LiveKit room on
    LiveKit Cloud. There is no network here (and LiveKit is not faked), so joining fails: the
    page says so, speaks the answer with the browser's voice instead, and keeps working. The
    widened CSP lets every one of those connections through (a violation would be an error)."""
    fake, vendor_url = fake_liveavatar
    avatar = (f'avatar: {{provider: liveavatar, api_key: "${{LIVEAVATAR_API_KEY}}", base_url: "{vendor_url}",'
              f' signing_secret: "{"s" * 40}"}}')
    yaml_text = gateway_yaml(tmp_path / "g.db", f"{backend}/api/chat", top_extra=avatar,
                             routes_extra="  - path: /api/sessions/end\n    handler: session_end\n")
    settings = make_settings(yaml_text=yaml_text, env={"LIVEAVATAR_API_KEY": LA_KEY})
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append("uncaught: " + str(error)))
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    with serve(create_app(settings)) as base:
        try:
            page.goto(f"{base}/console/")
            expect(page.locator("#health")).to_contain_text("the chat backend is connected")
            with (
                page.expect_response(lambda r: r.url.endswith("/console/session")) as opened,
                page.expect_response(lambda r: r.url.endswith("/console/vendor/liveavatar-web-sdk.js")) as sdk,
            ):
                ask(page, "How long do I have to return a jacket?")
            session = opened.value.json()
            assert session["avatar"] == {"provider": "liveavatar", "sessionToken": LA_SESSION_TOKEN, "apiUrl": vendor_url}
            assert sdk.value.status == 200

            answer = page.locator("#transcript li.assistant").last
            expect(answer).to_contain_text("60 days")
            mode = page.locator("#voice-mode")
            expect(mode).to_have_attribute("data-avatar", "fallback", timeout=20_000)
            expect(mode).to_be_visible()
            expect(mode).to_contain_text("The streaming avatar is not available")
            expect(mode).to_contain_text("the browser speaks the answers instead")
            speech = page.locator("#speech-status")
            expect(speech).to_have_attribute("data-attempts", "1")
            expect(speech).not_to_have_attribute("data-state", "avatar")  # the browser's voice, not the SDK's
            assert page.locator("#avatar-video").is_hidden() and page.locator("#avatar").is_visible()
            # The SDK started the session at the vendor with the session token, never with the key.
            starts = [c for c in fake.calls if c[0] == "/v1/sessions/start"]
            assert starts == [("/v1/sessions/start", None, f"Bearer {LA_SESSION_TOKEN}")]
            assert LA_KEY not in page.content()
            # It went on to join the LiveKit room it was given (the CSP let it try; no network).
            assert sockets and all(url.startswith(f"{LIVEKIT_URL}/rtc?") for url in sockets), sockets
            # The page still works: another answer, spoken by the browser again; then the end.
            ask(page, "Do you ship to Canada?")
            expect(page.locator("#transcript li.assistant")).to_have_count(2)
            expect(speech).to_have_attribute("data-attempts", "2")
            expect(page.locator("#error")).to_be_empty()
            with page.expect_response(lambda r: r.url.endswith("/api/sessions/end")) as ended:
                page.get_by_role("button", name="End conversation").click()
            assert ended.value.status == 200
            expect(page.locator("#saved")).to_contain_text("Conversation saved (conv-")
        finally:
            context.close()
    # The SDK logs its failure to connect; nothing else may go wrong: no CSP violation, no
    # uncaught error.
    assert not [e for e in errors if "Content Security Policy" in e or e.startswith("uncaught")], errors
