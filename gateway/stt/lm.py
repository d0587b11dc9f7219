"""The embedded engine's language model, built from domain phrases at startup.

PocketSphinx's general English model is weak on open vocabulary and on
synthesized or accented speech ("Do you ship to Canada" came out as "we'll
see a little"). A small model of the words this business uses is the lever:
the decoder then only has to choose among sentences that are plausible here.

The model is a trigram ARPA file, estimated with absolute discounting and
Katz-style back-off (Ney, Essen & Kneser 1994), from

- every sentence of the domain phrases, numbers spelled out ("$349" ->
  "three hundred forty nine"), since people say numbers as words;
- ``QUESTION_FRAMES``: generic ways customers start a question ("how long
  does", "do you", "can I"), since a knowledge base states facts and rarely
  asks anything.

Words must have a pronunciation. The ones in PocketSphinx's dictionary have
one; a word that is not (product names: "Ridgeline", "PayPal") gets one from
two dictionary words it is made of ("ridge" + "line"), and is left out
otherwise.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path

DISCOUNT = 0.5
ORDER = 3
UNIGRAM_FLOOR = 0.1  # added to every unigram count, so rare words stay reachable

QUESTION_FRAMES = (
    "how long does it take",
    "how long do i have to",
    "how long does",
    "how much does it cost",
    "how much does the",
    "how much is the",
    "how much is it",
    "how many",
    "how do i",
    "how can i",
    "do you",
    "do you have",
    "do you sell",
    "do i need",
    "does it",
    "does the",
    "can i",
    "can you",
    "can i get",
    "could you tell me",
    "what is",
    "what are",
    "what is the",
    "what size",
    "which",
    "when are you open",
    "when is",
    "when are",
    "where is",
    "where are",
    "where can i",
    "is there",
    "is there a",
    "is it",
    "is that",
    "is that covered",
    "are there",
    "are you open",
    "i want to",
    "i would like to",
    "i need",
    "i have a question about",
    "tell me about",
    "it broke",
    "my order",
    "thank you",
    "yes",
    "no",
    "hello",
    "hi",
    "please",
)

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))
    return " ".join(_ONES[int(d)] for d in str(n))


def words(text: str) -> list[str]:
    """Lower-case words of ``text``, numbers spelled out."""

    def spell(match: re.Match[str]) -> str:
        whole, _, fraction = match.group(0).replace(",", "").partition(".")
        spoken = number_words(int(whole))
        if fraction:
            spoken += " point " + " ".join(_ONES[int(d)] for d in fraction)
        return f" {spoken} "

    return _WORD.findall(_NUMBER.sub(spell, text.lower()))


def pronunciations(vocabulary: Iterable[str], lookup: Callable[[str], str | None]) -> dict[str, str]:
    """Pronunciations for the words ``lookup`` (the dictionary) does not know, made of two it does."""
    found = {}
    for word in vocabulary:
        if lookup(word) is not None or len(word) < 5:
            continue
        splits = [(abs(i - len(word) / 2), i) for i in range(2, len(word) - 1)]
        for _, i in sorted(splits):
            head, tail = lookup(word[:i]), lookup(word[i:])
            if head and tail:
                found[word] = f"{head} {tail}"
                break
    return found


def read_dictionary(path: Path) -> dict[str, str]:
    """A CMU-format dictionary: ``word PH ON ES`` per line; alternates (``word(2)``) are skipped."""
    entries = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            word, _, phones = line.strip().partition(" ")
            if phones and "(" not in word:
                entries[word] = phones.strip()
    return entries


def build_arpa(sentences: Iterable[list[str]], order: int = ORDER) -> str:
    """An ARPA back-off model of ``sentences`` (lists of words)."""
    counts: list[collections.Counter[tuple[str, ...]]] = [collections.Counter() for _ in range(order + 1)]
    for sentence in sentences:
        if not sentence:
            continue
        tokens = ["<s>", *sentence, "</s>"]
        for n in range(1, order + 1):
            for i in range(len(tokens) - n + 1):
                counts[n][tuple(tokens[i : i + n])] += 1
    del counts[1][("<s>",)]
    total = sum(counts[1].values())
    size = len(counts[1])
    probs: dict[int, dict[tuple[str, ...], float]] = {
        1: {g: (c + UNIGRAM_FLOOR) / (total + UNIGRAM_FLOOR * size) for g, c in counts[1].items()}
    }
    probs[1][("<s>",)] = 0.0
    for n in range(2, order + 1):
        context: collections.Counter[tuple[str, ...]] = collections.Counter()
        for gram, count in counts[n].items():
            context[gram[:-1]] += count
        probs[n] = {g: (c - DISCOUNT) / context[g[:-1]] for g, c in counts[n].items()}

    backoff: dict[tuple[str, ...], float] = {}

    def lower(gram: tuple[str, ...]) -> float:
        if len(gram) == 1:
            return probs[1].get(gram, 0.0)
        if gram in probs[len(gram)]:
            return probs[len(gram)][gram]
        return backoff.get(gram[:-1], 1.0) * lower(gram[1:])

    for n in range(1, order):
        followers: dict[tuple[str, ...], list[tuple[str, ...]]] = collections.defaultdict(list)
        for gram in probs[n + 1]:
            followers[gram[:-1]].append(gram)
        for history, grams in followers.items():
            left = 1.0 - sum(probs[n + 1][g] for g in grams)
            room = 1.0 - sum(lower(g[1:]) for g in grams)
            backoff[history] = left / room if room > 1e-9 else 1.0

    lines = ["\\data\\", *(f"ngram {n}={len(probs[n])}" for n in range(1, order + 1))]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        for gram, p in sorted(probs[n].items()):
            line = f"{_log10(p):.4f}\t{' '.join(gram)}"
            if n < order:
                line += f"\t{_log10(backoff.get(gram, 1.0)):.4f}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def _log10(p: float) -> float:
    return math.log10(p) if p > 0 else -99.0


def domain_model(sentences: Iterable[str], dictionary: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(ARPA text, pronunciations of the words the dictionary lacks) for the phrases and the question frames."""
    tokenized = [words(s) for s in [*sentences, *QUESTION_FRAMES]]
    vocabulary = {w for sentence in tokenized for w in sentence}
    extra = pronunciations(vocabulary, dictionary.get)
    known = dictionary.keys() | extra.keys()
    # Unknown words split a sentence rather than join their neighbours into a false trigram.
    pieces: list[list[str]] = []
    for sentence in tokenized:
        piece: list[str] = []
        for word in sentence:
            if word in known:
                piece.append(word)
            elif piece:
                pieces.append(piece)
                piece = []
        if piece:
            pieces.append(piece)
    return build_arpa(pieces), extra
