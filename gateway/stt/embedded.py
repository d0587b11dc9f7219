"""The embedded offline default: PocketSphinx with a language model built from
the domain phrases (``lm.py``). No key, no network, nothing downloaded: the
acoustic model and dictionary ship inside PocketSphinx's PyPI package.

Recognition is CPU-bound and PocketSphinx holds the GIL while it decodes (a
thread would stall the event loop for the length of an utterance: measured
440 ms for 6 s of audio), so it runs in a small pool of worker *processes*,
``stt.concurrency`` of them, each with its own decoder loaded once. At most
``stt.max_queue`` transcriptions wait for a worker; beyond that the answer is
503, not an ever-growing queue. A worker that dies breaks the pool; it is
replaced and the request that saw it fails with 502.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import ProviderError, ServiceUnavailable
from gateway.settings import SttSettings
from gateway.stt import worker
from gateway.stt.audio import Audio
from gateway.stt.base import SPEECH_PROVIDER, NoStreaming, StreamToken, Transcript
from gateway.stt.lm import domain_model, read_dictionary
from gateway.stt.phrases import Phrases

log = structlog.get_logger("gateway.stt")

# Language weight: with a small domain model, trusting it more than the default 6.5 helps.
DECODER_OPTIONS: dict[str, Any] = {"lw": 10.0}


def model_path() -> Path:
    from pocketsphinx import get_model_path

    return Path(get_model_path()) / "en-us"


class EmbeddedProvider:
    name = "embedded"

    def __init__(self, settings: SttSettings, phrases: Phrases) -> None:
        self._settings = settings
        self._phrases = phrases
        self._label = f"{SPEECH_PROVIDER} {self.name}"
        self._dir = tempfile.TemporaryDirectory(prefix="gateway-stt-")
        self._initargs: tuple[Any, ...] = ()
        self._pool: ProcessPoolExecutor | None = None
        self._waiting = 0
        self.words = 0  # vocabulary size of the loaded model (logged, and for health)

    async def start(self) -> None:
        started = time.perf_counter()
        self._initargs = await asyncio.to_thread(self._build)
        self._pool = self._new_pool()
        # Load the model in every worker now, not on the first visitor's request.
        await asyncio.gather(*(self._run(worker.ready) for _ in range(self._settings.concurrency)))
        log.info("stt_model_loaded", provider=self.name, words=self.words, phrases=len(self._phrases.sentences),
                 workers=self._settings.concurrency, seconds=round(time.perf_counter() - started, 2))

    def _build(self) -> tuple[Any, ...]:
        if not self._phrases.sentences:
            # No domain phrases: PocketSphinx's general English model (weak, but better than nothing).
            log.warning("stt_no_domain_phrases", detail="stt.phrases and stt.phrases_file are empty: using the "
                        "general English language model, which recognizes open vocabulary poorly.")
            self.words = 0
            return (str(model_path() / "en-us.lm.bin"), {}, DECODER_OPTIONS)
        dictionary = read_dictionary(model_path() / "cmudict-en-us.dict")
        arpa, extra = domain_model(self._phrases.sentences, dictionary)
        path = Path(self._dir.name) / "domain.lm"
        path.write_text(arpa, encoding="utf-8")
        self.words = int(arpa.split("ngram 1=", 1)[1].split("\n", 1)[0])
        return (str(path), extra, DECODER_OPTIONS)

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that runs an event loop and threads copies their locks mid-use.
        return ProcessPoolExecutor(
            self._settings.concurrency, multiprocessing.get_context("spawn"), worker.start, self._initargs
        )

    async def _run(self, fn: Any, *args: Any) -> Any:
        assert self._pool is not None
        pool = self._pool
        try:
            return await asyncio.wrap_future(pool.submit(fn, *args))
        except BrokenProcessPool:
            if self._pool is pool:
                log.error("stt_worker_died", provider=self.name)
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise ProviderError(f"{self._label} failed: a recognition worker stopped; try again") from None

    async def transcribe(self, audio: Audio) -> Transcript:
        if self._waiting >= self._settings.concurrency + self._settings.max_queue:
            raise ServiceUnavailable("Speech recognition is busy; try again shortly", {"Retry-After": "1"})
        self._waiting += 1
        try:
            async with asyncio.timeout(self._settings.timeouts.total):
                text = await self._run(worker.recognize, audio.pcm)
        except TimeoutError:
            raise ProviderError(f"{self._label} did not answer within {self._settings.timeouts.total:g}s") from None
        finally:
            self._waiting -= 1
        return Transcript(text, self._settings.language)

    async def stream_token(self, ttl: float) -> StreamToken:
        raise NoStreaming(f"{self._label} has no browser streaming")

    async def probe(self) -> bool:
        """Connected when the model is loaded and a worker answers."""
        return bool(await self._run(worker.ready))

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._dir.cleanup()
