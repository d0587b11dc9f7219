"""Passage retrieval with Okapi BM25, standard library only.

Documents are Markdown files whose first line is ``# Title``. Each is split
into passages, one per paragraph, carrying the heading it sits under. Text is
tokenized (lowercase words, stopwords removed, step 1 of Porter's stemmer) and
indexed once, twice over: every passage, and every whole document.

Ranking is two-level. A passage's BM25 score (k1 = 1.2, b = 0.75; the title
and heading count ``HEADING_WEIGHT`` times, a simple BM25F) says how well it
matches; its document's BM25 score says whether the question is about that
document at all. A passage ranks by the two, each as a share of the best, so
"Is there a warranty on hiking boots?" lands on the Warranty document, which is
all about warranties, not on the catalog paragraph that happens to say "hiking"
(passage/document score interpolation, as in Callan's "Passage-level evidence
in document retrieval", SIGIR 1994).

An answer then draws on that one document only: its passages whose own BM25
score is at least ``RELATIVE_CUTOFF`` of the best one's, at most
``MAX_PASSAGES``, in document order. In a knowledge base split by topic a
second document scoring close to the first is a coincidence of words far more
often than a second answer, and a spoken answer is better with one source.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

K1 = 1.2
B = 0.75
HEADING_WEIGHT = 2
# Weight of the document's score against the passage's own in the ranking.
DOCUMENT_WEIGHT = 0.5
# Below this BM25 score the best passage is not an answer, only a coincidence of words.
MIN_SCORE = 2.0
# Further passages of the answering document must score this share of its best passage.
RELATIVE_CUTOFF = 0.7
MAX_PASSAGES = 3

# A tiny query-expansion table: question words that imply document words.
EXPANSIONS = {"long": "window day", "much": "cost price", "open": "hour", "when": "hour day"}

_STOPWORD_TEXT = """
a about above after again all am an and any are as at be because been before being below between both but by
can could did do does doing down during each few for from further had has have having he her here hers him his
how i if in into is it its itself just me more most my no nor not now of off on once only or other our ours
out over own same she should so some such than that the their theirs them then there these they this those
through to too under until up very was we were what when where which while who whom why will with would you
your yours yourself get got i'm can't don't does do much many
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_VOWELS = frozenset("aeiou")


def _is_consonant(word: str, i: int) -> bool:
    if word[i] in _VOWELS:
        return False
    if word[i] == "y":  # a consonant at the start or after a vowel ("toy"), a vowel after a consonant ("sky")
        return i == 0 or not _is_consonant(word, i - 1)
    return True


def _measure(stem: str) -> int:
    """Porter's m: how many vowel-consonant sequences ``stem`` has."""
    forms = "".join("c" if _is_consonant(stem, i) else "v" for i in range(len(stem)))
    return len(re.findall(r"v+c+", forms))


def _has_vowel(stem: str) -> bool:
    return any(not _is_consonant(stem, i) for i in range(len(stem)))


def _ends_cvc(word: str) -> bool:
    n = len(word)
    return (
        n >= 3
        and _is_consonant(word, n - 3)
        and not _is_consonant(word, n - 2)
        and _is_consonant(word, n - 1)
        and word[-1] not in "wxy"
    )


