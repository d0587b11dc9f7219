"""Passage retrieval with Okapi BM25, standard library only.

Documents are Markdown files whose first line is ``# Title``. Each is split
into passages (one per paragraph, carrying its section heading for context),
tokenized (lowercase words, stopwords removed, a light suffix stemmer), and
indexed once. A query is scored against every passage with BM25
(k1 = 1.5, b = 0.75) and the best passages are returned with their scores.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

K1 = 1.5
B = 0.75

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


def stem(word: str) -> str:
    """A deliberately small stemmer: folds plurals and common verb endings."""
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + keep
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
    score: float


class BM25Index:
    def __init__(self, passages: list[Passage]) -> None:
        self.passages = passages
        # The section heading and title count as part of the passage: a question about
        # "returns" should find paragraphs under "# Returns & Exchanges".
        self.docs = [tokenize(f"{p.title} {p.section} {p.text}") for p in passages]
        self.term_freqs = [Counter(d) for d in self.docs]
        self.avg_len = sum(map(len, self.docs)) / max(1, len(self.docs))
        df: Counter[str] = Counter()
        for doc in self.docs:
            df.update(set(doc))
        n = len(self.docs)
        self.idf = {term: math.log(1 + (n - f + 0.5) / (f + 0.5)) for term, f in df.items()}

    def score(self, query_terms: dict[str, float], index: int) -> float:
        tf = self.term_freqs[index]
        length = len(self.docs[index])
        total = 0.0
        for term, weight in query_terms.items():
            f = tf.get(term)
            if not f:
                continue
            norm = f * (K1 + 1) / (f + K1 * (1 - B + B * length / self.avg_len))
            total += weight * self.idf[term] * norm
        return total

    def search(self, query: str, limit: int = 3, extra: str = "", extra_weight: float = 0.3) -> list[Hit]:
        """Best passages for ``query``; ``extra`` (e.g. the previous question) adds terms at a lower weight."""
        terms: dict[str, float] = {}
        for term in tokenize(extra):
            terms[term] = extra_weight
        for word in re.findall(r"[a-z]+", query.lower()):
            for term in tokenize(EXPANSIONS.get(word, "")):
                terms[term] = max(terms.get(term, 0.0), 0.5)
        for term in tokenize(query):
            terms[term] = 1.0
        if not terms:
            return []
        scored = [Hit(p, self.score(terms, i)) for i, p in enumerate(self.passages)]
        scored = [h for h in scored if h.score > 0]
        scored.sort(key=lambda h: h.score, reverse=True)
        return scored[:limit]


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
