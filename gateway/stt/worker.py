"""What runs inside the embedded engine's worker processes. Kept apart from the
rest of the gateway so a worker starts by importing PocketSphinx and little else."""

from __future__ import annotations

from typing import Any

_decoder: Any = None


def start(lm_path: str, extra_words: dict[str, str], options: dict[str, Any]) -> None:
    global _decoder
    from pocketsphinx import Decoder

    decoder = Decoder(lm=lm_path, loglevel="FATAL", **options)
    for index, (word, phones) in enumerate(sorted(extra_words.items())):
        decoder.add_word(word, phones, index == len(extra_words) - 1)
    _decoder = decoder


def recognize(pcm: bytes) -> str:
    """The best hypothesis for 16 kHz mono s16 PCM, decoded as one utterance."""
    decoder = _decoder
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return "" if hyp is None else str(hyp.hypstr)


def ready() -> bool:
    return _decoder is not None