def stem(word: str) -> str:
    """Step 1 of Porter's stemmer (1980): plurals, -ed and -ing, final -y.

    Folds "shipping"/"ships"/"ship" and "takes"/"take" together without the
    later steps' aggressive suffix stripping.
    """
    if len(word) <= 2 or not word.isalpha():
        return word
    # Step 1a: plurals.
    if word.endswith(("sses", "ies")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    # Step 1b: -eed, -ed, -ing.
    if word.endswith("eed"):
        if _measure(word[:-3]) > 0:
            word = word[:-1]
    else:
        for suffix in ("ed", "ing"):
            if word.endswith(suffix) and _has_vowel(word[: -len(suffix)]):
                word = word[: -len(suffix)]
                if word.endswith(("at", "bl", "iz")):
                    word += "e"
                elif word[-1] == word[-2] and _is_consonant(word, len(word) - 1) and word[-1] not in "lsz":
                    word = word[:-1]
                elif _measure(word) == 1 and _ends_cvc(word):
                    word += "e"
                break
    # Step 1c: "battery" and "batteries" both end as "batteri".
    if word.endswith("y") and _has_vowel(word[:-1]):
        word = word[:-1] + "i"
    return word


def tokenize(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@dataclass(frozen=True)
class Passage:
    doc: str  # document name (file stem)
    title: str  # document title
    section: str  # nearest heading above the passage ("" if none)
    text: str


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float  # the ranking score: passage and document, each as a share of the best (0 to 1)
    bm25: float  # the passage's own BM25 score


class BM25:
    """Okapi BM25 over tokenized texts."""

    def __init__(self, texts: list[list[str]]) -> None:
        self.lengths = [len(t) for t in texts]
        self.term_freqs = [Counter(t) for t in texts]
        self.avg_len = sum(self.lengths) / max(1, len(texts))
        df: Counter[str] = Counter()
        for tf in self.term_freqs:
            df.update(tf.keys())
        n = len(texts)
        self.idf = {term: math.log(1 + (n - f + 0.5) / (f + 0.5)) for term, f in df.items()}

    def score(self, query_terms: dict[str, float], index: int) -> float:
        tf = self.term_freqs[index]
        length_norm = 1 - B + B * self.lengths[index] / self.avg_len
        total = 0.0
        for term, weight in query_terms.items():
            f = tf.get(term)
            if f:
                total += weight * self.idf[term] * f * (K1 + 1) / (f + K1 * length_norm)
        return total


class BM25Index:
    """Passages ranked by their own BM25 score and their document's (see the module docstring)."""

    def __init__(self, passages: list[Passage], min_score: float = MIN_SCORE) -> None:
        self.passages = passages
        self.min_score = min_score
        self.doc_names = list(dict.fromkeys(p.doc for p in passages))
        fields = [tokenize(p.text) + HEADING_WEIGHT * tokenize(f"{p.title} {p.section}") for p in passages]
        self.passage_bm25 = BM25(fields)
        documents: dict[str, list[str]] = {name: [] for name in self.doc_names}
        section: dict[str, str | None] = dict.fromkeys(self.doc_names)
        for p in passages:
            if not documents[p.doc]:
                documents[p.doc] += HEADING_WEIGHT * tokenize(p.title)
            if section[p.doc] != p.section:  # each heading once, however many paragraphs it has
                documents[p.doc] += HEADING_WEIGHT * tokenize(p.section)
                section[p.doc] = p.section
            documents[p.doc] += tokenize(p.text)
        self.document_bm25 = BM25(list(documents.values()))

    @property
    def idf(self) -> dict[str, float]:
        return self.passage_bm25.idf

    def query_terms(self, query: str, extra: str = "", extra_weight: float = 0.3) -> dict[str, float]:
        """The query's terms with weights: its own 1, expansions 0.5, ``extra`` (a previous question) lower."""
        terms: dict[str, float] = {}
        for term in tokenize(extra):
            terms[term] = extra_weight
        for word in re.findall(r"[a-z]+", query.lower()):
            for term in tokenize(EXPANSIONS.get(word, "")):
                terms[term] = max(terms.get(term, 0.0), 0.5)
        for term in tokenize(query):
            terms[term] = 1.0
        return terms

    def search(self, query: str, limit: int = 3, extra: str = "", extra_weight: float = 0.3) -> list[Hit]:
        """Best passages for ``query``; ``extra`` (e.g. the previous question) adds terms at a lower weight."""
        terms = self.query_terms(query, extra, extra_weight)
        if not terms:
            return []
        bm25 = [self.passage_bm25.score(terms, i) for i in range(len(self.passages))]
        best = max(bm25, default=0.0)
        if best <= 0:
            return []
        doc_scores = [self.document_bm25.score(terms, i) for i in range(len(self.doc_names))]
        doc_share = {name: s / max(doc_scores) for name, s in zip(self.doc_names, doc_scores, strict=True)}
        hits = [
            Hit(p, (1 - DOCUMENT_WEIGHT) * s / best + DOCUMENT_WEIGHT * doc_share[p.doc], s)
            for p, s in zip(self.passages, bm25, strict=True)
            if s > 0
        ]
        hits.sort(key=lambda h: h.score, reverse=True)
        return hits[:limit]

    def answer(self, query: str, extra: str = "") -> list[Hit]:
        """The passages to answer with: from the best-ranked passage's document only (see the module docstring)."""
        hits = self.search(query, limit=len(self.passages), extra=extra)
        if not hits or hits[0].bm25 < self.min_score:
            return []
        # Within one document the ranking follows the passages' own scores, so the first
        # hit is its best passage and the others come in order.
        best = hits[0]
        same = [h for h in hits if h.passage.doc == best.passage.doc and h.bm25 >= RELATIVE_CUTOFF * best.bm25]
        return sorted(same[:MAX_PASSAGES], key=lambda h: self.passages.index(h.passage))


def load_passages(directory: Path) -> list[Passage]:
    passages: list[Passage] = []
    for path in sorted(directory.glob("*.md")):
        passages.extend(_passages_of(path))
    return passages


def _passages_of(path: Path) -> list[Passage]:
    lines = path.read_text(encoding="utf-8").splitlines()
    title = path.stem.replace("-", " ").title()
    if lines and lines[0].startswith("# "):
        title = lines[0][2:].strip()
        lines = lines[1:]
    out: list[Passage] = []
    section = ""
    paragraph: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("#") or not line.strip():
            if paragraph:
                out.append(Passage(path.stem, title, section, " ".join(paragraph)))
                paragraph = []
            if line.startswith("#"):
                section = line.lstrip("#").strip()
        else:
            paragraph.append(line.strip())
    return out
