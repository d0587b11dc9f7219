"""The embedded engine for real: espeak-ng speaks the demo's questions, the audio
(WAV and WebM/Opus) goes to /api/transcribe on PocketSphinx with the reference
knowledge base as domain phrases, the transcript goes to /api/chat in front of the
reference backend, and the answer's first source must be the right document.

Results of a run are in bench/README.md ("Speech-to-text"); the target is 8 of 10.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from examples.reference_backend.app import create_app as reference_backend
from gateway.app import create_app
from gateway.config import parse_settings
from gateway.stt.lm import build_arpa, number_words, pronunciations, words
from tests.conftest import serve
from tests.stt_support import ENGINE_KEY, speak, webm

KNOWLEDGE = Path(__file__).resolve().parent.parent / "examples" / "reference_backend" / "knowledge"
AUTH = {"authorization": f"Bearer {ENGINE_KEY}"}
# The demo's questions, each answered by one knowledge document (none of them is in
# the domain phrases: the language model only has the documents and generic question frames).
QUESTIONS = [
    ("How long do I have to return a jacket?", "returns"),
    ("Do you ship to Canada?", "shipping"),
    ("How much does the Ridgeline tent cost?", "catalog"),
    ("When are your stores open on Sunday?", "stores"),
    ("My zipper broke, is that covered by the warranty?", "warranty"),
    ("Can I pay with PayPal?", "support"),
    ("How do I wash my down jacket?", "care"),
    ("How many points do I earn per dollar?", "loyalty"),
    ("What size jacket fits a large chest?", "sizing"),
    ("How long does express shipping take?", "shipping"),
]
TARGET_HITS = 8


def engine_settings(chat_url: str, **stt: Any) -> Any:
    doc = {
        "server": {"log_format": "json"},
        "storage": {"record_chat_turns": False},
        "auth": {"api_keys": ENGINE_KEY},
        "stt": {"provider": "embedded", "phrases_file": str(KNOWLEDGE), **stt},
        "routes": [
            {"path": "/api/chat", "handler": "chat", "upstream": {"url": chat_url}},
            {"path": "/api/transcribe", "handler": "transcribe", "rate_limit": "off"},
            {"path": "/api/health", "handler": "health"},
        ],
    }
    return parse_settings(json.dumps(doc), env={})


@pytest.fixture(scope="module")
def gateway() -> Iterator[TestClient]:
    with (
        serve(reference_backend(KNOWLEDGE, public_url="http://kb.test")) as backend,
        TestClient(create_app(engine_settings(f"{backend}/api/chat"))) as client,
    ):
        yield client


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        previous, row = row, [i] + [0] * len(hyp)
        for j in range(1, len(hyp) + 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ref[i - 1] != hyp[j - 1]))
    return row[-1], len(ref)


@pytest.mark.parametrize("kind", ["wav", "webm-opus"])
def test_spoken_questions_reach_the_right_source(gateway: TestClient, kind: str) -> None:
    hits, errors, total, report = 0, 0, 0, []
    for question, doc in QUESTIONS:
        audio = speak(question)
        body, media = (audio, "audio/wav") if kind == "wav" else (webm(audio), "audio/webm;codecs=opus")
        r = gateway.post("/api/transcribe", content=body, headers={**AUTH, "content-type": media})
        assert r.status_code == 200, r.text
        text = r.json()["text"]
        assert r.json()["language"] == "en"
        e, n = word_errors(question, text)
        errors, total = errors + e, total + n
        sources = gateway.post("/api/chat", json={"message": text or "?"}).json()["sources"]
        found = sources[0]["url"].rsplit("/", 1)[-1] if sources else None
        hits += found == doc
        report.append(f"{doc:>9} {found or '-':>9}  {text!r}")
    summary = f"{kind}: {hits}/10 right source, WER {errors / total:.2f}"
    print("\n" + summary + "\n" + "\n".join(report))
    assert hits >= TARGET_HITS, summary + "\n" + "\n".join(report)


def test_health_reports_the_loaded_model(gateway: TestClient) -> None:
    assert gateway.get("/api/health").json()["providers"]["stt"] == "connected"


def test_transcripts_of_the_engine_are_domain_words(gateway: TestClient) -> None:
    r = gateway.post("/api/transcribe", content=speak("Ridgeline"), headers={**AUTH, "content-type": "audio/wav"})
    assert r.json()["text"] == "ridgeline"  # a product name PocketSphinx's dictionary lacks


# -- the language model builder, unit level -------------------------------------------


def test_numbers_are_spelled_out() -> None:
    assert number_words(349) == "three hundred forty nine"
    assert words("It costs $1,000 or 7.95") == ["it", "costs", "one", "thousand", "or", "seven", "point", "nine", "five"]


def test_unknown_words_get_a_pronunciation_from_two_known_ones() -> None:
    dictionary = {"ridge": "R IH JH", "line": "L AY N", "pay": "P EY", "pal": "P AE L"}
    found = pronunciations(["ridgeline", "paypal", "xyzzyq", "ridge"], dictionary.get)
    assert found == {"ridgeline": "R IH JH L AY N", "paypal": "P EY P AE L"}


def test_arpa_conditional_probabilities_sum_to_one() -> None:
    arpa = build_arpa([["do", "you", "ship"], ["do", "you", "sell"], ["you", "ship"]])
    grams: dict[int, dict[tuple[str, ...], float]] = {}
    backoff: dict[tuple[str, ...], float] = {}
    order = 0
    for line in arpa.splitlines():
        if m := re.fullmatch(r"\\(\d)-grams:", line):
            order = int(m.group(1))
        elif order and line and not line.startswith("\\"):
            fields = line.split("\t")
            grams.setdefault(order, {})[tuple(fields[1].split())] = 10 ** float(fields[0])
            if len(fields) > 2:
                backoff[tuple(fields[1].split())] = 10 ** float(fields[2])
    unigrams = {g[0]: p for g, p in grams[1].items() if g != ("<s>",)}
    assert grams[2][("do", "you")] == pytest.approx(0.75, abs=1e-3)  # (2 - 0.5) / 2
    for history in ("do", "you"):
        seen = {g[1]: p for g, p in grams[2].items() if g[0] == history}
        unseen = sum(p for w, p in unigrams.items() if w not in seen)
        total = sum(seen.values()) + backoff[(history,)] * unseen
        assert total == pytest.approx(1.0, abs=1e-3)
    assert sum(unigrams.values()) == pytest.approx(1.0, abs=1e-3)
