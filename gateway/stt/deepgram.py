"""Deepgram: pre-recorded transcription and browser streaming grants.

- ``POST /v1/listen?model=nova-3&language=en&keyterm=...`` with the audio as
  the body (``Authorization: Token <key>``) answers
  ``{"results": {"channels": [{"alternatives": [{"transcript"}]}]}}``.
  Biasing: Nova-3 models take ``keyterm`` (repeated); older ones
  ``keywords=term:boost``.
- ``POST /v1/auth/grant {"ttl_seconds"}`` answers ``{"access_token",
  "expires_in"}``: a short-lived token the browser opens the streaming
  WebSocket with.
- Health: ``GET /v1/projects``, authenticated and free.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import ProviderError
from gateway.settings import SttSettings
from gateway.stt.audio import Audio
from gateway.stt.base import StreamToken, Transcript, language_or
from gateway.vendor import VendorClient, nonempty_string

KEYWORD_BOOST = 2


class DeepgramProvider:
    name = "deepgram"

    def __init__(self, vendor: VendorClient, settings: SttSettings, model: str, terms: tuple[str, ...]) -> None:
        self._vendor = vendor
        self._settings = settings
        self._model = model
        self._terms = terms

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self._model, "language": self._settings.language, "smart_format": "true"}
        if self._terms:
            if self._model.startswith("nova-3"):
                params["keyterm"] = list(self._terms)
            else:
                params["keywords"] = [f"{term}:{KEYWORD_BOOST}" for term in self._terms]
        return params

    async def transcribe(self, audio: Audio) -> Transcript:
        answer = await self._vendor.call(
            "POST", "/v1/listen", params=self._params(), content=audio.data, content_type=audio.media_type
        )
        try:
            channel = answer["results"]["channels"][0]
            text = channel["alternatives"][0]["transcript"]
        except (KeyError, IndexError, TypeError):
            raise self._vendor.malformed("no 'results.channels[0].alternatives[0].transcript'") from None
        if not isinstance(text, str):
            raise self._vendor.malformed("no 'results.channels[0].alternatives[0].transcript' string")
        language = channel.get("detected_language") if isinstance(channel, dict) else None
        return Transcript(text, language_or(language, self._settings.language))

    async def stream_token(self, ttl: float) -> StreamToken:
        answer = await self._vendor.call("POST", "/v1/auth/grant", {"ttl_seconds": int(ttl)})
        if not isinstance(answer, dict) or not nonempty_string(answer.get("access_token")):
            raise self._vendor.malformed("no 'access_token' string")
        expires = answer.get("expires_in")
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires <= 0:
            raise self._vendor.malformed("no positive 'expires_in' number")
        return StreamToken(answer["access_token"], float(expires))

    async def probe(self) -> bool:
        try:
            await self._vendor.call("GET", "/v1/projects")
        except ProviderError:
            return False
        return True

    async def close(self) -> None:
        return None
