"""The mapping language (gateway/mapping.py): request templates, response expressions,
their config errors, and bad backend answers as 502s through the whole app."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pytest_httpx import HTTPXMock

from gateway.config import parse_settings
from gateway.errors import ConfigError, ProviderError
from gateway.mapping import ChatTurn, Expression, build_backend_body, compile_expression, parse_backend_answer

HISTORY = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
TURN = ChatTurn(
    message="Do you ship to Canada?",
    session_id="s-1",
    history=HISTORY,
    context={"locale": "de", "user": {"tier": "gold"}, "history": HISTORY},
    request_id="req-1",
)

ROUTE = """
routes:
  - path: /api/chat
    handler: chat
    upstream: {url: "http://backend.test/api/chat"}
    mapping:
"""


def mapping_from(yaml_text: str) -> Any:
    indented = "\n".join("      " + line for line in yaml_text.strip().splitlines())
    settings = parse_settings(ROUTE + indented + "\n", env={})
    return settings.routes[0].mapping


def body_for(request_yaml: str, turn: ChatTurn = TURN) -> Any:
    request = "\n".join("  " + line for line in request_yaml.strip().splitlines())
    return build_backend_body(mapping_from("request:\n" + request), turn)


# -- request templates ----------------------------------------------------------------

REQUEST_CASES = [
    pytest.param(
        "{model: gpt-4o-mini, stream: false, temperature: 0.2, stop: null, q: $message}",
        {"model": "gpt-4o-mini", "stream": False, "temperature": 0.2, "stop": None, "q": "Do you ship to Canada?"},
        id="constants",
    ),
    pytest.param(
        "{q: $message, options: {num_ctx: 4096, tags: [a, b]}}",
        {"q": "Do you ship to Canada?", "options": {"num_ctx": 4096, "tags": ["a", "b"]}},
        id="constant-objects-and-lists",
    ),
    pytest.param(
        "{query.text: $message, conversation.id: $sessionId, trace: $requestId}",
        {"query": {"text": "Do you ship to Canada?"}, "conversation": {"id": "s-1"}, "trace": "req-1"},
        id="dotted-paths-of-the-first-format",
    ),
    pytest.param(
        "{messages: {$conversation: {}}}",
        {"messages": [*HISTORY, {"role": "user", "content": "Do you ship to Canada?"}]},
        id="conversation-history-in-order-message-last",
    ),
    pytest.param(
        "{messages: {$conversation: {system: Be brief.}}}",
        {"messages": [{"role": "system", "content": "Be brief."}, *HISTORY,
                      {"role": "user", "content": "Do you ship to Canada?"}]},
        id="system-prompt-first",
    ),
    pytest.param(
        "{contents: {$conversation: {roles: {assistant: model}, item: {role: $role, parts: [{text: $content}]}}}}",
        {"contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "Do you ship to Canada?"}]},
        ]},
        id="roles-renamed-and-own-message-shape",
    ),
    pytest.param(
        "{input: $message, chat_history: {$conversation: {include_message: false, roles: {user: human, assistant: ai},"
        " item: {type: $role, content: $content}}}}",
        {"input": "Do you ship to Canada?",
         "chat_history": [{"type": "human", "content": "Hi"}, {"type": "ai", "content": "Hello!"}]},
        id="history-without-the-new-message",
    ),
    pytest.param(
        "{messages: {$conversation: {system: $context.persona}}}",
        {"messages": [*HISTORY, {"role": "user", "content": "Do you ship to Canada?"}]},
        id="system-prompt-from-absent-context-is-left-out",
    ),
    pytest.param(
        "{q: $message, lang: $context.locale, tier: $context.user.tier, missing: $context.user.nope}",
        {"q": "Do you ship to Canada?", "lang": "de", "tier": "gold"},
        id="context-paths-absent-ones-left-out",
    ),
    pytest.param(
        "{q: $message, ctx: $context, turns: $history, ids: [$sessionId, $requestId, $context.none]}",
        {"q": "Do you ship to Canada?", "ctx": TURN.context, "turns": HISTORY, "ids": ["s-1", "req-1"]},
        id="whole-values-and-arrays-of-references",
    ),
]


@pytest.mark.parametrize(("template", "expected"), REQUEST_CASES)
def test_request_templates(template: str, expected: Any) -> None:
    assert body_for(template) == expected


def test_request_templates_are_built_fresh_for_each_turn() -> None:
    mapping = mapping_from("request: {messages: {$conversation: {}}, opts: {a: 1}}")
    first = build_backend_body(mapping, TURN)
    first["messages"].append("mutated")
    first["opts"]["b"] = 2
    second = build_backend_body(mapping, ChatTurn("q2", "s-2", [], {}, "r2"))
    assert second == {"messages": [{"role": "user", "content": "q2"}], "opts": {"a": 1}}


def test_default_mapping_is_the_contract_shape() -> None:
    settings = parse_settings(ROUTE.replace("    mapping:\n", ""), env={})
    assert build_backend_body(settings.routes[0].mapping, TURN) == {
        "message": "Do you ship to Canada?", "sessionId": "s-1", "context": TURN.context,
    }


# -- response expressions ---------------------------------------------------------------

OPENAI = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes."}}]}
RASA = [{"recipient_id": "s", "text": "Yes."}, {"recipient_id": "s", "image": "x.png"}, {"recipient_id": "s", "text": "Soon."}]
CITED = {"data": {"answer": "Yes.", "refs": [{"name": "Shipping", "link": {"href": "https://x/s"}}]}}

RESPONSE_CASES = [
    pytest.param("{response: data.answer, sources: data.refs, source_title: name, source_url: link.href}", CITED,
                 ("Yes.", [{"title": "Shipping", "url": "https://x/s"}]), id="nested-objects"),
    pytest.param("{response: 'choices[0].message.content', sources: null}", OPENAI, ("Yes.", []), id="list-index"),
    pytest.param("{response: '[0].text', sources: null}", RASA, ("Yes.", []), id="first-element"),
    pytest.param("{response: '[-1].text', sources: null}", RASA, ("Soon.", []), id="last-element"),
    pytest.param("{response: \"join(' ', [*].text)\", sources: null}", RASA, ("Yes. Soon.", []), id="join-text-parts"),
    pytest.param("{response: \"join(' ', [*].text)\", sources: null}", [], ("", []), id="join-of-nothing-is-empty"),
    pytest.param("{response: output.answer || output}", {"output": "Plain."}, ("Plain.", []), id="fallback-with-or"),
    pytest.param("{response: answer, sources: 'hits[?url].{title: doc, url: url}'}",
                 {"answer": "A", "hits": [{"doc": "D", "url": "https://d"}, {"doc": "no url"}]},
                 ("A", [{"title": "D", "url": "https://d"}]), id="sources-filtered-and-reshaped"),
    pytest.param("{response: answer}", {"answer": "A"}, ("A", []), id="sources-absent-from-answer"),
    pytest.param("{response: answer, sources: null}", {"answer": "A", "sources": "not a list"}, ("A", []),
                 id="sources-not-configured"),
    pytest.param("{response: the-answer.text}", {"the-answer": {"text": "Dashed."}}, ("Dashed.", []),
                 id="dashed-path-of-the-first-format"),
]


@pytest.mark.parametrize(("response_yaml", "answer", "expected"), RESPONSE_CASES)
def test_response_expressions(response_yaml: str, answer: Any, expected: tuple[str, list[Any]]) -> None:
    assert parse_backend_answer(mapping_from(f"response: {response_yaml}"), answer) == expected


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("a.b", {"a": {"b": 1}}), ("a.b", {"a": [1]}), ("a.b", {"a": None}), ("a[0]", {"a": [5, 6]}),
        ("a[-1]", {"a": [5, 6]}), ("a[2]", {"a": [5, 6]}), ("a[0]", {"a": {"0": 1}}), ("[0].x", [{"x": 1}]),
        ("a[0].b[1].c", {"a": [{"b": [0, {"c": "deep"}]}]}), ("a", [1]), ("a", "text"), ("a.b", {"a": {}}),
    ],
)
def test_plain_paths_walk_like_jmespath(text: str, data: Any) -> None:
    import jmespath

    expression = Expression(text)
    assert expression._steps is not None  # the fast path is the one under test
    assert expression.search(data) == jmespath.search(text, data)


# -- bad backend answers: 502 PROVIDER_ERROR naming the expression, through the app --------

BAD_ANSWERS = [
    pytest.param("{response: 'choices[0].message.content'}", {"choices": []},
                 "Chat backend answer has nothing at 'choices[0].message.content', expected a string", id="index-out-of-range"),
    pytest.param("{response: data.answer}", {"data": {"answer": {"text": "x"}}},
                 "Chat backend answer has an object at 'data.answer', expected a string", id="wrong-type-object"),
    pytest.param("{response: data.answer}", {"data": {"answer": 42}},
                 "Chat backend answer has a number at 'data.answer', expected a string", id="wrong-type-number"),
    pytest.param("{response: data.answer}", "just text",
                 "Chat backend answered with a JSON string, expected an object", id="answer-not-an-object"),
    pytest.param("{response: '[*].text'}", [{"text": "a"}, {"text": "b"}],
                 "Chat backend answer has an array at '[*].text', expected a string; "
                 "to join text parts use join(' ', [*].text)", id="list-of-texts-not-joined"),
    pytest.param("{response: \"join(' ', [*].text)\"}", [{"text": "a"}, {"text": 3}],
                 "Chat backend answer does not fit 'join(' ', [*].text)': join() got a number, expected array-string",
                 id="join-of-non-strings"),
    pytest.param("{response: \"join(' ', [*].text)\"}", {"text": "a"},
                 "Chat backend answer does not fit 'join(' ', [*].text)': join() got a null, expected array-string",
                 id="join-of-nothing-from-an-object"),
    pytest.param("{response: answer, sources: data.refs}", {"answer": "A", "data": {"refs": {"a": 1}}},
                 "Chat backend answer has an object at 'data.refs', expected an array", id="sources-not-a-list"),
    pytest.param("{response: answer, sources: refs, source_url: link.href}", {"answer": "A", "refs": [{"title": "T", "link": "x"}]},
                 "Chat backend answer 'refs[0]' must have string fields 'title' and 'link.href'", id="source-url-missing"),
    pytest.param("{response: answer, sources: refs}", {"answer": "A", "refs": ["https://x"]},
                 "Chat backend answer 'refs[0]' must have string fields 'title' and 'url'", id="source-not-an-object"),
]


@pytest.mark.parametrize(("response_yaml", "answer", "message"), BAD_ANSWERS)
def test_bad_answers_are_502_naming_the_expression(
    client_for, httpx_mock: HTTPXMock, response_yaml: str, answer: Any, message: str
) -> None:
    httpx_mock.add_response(json=answer)
    client = client_for(chat_extra=f"    mapping:\n      response: {response_yaml}")
    r = client.post("/api/chat", json={"message": "hi"})
    assert r.status_code == 502
    assert r.json() == {"error": {"code": "PROVIDER_ERROR", "message": message}}
    assert "backend.test" not in r.text


def test_parse_errors_are_provider_errors_not_crashes() -> None:
    mapping = mapping_from("response: {response: 'sort(items)[0]'}")
    with pytest.raises(ProviderError, match=r"does not fit 'sort\(items\)\[0\]'"):
        parse_backend_answer(mapping, {"items": [1, "a", None]})


def test_sent_body_of_a_full_template_through_the_app(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json=OPENAI)
    client = client_for(chat_extra="""    mapping:
      request:
        model: m
        user: $sessionId
        messages: {$conversation: {system: Be brief.}}
      response: {response: 'choices[0].message.content', sources: null}""")
    r = client.post("/api/chat", json={"message": "q", "sessionId": "s", "history": HISTORY})
    assert r.json() == {"response": "Yes.", "sources": [], "sessionId": "s"}
    request = httpx_mock.get_request()
    assert request is not None
    assert json.loads(request.content) == {"model": "m", "user": "s", "messages": [
        {"role": "system", "content": "Be brief."}, *HISTORY, {"role": "user", "content": "q"}]}


def test_url_placeholders_are_filled_and_encoded(client_for, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url="http://backend.test/sessions/a.b_c/ask?trace=r-9", json={"response": "ok"})
    client = client_for(url="http://backend.test/sessions/{sessionId}/ask?trace={requestId}")
    r = client.post("/api/chat", json={"message": "q", "sessionId": "a.b_c"}, headers={"X-Request-ID": "r-9"})
    assert r.status_code == 200, r.text


# -- config errors: each names its key path -------------------------------------------

P = "routes[0].mapping"
CONFIG_ERRORS = [
    pytest.param("request: {q: $message, who: $user}",
                 f"{P}.request.who: '$user' is not one of: $message, $sessionId, $history, $context, $requestId, $stream",
                 id="unknown-reference"),
    pytest.param("request: {q: $message, lang: '$context..x'}",
                 f"{P}.request.lang: '$context..x' is not one of: $message, $sessionId, $history, $context, $requestId, $stream",
                 id="malformed-context-path"),
    pytest.param("request: {q: $message, r: $role}",
                 f"{P}.request.r: '$role' is only known inside $conversation.item", id="item-variable-outside-item"),
    pytest.param("request: {sender: $sessionId}",
                 f"{P}.request: maps nothing from '$message'; the backend would never see the question", id="no-message"),
    pytest.param("request: {h: {$conversation: {include_message: false}}}",
                 f"{P}.request: maps nothing from '$message'; the backend would never see the question",
                 id="conversation-without-message"),
    pytest.param("request: []", f"{P}.request: [] is not a non-empty mapping of backend field path to value",
                 id="request-not-a-mapping"),
    pytest.param("request: {'a b': $message}", f"{P}.request.a b: 'a b' is not a field path like 'answer' or 'data.answer'",
                 id="bad-key"),
    pytest.param("request: {m: {$conversation: {}, extra: 1}}",
                 f"{P}.request.m: '$conversation' must be the only key of its mapping", id="conversation-with-siblings"),
    pytest.param("request: {m: {$conversation: {system_prompt: x}}}",
                 f"{P}.request.m.$conversation.system_prompt: unknown key (expected one of: system, item, roles, include_message)",
                 id="conversation-unknown-key"),
    pytest.param("request: {m: {$conversation: {roles: {bot: model}}}}",
                 f"{P}.request.m.$conversation.roles.bot: unknown role (expected one of: user, assistant, system)",
                 id="unknown-contract-role"),
    pytest.param("request: {m: {$conversation: {roles: {assistant: ''}}}}",
                 f"{P}.request.m.$conversation.roles.assistant: '' is not a non-empty string", id="empty-role-name"),
    pytest.param("request: {m: {$conversation: {item: [$content]}}}",
                 f"{P}.request.m.$conversation.item: ['$content'] is not a mapping (one message's shape)",
                 id="item-not-a-mapping"),
    pytest.param("request: {m: {$conversation: {item: {text: $content, who: $sender}}}}",
                 f"{P}.request.m.$conversation.item.who: '$sender' is not one of: $message, $sessionId, $history, "
                 "$context, $requestId, $stream, $role, $content", id="unknown-reference-in-item"),
    pytest.param("request: {m: {$conversation: {include_message: 'no'}}}",
                 f"{P}.request.m.$conversation.include_message: 'no' is not true or false", id="include-message-not-bool"),
    pytest.param("response: {response: 'choices[0.message'}",
                 f"{P}.response.response: 'choices[0.message' is not a JMESPath expression "
                 "(Expecting: rbracket, got: dot at column 10)", id="bad-jmespath"),
    pytest.param("response: {response: 'first(items)'}",
                 f"{P}.response.response: 'first(items)' calls first(), which is not a JMESPath function",
                 id="unknown-function"),
    pytest.param("response: {response: 5}",
                 f"{P}.response.response: 5 is not a non-empty string (a JMESPath expression)", id="expression-not-a-string"),
    pytest.param("response: {sources: '', response: a}",
                 f"{P}.response.sources: '' is not a non-empty string (a JMESPath expression)", id="empty-expression"),
    pytest.param("response: {text: answer}",
                 f"{P}.response.text: unknown key (expected one of: response, sources, source_title, source_url)",
                 id="unknown-response-key"),
]


@pytest.mark.parametrize(("mapping_yaml", "message"), CONFIG_ERRORS)
def test_config_errors_name_the_key_path(mapping_yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        mapping_from(mapping_yaml)
    assert str(info.value) == message


def test_unknown_url_placeholder_is_a_config_error() -> None:
    text = ROUTE.replace("http://backend.test/api/chat", "http://backend.test/s/{session}").replace("    mapping:\n", "")
    with pytest.raises(ConfigError) as info:
        parse_settings(text, env={})
    assert str(info.value) == "routes[0].upstream.url: {session} is not a URL placeholder (expected: {sessionId}, {requestId})"


def test_check_command_names_the_key_path(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    config = tmp_path / "gateway.yaml"
    config.write_text(ROUTE + "      response: {response: 'a[0'}\n")
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: routes[0].mapping.response.response: 'a[0' is not a JMESPath expression")


def test_compile_expression_rejects_non_strings_with_path() -> None:
    with pytest.raises(ConfigError, match=r"^x\.y: None is not a non-empty string"):
        compile_expression(None, "x.y")


def test_every_preset_is_valid_yaml_with_a_reference_link() -> None:
    from pathlib import Path

    presets = sorted((Path(__file__).resolve().parent.parent / "examples" / "backends").glob("*.yaml"))
    assert [p.name for p in presets] == ["dialogflow-cx.yaml", "langserve.yaml", "ollama.yaml", "openai.yaml", "rasa.yaml"]
    for preset in presets:
        text = preset.read_text()
        assert "https://" in text.split("routes:")[0], f"{preset.name}: no API reference link in the header"
        assert "Follows" in text, f"{preset.name}: no product versions in the header"
        yaml.safe_load(text)


def test_readme_worked_example_does_what_the_readme_says() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("**A worked example to paste**"):]
    config = section[section.index("```yaml\n") + 8:section.index("```\n", section.index("```yaml\n"))]
    settings = parse_settings(config, env={"CHAT_API_URL": "https://kb.internal/v1/assistant", "BACKEND_API_KEY": "k"})
    mapping = settings.routes[0].mapping
    turn = ChatTurn("Do you ship to Canada?", "s-1", HISTORY, {"locale": "de", "history": HISTORY}, "r-1")
    expected_body = json.loads(section[section.index("```json\n") + 8:section.index("```\n", section.index("```json\n"))])
    assert build_backend_body(mapping, turn) == expected_body
    answer = {"result": {"parts": [{"text": "Yes."}, {"text": "In 5 days."}],
                         "refs": [{"label": "Shipping", "href": "https://kb/ship"}]}}
    assert parse_backend_answer(mapping, answer) == ("Yes. In 5 days.", [{"title": "Shipping", "url": "https://kb/ship"}])
