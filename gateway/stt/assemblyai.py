"""AssemblyAI: transcription (upload, submit, poll) and streaming tokens.

- ``POST /v2/upload`` with the audio as the body (``Authorization: <key>``)
  answers ``{"upload_url"}``; ``POST /v2/transcript {"audio_url",
  "speech_model", "language_code", "keyterms_prompt"}`` answers ``{"id",
  "status"}``; ``GET /v2/transcript/{id}`` is polled until ``status`` is
  ``completed`` (``text``, ``language_code``) or ``error``. The whole
  exchange, polls included, is bounded by ``stt.timeouts.total``.
- ``GET https://streaming.assemblyai.com/v3/token?expires_in_seconds=N``
  (1-600) answers ``{"token", "expires_in_seconds"}``; one streaming session
  per token.
- Health: ``GET /v2/transcript?limit=1``, authenticated and free.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.errors import ProviderError
from gateway.settings import SttSettings, Timeouts
from gateway.stt.audio import Audio
from gateway.stt.base import StreamToken, Transcript, language_or
from gateway.vendor import VendorClient, nonempty_string

STREAMING_URL = "https://streaming.assemblyai.com"
# Polls start quick (a short utterance is done in well under a second) and back off.
POLL_FIRST, POLL_MAX = 0.2, 2.0
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class AssemblyAIProvider:
    name = "assemblyai"

    def __init__(self, vendor: VendorClient, settings: SttSettings, model: str, terms: tuple[str, ...],
                 streaming_url: str = STREAMING_URL) -> None:
        self._vendor = vendor
        self._settings = settings
        self._model = model
        self._terms = terms
        self._streaming_url = streaming_url.rstrip("/")

    async def transcribe(self, audio: Audio) -> Transcript:
        total = self._settings.timeouts.total
        deadline = time.monotonic() + total
        try:
            async with asyncio.timeout(total):
                return await self._transcribe(audio, deadline)
        except TimeoutError:
            raise ProviderError(f"{self._vendor.label} did not answer within {total:g}s (total timeout)") from None

    def _left(self, deadline: float) -> Timeouts:
        left = max(0.001, deadline - time.monotonic())
        return Timeouts(min(self._settings.timeouts.connect, left), left)

    async def _transcribe(self, audio: Audio, deadline: float) -> Transcript:
        upload = await self._vendor.call(
            "POST", "/v2/upload", content=audio.data, content_type="application/octet-stream",
            timeouts=self._left(deadline),
        )
        if not isinstance(upload, dict) or not nonempty_string(upload.get("upload_url")):
            raise self._vendor.malformed("no 'upload_url' string")
        request: dict[str, Any] = {
            "audio_url": upload["upload_url"],
            "speech_model": self._model,
            "language_code": self._settings.language.replace("-", "_").lower(),
        }
        if self._terms:
            request["keyterms_prompt"] = list(self._terms)
        job = await self._vendor.call("POST", "/v2/transcript", request, timeouts=self._left(deadline))
        interval = POLL_FIRST
        while True:
            if not isinstance(job, dict):
                raise self._vendor.malformed("not a JSON object")
            status = job.get("status")
            if status == "completed":
                return self._result(job)
            if status == "error":
                raise ProviderError(f"{self._vendor.label} could not transcribe the audio")
            if status not in ("queued", "processing"):
                raise self._vendor.malformed("no known 'status'")
            job_id = job.get("id")
            if not isinstance(job_id, str) or not job_id or not set(job_id) <= _ID_CHARS:
                raise self._vendor.malformed("no 'id' string")
            await asyncio.sleep(interval)
            interval = min(POLL_MAX, interval * 1.5)
            job = await self._vendor.call("GET", f"/v2/transcript/{job_id}", timeouts=self._left(deadline))

    def _result(self, job: dict[str, Any]) -> Transcript:
        text = job.get("text")
        if text is None:
            text = ""  # AssemblyAI answers null for audio without speech
        if not isinstance(text, str):
            raise self._vendor.malformed("no 'text' string")
        language = job.get("language_code")
        return Transcript(text, language_or(language, self._settings.language))

    async def stream_token(self, ttl: float) -> StreamToken:
        answer = await self._vendor.call(
            "GET", f"{self._streaming_url}/v3/token", params={"expires_in_seconds": int(ttl)}
        )
        if not isinstance(answer, dict) or not nonempty_string(answer.get("token")):
            raise self._vendor.malformed("no 'token' string")
        expires = answer.get("expires_in_seconds")
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires <= 0:
            raise self._vendor.malformed("no positive 'expires_in_seconds' number")
        return StreamToken(answer["token"], float(expires))

    async def probe(self) -> bool:
        try:
            await self._vendor.call("GET", "/v2/transcript", params={"limit": 1})
        except ProviderError:
            return False
        return True

    async def close(self) -> None:
        return None
