"""Each preset in examples/backends/ run by the real gateway against a strict fake of its product.

Every fake speaks the product's documented wire format and refuses what the product
would refuse (unknown fields, a missing model, roles it does not know, a missing
credential), so a preset that drifts from the product fails here. The fakes are
deliberately stricter than some products (Rasa ignores unknown fields; the fake
refuses them) so drift shows up even where the product would silently ignore it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.cli import main
from gateway.config import load_settings
from tests.conftest import make_settings, serve

pytestmark = pytest.mark.integration

PRESETS = Path(__file__).resolve().parent.parent / "examples" / "backends"
API_KEY = "sk-test-0123456789"
MODEL = "llama3.2"
QUESTION = "Do you ship to Canada?"
HISTORY = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]
SESSION = "web-42"


@dataclass
class Fake:
    """One product on loopback: the requests it accepted, and its refusals."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def record(self, request: Request, body: Any) -> None:
        self.seen.append({"body": body, "headers": dict(request.headers), "raw_path": request.scope["raw_path"]})


def _unknown(data: dict[str, Any], allowed: tuple[str, ...]) -> str | None:
    return next((key for key in data if key not in allowed), None)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


def split(text: str) -> list[str]:
    """A text in the pieces a model streams it in (a word and its space)."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


# -- OpenAI chat completions -------------------------------------------------------

OPENAI_FIELDS = ("model", "messages", "stream", "temperature", "top_p", "max_tokens", "max_completion_tokens",
                 "n", "stop", "user", "seed", "presence_penalty", "frequency_penalty", "response_format")
OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool")


def openai_app(fake: Fake) -> Starlette:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": None}}, status)

    async def completions(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return error(401, "Incorrect API key provided")
        body = await _json(request)
        if not isinstance(body, dict):
            return error(400, "We could not parse the JSON body of your request.")
        if (key := _unknown(body, OPENAI_FIELDS)) is not None:
            return error(400, f"Unrecognized request argument supplied: {key}")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return error(400, "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "'messages' must be a non-empty array")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or _unknown(m, ("role", "content", "name")) or not isinstance(m.get("content"), str):
                return error(400, f"Invalid value for 'messages[{i}]'")
            if m.get("role") not in OPENAI_ROLES:
                return error(400, f"Invalid value: '{m.get('role')}'. Supported values are: {OPENAI_ROLES}")
        fake.record(request, body)
        content = f"Yes, we ship to Canada. ({len(messages)} messages seen)"
        if body.get("stream"):  # chat.completion.chunk events: the role first, the text in pieces, a finish, [DONE]
            deltas = [{"role": "assistant", "content": ""}, *({"content": p} for p in split(content)), {}]
            chunks = [{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1732500000, "model": body["model"],
                       "choices": [{"index": 0, "delta": d, "finish_reason": None if d else "stop"}]} for d in deltas]
            return Response("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n",
                            media_type="text/event-stream")
        return JSONResponse({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1732500000, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
        })

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


# -- Ollama /api/chat --------------------------------------------------------------


def ollama_app(fake: Fake) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await _json(request)
        if not isinstance(body, dict):
            return JSONResponse({"error": "invalid request body"}, 400)
        if (key := _unknown(body, ("model", "messages", "stream", "format", "options", "keep_alive", "tools",
                                   "think"))) is not None:
            return JSONResponse({"error": f"json: unknown field \"{key}\""}, 400)
        if not isinstance(body.get("model"), str) or not body["model"]:
            return JSONResponse({"error": "model is required"}, 400)
        messages = body.get("messages")
        if not isinstance(messages, list):
            return JSONResponse({"error": "messages is required"}, 400)
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                return JSONResponse({"error": "invalid message"}, 400)
            if m.get("role") not in ("system", "user", "assistant", "tool"):
                return JSONResponse({"error": f"invalid role: {m.get('role')}"}, 400)
        if body["model"] != MODEL:
            return JSONResponse({"error": f"model \"{body['model']}\" not found, try pulling it first"}, 404)
        fake.record(request, body)
        message = {"role": "assistant", "content": f"Yes, we ship to Canada. ({len(messages)} messages seen)"}
        if body.get("stream", True) is not False:  # Ollama streams unless told not to
            lines = [{"model": MODEL, "message": {"role": "assistant", "content": p}, "done": False}
                     for p in split(message["content"])]
            lines.append({"model": MODEL, "message": {"role": "assistant", "content": ""}, "done": True,
                          "done_reason": "stop"})
            return Response("".join(json.dumps(line) + "\n" for line in lines), media_type="application/x-ndjson")
        return JSONResponse({"model": MODEL, "created_at": "2026-11-25T10:00:00Z", "message": message,
                             "done_reason": "stop", "done": True, "total_duration": 1000, "eval_count": 9})

    return Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])


# -- Rasa REST channel -------------------------------------------------------------


def rasa_app(fake: Fake) -> Starlette:
    async def webhook(request: Request) -> Response:
        body = await _json(request)
        if not isinstance(body, dict) or _unknown(body, ("sender", "message", "metadata")) is not None:
            return JSONResponse({"error": "expected {sender, message, metadata?}"}, 400)
        if not isinstance(body.get("sender"), str) or not isinstance(body.get("message"), str):
            return JSONResponse({"error": "'sender' and 'message' must be strings"}, 400)
        fake.record(request, body)
        sender = body["sender"]
        return JSONResponse([
            {"recipient_id": sender, "text": "Yes, we ship to Canada."},
            {"recipient_id": sender, "image": "https://example.com/map.png"},
            {"recipient_id": sender, "text": "Delivery takes 5 to 7 days."},
            {"recipient_id": sender, "custom": {"sources": [{"title": "Shipping", "url": "https://example.com/shipping"}]}},
        ])

    return Starlette(routes=[Route("/webhooks/rest/webhook", webhook, methods=["POST"])])


# -- LangServe /invoke (a create_retrieval_chain) -------------------------------------


def langserve_app(fake: Fake) -> Starlette:
    def invalid(loc: list[Any], msg: str) -> JSONResponse:  # FastAPI's validation error shape
        return JSONResponse({"detail": [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}]}, 422)

    async def invoke(request: Request) -> Response:
        body = await _json(request)
        if not isinstance(body, dict) or _unknown(body, ("input", "config", "kwargs")) is not None:
            return invalid([], "extra fields not permitted")
        chain_input = body.get("input")
        if not isinstance(chain_input, dict) or set(chain_input) != {"input", "chat_history"}:
            return invalid(["input"], "expected {input, chat_history}")
        if not isinstance(chain_input["input"], str):
            return invalid(["input", "input"], "str type expected")
        history = chain_input["chat_history"]
        if not isinstance(history, list):
            return invalid(["input", "chat_history"], "value is not a valid list")
        for i, m in enumerate(history):
            if not isinstance(m, dict) or m.get("type") not in ("human", "ai", "system") \
                    or not isinstance(m.get("content"), str):
                return invalid(["input", "chat_history", i], "not a valid message")
        fake.record(request, body)
        docs = [
            {"page_content": "We ship to Canada.", "metadata": {"source": "https://example.com/shipping", "title": "Shipping"},
             "type": "Document"},
            {"page_content": "Returns within 30 days.", "metadata": {"source": "https://example.com/returns"},
             "type": "Document"},
            {"page_content": "An untitled note.", "metadata": {}, "type": "Document"},
        ]
        output = {**chain_input, "context": docs, "answer": f"Yes, we ship to Canada. ({len(history)} earlier messages)"}
        return JSONResponse({"output": output, "metadata": {"run_id": "5f1c", "feedback_tokens": []}})

    return Starlette(routes=[Route("/rag/invoke", invoke, methods=["POST"])])


# -- Dialogflow CX detectIntent ------------------------------------------------------

DF_QUERY_INPUT = ("text", "intent", "audio", "event", "dtmf", "toolCallResult", "languageCode")
DF_QUERY_PARAMS = ("timeZone", "geoLocation", "sessionEntityTypes", "payload", "parameters", "currentPage",
                   "disableWebhook", "analyzeQueryTextSentiment", "webhookHeaders", "flowVersions", "channel",
                   "sessionTtl", "endUserMetadata", "searchConfig", "populateDataStoreConnectionSignals")


def dialogflow_app(fake: Fake) -> Starlette:
    def error(status: int, message: str) -> JSONResponse:
        name = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED"}[status]
        return JSONResponse({"error": {"code": status, "message": message, "status": name}}, status)

    async def detect_intent(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return error(401, "Request had invalid authentication credentials.")
        session = request.path_params["session"]
        if len(session) > 36:
            return error(400, "Session ID must be at most 36 characters.")
        body = await _json(request)
        if not isinstance(body, dict) or _unknown(body, ("queryInput", "queryParams", "outputAudioConfig")):
            return error(400, "Invalid JSON payload received. Unknown name.")
        query_input, params = body.get("queryInput"), body.get("queryParams", {})
        if not isinstance(query_input, dict) or _unknown(query_input, DF_QUERY_INPUT):
            return error(400, "Invalid JSON payload received. Unknown name in queryInput.")
        if not isinstance(query_input.get("languageCode"), str):
            return error(400, "queryInput.languageCode is required.")
        text = query_input.get("text")
        if not isinstance(text, dict) or set(text) != {"text"} or not isinstance(text["text"], str):
            return error(400, "queryInput.text.text is required.")
        if not isinstance(params, dict) or _unknown(params, DF_QUERY_PARAMS):
            return error(400, "Invalid JSON payload received. Unknown name in queryParams.")
        fake.record(request, body)
        signals = {"citedSnippets": [] if not params.get("populateDataStoreConnectionSignals") else [
            {"searchSnippet": {"documentTitle": "Shipping", "documentUri": "https://example.com/shipping",
                               "text": "We ship to Canada."}, "snippetIndex": 0},
            {"searchSnippet": {"documentTitle": "Internal FAQ", "text": "No URI for this one."}, "snippetIndex": 1},
        ]}
        return JSONResponse({
            "responseId": "0f0e-r1",
            "queryResult": {
                "text": text["text"], "languageCode": query_input["languageCode"],
                "responseMessages": [
                    {"text": {"text": ["Yes, we ship to Canada."]}},
                    {"payload": {"richContent": [[{"type": "info", "title": "Shipping"}]]}},
                    {"text": {"text": ["Delivery takes 5 to 7 days."], "allowPlaybackInterruption": False}},
                ],
                "currentPage": {"name": "projects/p/locations/global/agents/a/flows/f/pages/START_PAGE"},
                "match": {"matchType": "KNOWLEDGE_CONNECTOR", "confidence": 1},
                "dataStoreConnectionSignals": signals,
            },
        })

    path = "/v3/projects/{project}/locations/{location}/agents/{agent}/sessions/{session}:detectIntent"
    return Starlette(routes=[Route(path, detect_intent, methods=["POST"])])


@dataclass(frozen=True)
class Preset:
    file: str
    app: Callable[[Fake], Starlette]
    path: str  # on the fake; CHAT_API_URL = fake URL + path


CASES = {
    "openai": Preset("openai.yaml", openai_app, "/v1/chat/completions"),
    "ollama": Preset("ollama.yaml", ollama_app, "/api/chat"),
    "rasa": Preset("rasa.yaml", rasa_app, "/webhooks/rest/webhook"),
    "langserve": Preset("langserve.yaml", langserve_app, "/rag/invoke"),
    "dialogflow-cx": Preset(
        "dialogflow-cx.yaml", dialogflow_app, "/v3/projects/p/locations/global/agents/a/sessions/{sessionId}:detectIntent"
    ),
}


def preset_env(url: str, tmp_path: Path) -> dict[str, str]:
    return {"CHAT_API_URL": url, "BACKEND_API_KEY": API_KEY, "BACKEND_MODEL": MODEL,
            "DATABASE_URL": f"sqlite:///{tmp_path}/gateway.db"}


@pytest.fixture
def preset_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Fake, str]]:
    case = CASES[request.param]
    fake = Fake()
    with serve(case.app(fake)) as backend:
        settings = load_settings(PRESETS / case.file, env=preset_env(backend + case.path, tmp_path))
        with serve(create_app(settings)) as gateway:
            yield fake, gateway


def ask(gateway: str) -> httpx.Response:
    return httpx.post(f"{gateway}/api/chat", json={"message": QUESTION, "sessionId": SESSION, "history": HISTORY},
                      timeout=10)


SYSTEM = "You are the assistant on our website. Answer briefly; an avatar speaks your answers."
CHAT_MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": QUESTION},
]


@pytest.mark.parametrize("preset_gateway", ["openai"], indirect=True)
def test_openai_preset(preset_gateway: tuple[Fake, str]) -> None:
    fake, gateway = preset_gateway
    r = ask(gateway)
    assert r.status_code == 200, r.text
    assert r.json() == {"response": "Yes, we ship to Canada. (4 messages seen)", "sources": [], "sessionId": SESSION}
    (seen,) = fake.seen
    assert seen["body"] == {"model": MODEL, "stream": False, "messages": CHAT_MESSAGES}
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("preset_gateway", ["ollama"], indirect=True)
def test_ollama_preset(preset_gateway: tuple[Fake, str]) -> None:
    fake, gateway = preset_gateway
    r = ask(gateway)
    assert r.status_code == 200, r.text
    assert r.json() == {"response": "Yes, we ship to Canada. (4 messages seen)", "sources": [], "sessionId": SESSION}
    (seen,) = fake.seen
    assert seen["body"] == {"model": MODEL, "stream": False, "messages": CHAT_MESSAGES}


@pytest.mark.parametrize("preset_gateway", ["openai", "ollama"], indirect=True)
def test_streaming_presets_stream_when_the_client_asks(preset_gateway: tuple[Fake, str]) -> None:
    fake, gateway = preset_gateway
    events = []
    body = {"message": QUESTION, "sessionId": SESSION, "history": HISTORY}
    with httpx.stream("POST", f"{gateway}/api/chat", json=body, headers={"Accept": "text/event-stream"}, timeout=10) as r:
        assert r.status_code == 200
        name = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    answer = "Yes, we ship to Canada. (4 messages seen)"
    assert [text["text"] for name, text in events if name == "delta"] == split(answer)
    assert events[-1] == ("done", {"response": answer, "sources": [], "sessionId": SESSION})
    (seen,) = fake.seen
    assert seen["body"] == {"model": MODEL, "stream": True, "messages": CHAT_MESSAGES}


@pytest.mark.parametrize("preset_gateway", ["rasa"], indirect=True)
def test_rasa_preset_joins_texts_and_collects_custom_sources(preset_gateway: tuple[Fake, str]) -> None:
    fake, gateway = preset_gateway
    r = ask(gateway)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "response": "Yes, we ship to Canada. Delivery takes 5 to 7 days.",
        "sources": [{"title": "Shipping", "url": "https://example.com/shipping"}],
        "sessionId": SESSION,
    }
    (seen,) = fake.seen
    assert seen["body"] == {"sender": SESSION, "message": QUESTION}


@pytest.mark.parametrize("preset_gateway", ["langserve"], indirect=True)
def test_langserve_preset_sends_history_apart_and_cites_documents(preset_gateway: tuple[Fake, str]) -> None:
    fake, gateway = preset_gateway
    r = ask(gateway)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "response": "Yes, we ship to Canada. (2 earlier messages)",
        "sources": [
            {"title": "Shipping", "url": "https://example.com/shipping"},
            {"title": "https://example.com/returns", "url": "https://example.com/returns"},
        ],
        "sessionId": SESSION,
    }
    (seen,) = fake.seen
    assert seen["body"] == {"input": {"input": QUESTION, "chat_history": [
        {"type": "human", "content": "Hi"}, {"type": "ai", "content": "Hello! How can I help?"}]}}


@pytest.mark.parametrize("preset_gateway", ["dialogflow-cx"], indirect=True)
def test_dialogflow_cx_preset_session_in_path_texts_joined_snippets_cited(preset_gateway: tuple[Fake, str]) -> None:
    fake, gateway = preset_gateway
    r = ask(gateway)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "response": "Yes, we ship to Canada. Delivery takes 5 to 7 days.",
        "sources": [{"title": "Shipping", "url": "https://example.com/shipping"}],
        "sessionId": SESSION,
    }
    (seen,) = fake.seen
    assert seen["body"] == {"queryInput": {"text": {"text": QUESTION}, "languageCode": "en"},
                            "queryParams": {"populateDataStoreConnectionSignals": True}}
    assert seen["raw_path"].endswith(b"/sessions/web-42:detectIntent")
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("preset_gateway", ["dialogflow-cx"], indirect=True)
def test_dialogflow_cx_preset_refuses_session_ids_dialogflow_would_refuse(preset_gateway: tuple[Fake, str]) -> None:
    fake, gateway = preset_gateway
    r = httpx.post(f"{gateway}/api/chat", json={"message": QUESTION, "sessionId": "s" * 37})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("Field 'sessionId' must be 1 to 36 characters")
    assert fake.seen == []


@pytest.mark.parametrize("name", list(CASES))
def test_contract_shape_is_refused_by_every_product_fake(name: str, tmp_path: Path) -> None:
    """The fakes are strict: the gateway's default mapping (the contract's own
    {message, sessionId, context}) does not pass any of them, so a preset that drifted
    back towards it, or anywhere else the product does not accept, fails its test."""
    case = CASES[name]
    fake = Fake()
    with serve(case.app(fake)) as backend:
        url = (backend + case.path).replace("{sessionId}", "s1")
        settings = make_settings(url=url)
        with serve(create_app(settings)) as gateway:
            r = httpx.post(f"{gateway}/api/chat", json={"message": QUESTION}, timeout=10,
                           headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "PROVIDER_ERROR"
    assert fake.seen == []


BAD_BODIES = [
    pytest.param("openai", {"messages": [{"role": "user", "content": "q"}]}, 400, id="openai-missing-model"),
    pytest.param("openai", {"model": MODEL, "messages": [{"role": "human", "content": "q"}]}, 400, id="openai-unknown-role"),
    pytest.param("openai", {"model": MODEL, "message": "q"}, 400, id="openai-wrong-field"),
    pytest.param("openai", {"model": MODEL, "messages": [{"role": "user", "text": "q"}]}, 400, id="openai-message-field"),
    pytest.param("ollama", {"messages": [{"role": "user", "content": "q"}], "stream": False}, 400, id="ollama-missing-model"),
    pytest.param("ollama", {"model": MODEL, "messages": [{"role": "model", "content": "q"}], "stream": False}, 400,
                 id="ollama-unknown-role"),
    pytest.param("ollama", {"model": "gpt-4", "messages": [], "stream": False}, 404, id="ollama-model-not-pulled"),
    pytest.param("rasa", {"sender": "s", "text": "q"}, 400, id="rasa-wrong-field"),
    pytest.param("rasa", {"message": "q", "sessionId": "s"}, 400, id="rasa-contract-field"),
    pytest.param("langserve", {"input": "q"}, 422, id="langserve-input-not-object"),
    pytest.param("langserve", {"input": {"input": "q", "chat_history": [{"role": "user", "content": "x"}]}}, 422,
                 id="langserve-openai-style-history"),
    pytest.param("dialogflow-cx", {"queryInput": {"text": {"text": "q"}}}, 400, id="dialogflow-missing-language"),
    pytest.param("dialogflow-cx", {"queryInput": {"text": "q", "languageCode": "en"}}, 400, id="dialogflow-text-not-object"),
    pytest.param("dialogflow-cx", {"query_input": {"text": {"text": "q"}, "languageCode": "en"}}, 400,
                 id="dialogflow-snake-case"),
]


@pytest.mark.parametrize(("name", "body", "status"), BAD_BODIES)
def test_fakes_refuse_what_the_product_refuses(name: str, body: dict[str, Any], status: int) -> None:
    case = CASES[name]
    fake = Fake()
    with serve(case.app(fake)) as backend:
        url = (backend + case.path).replace("{sessionId}", "s1")
        r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == status
    assert fake.seen == []


def test_ollama_fake_streams_unless_told_not_to() -> None:
    """Why the Ollama preset sends stream: $stream (false unless the client wants events): without it
    the answer is NDJSON, not one JSON object."""
    with serve(ollama_app(Fake())) as backend:
        r = httpx.post(f"{backend}/api/chat", json={"model": MODEL, "messages": [{"role": "user", "content": "q"}]})
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.strip().splitlines()]
    assert len(lines) > 2 and [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]


# -- avatar-gateway try ------------------------------------------------------------


def test_try_shows_the_body_masks_the_key_and_prints_what_was_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(openai_app(Fake())) as backend:
        for key, value in preset_env(backend + "/v1/chat/completions", tmp_path).items():
            monkeypatch.setenv(key, value)
        code = main(["try", QUESTION, "--config", str(PRESETS / "openai.yaml"), "--session", "s1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert API_KEY not in out
    assert "   Authorization: Bearer ****" in out
    assert '"model": "llama3.2"' in out and f'"content": "{QUESTION}"' in out
    assert "<- HTTP 200" in out
    assert "response: Yes, we ship to Canada. (2 messages seen)" in out
    assert "sources:  []" in out


def test_try_says_exactly_where_extraction_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The OpenAI preset pointed at Ollama's native API: the body passes, the answer does not fit.
    with serve(ollama_app(Fake())) as backend:
        for key, value in preset_env(backend + "/api/chat", tmp_path).items():
            monkeypatch.setenv(key, value)
        code = main(["try", QUESTION, "--config", str(PRESETS / "openai.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert '"done": true' in out  # the backend's answer is shown
    assert out.rstrip().endswith(
        "extraction failed: Chat backend answer has nothing at 'choices[0].message.content', expected a string"
    )


def test_try_shows_the_backends_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(openai_app(Fake())) as backend:
        for key, value in preset_env(backend + "/v1/chat/completions", tmp_path).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("BACKEND_API_KEY", "sk-wrong-key-000000")
        code = main(["try", QUESTION, "--config", str(PRESETS / "openai.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert "sk-wrong-key" not in out
    assert "<- HTTP 401" in out and "Incorrect API key provided" in out
    assert "failed: Chat backend answered HTTP 401 (the body above says why)" in out
