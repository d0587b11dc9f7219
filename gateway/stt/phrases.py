"""Domain phrases: what biases recognition towards the words of this business.

Configured as ``stt.phrases`` (a list: product names, the questions customers
ask) and ``stt.phrases_file`` (files, or directories of ``.md`` / ``.txt``
files: a knowledge base). Two views of them:

- ``sentences``: every phrase and every sentence of the files, for the
  embedded engine's language model (``lm.py``);
- ``terms``: a short list for the vendors' biasing parameters (Deepgram
  ``keyterm``, AssemblyAI ``keyterms_prompt``, the OpenAI ``prompt``), which
  take tens of terms, not documents: the configured phrases first, then the
  names found in the files (capitalised words and runs of them that do not
  start a sentence, and headings), most frequent first.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.settings import SttSettings

MAX_TERMS = 100
MAX_TERM_WORDS = 6  # AssemblyAI's limit per key term
MAX_FILE_BYTES = 2 * 1024 * 1024
SUFFIXES = (".md", ".txt")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MARKUP = re.compile(r"[*_`>|]+|\[([^\]]*)\]\([^)]*\)")
_NAME = re.compile(r"\b[A-Z][A-Za-z0-9]*(?:[ -][A-Z0-9][A-Za-z0-9]*)*\b")


@dataclass(frozen=True)
class Phrases:
    sentences: tuple[str, ...] = ()
    terms: tuple[str, ...] = ()


def load_phrases(settings: SttSettings) -> Phrases:
    """The configured phrases and the text of the configured files; ConfigError naming a file that cannot be read."""
    texts = [_read(Path(p)) for p in settings.phrases_files]
    sentences = [*settings.phrases]
    headings: list[str] = []
    names: collections.Counter[str] = collections.Counter()
    for text in texts:
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                heading = line.lstrip("# ").strip()
                if heading:
                    headings.append(heading)
                    sentences.append(heading)
                continue
            for sentence in _SENTENCE_END.split(_MARKUP.sub(r"\1", line)):
                sentence = sentence.strip()
                if not sentence:
                    continue
                sentences.append(sentence)
                for match in _NAME.finditer(sentence):
                    if match.start() > 0:  # a capital that only starts the sentence is not a name
                        names[match.group(0)] += 1
    candidates = [*settings.phrases, *(n for n, _ in names.most_common()), *headings]
    terms: list[str] = []
    seen: set[str] = set()
    for term in candidates:
        term = " ".join(term.split()[:MAX_TERM_WORDS])
        if term and term.lower() not in seen and len(term) > 1:
            seen.add(term.lower())
            terms.append(term)
    return Phrases(tuple(sentences), tuple(terms[:MAX_TERMS]))


def _read(path: Path) -> str:
    where = f"stt.phrases_file: {str(path)!r}"
    try:
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES) if path.is_dir() else [path]
        parts = []
        for file in files:
            if file.stat().st_size > MAX_FILE_BYTES:
                raise ConfigError(f"{where}: {file.name} is larger than {MAX_FILE_BYTES} bytes")
            parts.append(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: is not UTF-8 text") from None
    return "\n".join(parts)
