"""The reference backend in examples/: BM25 ranking, answers with sources, its HTTP surface."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from examples.reference_backend.app import NO_MATCH, create_app
from examples.reference_backend.retrieval import BM25Index, Passage, load_passages, stem, tokenize
from tests.conftest import serve


def passage(text: str, doc: str = "d") -> Passage:
    return Passage(doc=doc, title=doc.title(), section="", text=text)


def test_tokenize_drops_stopwords_and_stems() -> None:
    assert tokenize("The tents are shipping to Canada!") == ["tent", "ship", "canada"]


@pytest.mark.parametrize(
    ("words", "stemmed"),
    [
        # Examples from Porter's paper, step 1.
        (["caresses", "caress"], "caress"),
        (["ponies"], "poni"),
        (["cats", "cat"], "cat"),
        (["agreed", "agree"], "agree"),
        (["plastered"], "plaster"),
        (["motoring"], "motor"),
        (["sing"], "sing"),
        (["conflated"], "conflate"),
        (["hopping"], "hop"),
        (["falling"], "fall"),
        (["filing", "file"], "file"),
        (["happy"], "happi"),
        # What it is here for: a question's words meet the document's.
        (["ship", "ships", "shipping", "shipped"], "ship"),
        (["take", "takes"], "take"),
        (["size", "sizes", "sizing", "sized"], "size"),
        (["battery", "batteries"], "batteri"),
        (["glass"], "glass"),
    ],
)
def test_porter_step_one(words: list[str], stemmed: str) -> None:
    assert {stem(w) for w in words} == {stemmed}


def test_bm25_ranks_by_term_rarity_and_frequency() -> None:
    index = BM25Index(
        [
            passage("waterproof jacket jacket with hood", "a"),
            passage("jacket for winter", "b"),
            passage("tent for winter camping", "c"),
        ]
    )
    hits = index.search("waterproof jacket")
    assert [h.passage.doc for h in hits] == ["a", "b"]
    assert hits[0].score > hits[1].score > 0
    # 'winter' appears in two passages, 'tent' in one: the rarer term decides.
    assert index.search("winter tent")[0].passage.doc == "c"
    assert index.idf[stem("tent")] > index.idf["winter"]


def test_no_terms_no_hits() -> None:
    index = BM25Index([passage("jacket")])
    assert index.search("the and of") == []
    assert index.search("kayak") == []


def test_follow_up_terms_count_less_than_the_question() -> None:
    index = BM25Index([passage("ship to canada", "ship"), passage("return to canada store", "ret")])
    assert index.search("return", extra="ship canada")[0].passage.doc == "ret"


def test_the_document_about_the_question_wins_a_near_tie() -> None:
    # "hiking" is rarer than "warranty", so the catalog's paragraph alone would win on its own
    # BM25 score; the warranty document, all about warranties, wins once documents count.
    index = BM25Index(
        [
            Passage("catalog", "Catalog", "", "We design gear for hiking and camping."),
            Passage("catalog", "Catalog", "Tents", "A tent for two."),
            Passage("warranty", "Warranty", "", "All gear has a lifetime warranty against defects."),
            Passage("warranty", "Warranty", "Claims", "Send photos of the defect to support."),
        ],
        min_score=0,
    )
    hits = index.search("Is there a warranty on hiking boots?")
    assert hits[0].passage.doc == "warranty"
    assert [h.passage.doc for h in index.answer("Is there a warranty on hiking boots?")] == ["warranty", "warranty"]


def test_an_answer_takes_close_passages_of_one_document_in_document_order() -> None:
    index = BM25Index(
        [
            Passage("returns", "Returns", "Window", "Refunds within 60 days of delivery."),
            Passage("returns", "Returns", "Exchanges", "Exchanges for another color are free."),
            Passage("returns", "Returns", "How to", "Print the label and drop the parcel at any post office."),
            Passage("returns", "Returns", "Used gear", "Used gear is repaired, never taken back; a refund is rare "
                    "for gear with wear, tear, stains, scratches, holes or burns from the campfire."),
            Passage("support", "Support", "", "We label every parcel."),
        ],
        min_score=0,
    )
    ranked = index.search("refund label", limit=10)
    assert [h.passage.section for h in ranked[:3]] == ["How to", "Window", "Used gear"]
    # Support's one short paragraph has the best BM25 score of all, but the question is about returns.
    assert ranked[3].passage.doc == "support" and ranked[3].bm25 > ranked[0].bm25
    # The best two score close to each other, the third far less.
    assert [h.passage.section for h in index.answer("refund label")] == ["Window", "How to"]


def test_passages_carry_title_and_section(tmp_path: Path) -> None:
    (tmp_path / "guide.md").write_text("# Guide\n\nIntro para.\n\n## Part\n\nLine one\ncontinues.\n\nSecond.\n")
    passages = load_passages(tmp_path)
    assert [(p.title, p.section, p.text) for p in passages] == [
        ("Guide", "", "Intro para."),
        ("Guide", "Part", "Line one continues."),
        ("Guide", "Part", "Second."),
    ]


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(public_url="http://kb.example"))


@pytest.mark.parametrize(
    ("question", "doc", "phrase"),
    [
        ("How long do I have to return a jacket?", "returns", "60 days"),
        ("Do you ship to Canada?", "shipping", "Canada"),
        ("How much does the Ridgeline tent cost?", "catalog", "$349"),
        ("When are your stores open on Sunday?", "stores", "11 am to 6 pm"),
        ("My zipper broke, is that covered by the warranty?", "warranty", "broken zippers"),
        ("Can I pay with PayPal?", "support", "PayPal"),
    ],
)
def test_questions_retrieve_the_right_document(client: TestClient, question: str, doc: str, phrase: str) -> None:
    r = client.post("/api/chat", json={"message": question, "sessionId": "s", "context": {}})
    assert r.status_code == 200
    body = r.json()
    assert body["sources"][0]["url"] == f"http://kb.example/docs/{doc}"
    assert phrase in body["response"]


@pytest.mark.parametrize(
    ("question", "title", "phrase"),
    [
        # The examples of issue 18: the 60-day window was missing, a second source wandered in.
        ("What is your return policy?", "Returns & Exchanges", "within 60 days"),
        ("Is there a warranty on hiking boots?", "Warranty", "lifetime warranty"),
        ("Which size should I buy?", "Sizing Guide", "between sizes"),
    ],
)
def test_answers_cite_only_the_document_they_come_from(client: TestClient, question: str, title: str, phrase: str) -> None:
    body = client.post("/api/chat", json={"message": question, "sessionId": "s", "context": {}}).json()
    assert [s["title"] for s in body["sources"]] == [title]
    assert phrase in body["response"]
    assert body["response"].startswith(f"From our {title} (")


def test_unrelated_question_gets_no_sources(client: TestClient) -> None:
    r = client.post("/api/chat", json={"message": "What is the meaning of life?", "sessionId": "s", "context": {}})
    assert r.json() == {"response": NO_MATCH, "sources": []}


def test_short_follow_up_uses_the_history(client: TestClient) -> None:
    history = [{"role": "user", "content": "Do you ship to Canada?"}, {"role": "assistant", "content": "Yes."}]
    r = client.post("/api/chat", json={"message": "How much does it cost?", "context": {"history": history}})
    assert r.json()["sources"][0]["title"] == "Shipping"


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"not json", 400), (b'{"message": ""}', 400), (b'{"message": 5}', 400), (b"[1]", 400)],
)
def test_bad_input_is_400(client: TestClient, body: bytes, status: int) -> None:
    r = client.post("/api/chat", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert "error" in r.json()


def test_documents_are_served_and_traversal_is_refused(client: TestClient) -> None:
    r = client.get("/docs/returns")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/markdown")
    assert r.text.startswith("# Returns & Exchanges")
    assert client.get("/docs/nope").status_code == 404
    assert client.get("/docs/..%2Fapp.py").status_code == 404
    assert client.get("/health").json() == {"status": "ok", "documents": 9}


@pytest.mark.integration
def test_over_a_real_socket() -> None:
    with serve(create_app()) as url:
        r = httpx.post(f"{url}/api/chat", json={"message": "Do you ship to Canada?", "sessionId": "s", "context": {}})
        assert r.status_code == 200
        assert r.json()["sources"][0]["title"] == "Shipping"
