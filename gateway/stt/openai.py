"""The OpenAI-compatible ``POST /v1/audio/transcriptions``: OpenAI itself, and
the self-hosted Whisper servers that expose the same endpoint (faster-whisper
servers, LocalAI, vLLM), so audio can stay on the company's machines.

A multipart form with ``file``, ``model``, ``language``, ``response_format=json``
and, for biasing, ``prompt`` (the domain terms; Whisper reads the prompt as
preceding text, so the spelling of names carries over). The answer is
``{"text"}``. No browser streaming tokens. Health: ``GET /v1/models``.
"""

from __future__ import annotations

import uuid

from gateway.errors import ProviderError
from gateway.settings import SttSettings
from gateway.stt.audio import Audio
from gateway.stt.base import NoStreaming, StreamToken, Transcript, language_or
from gateway.vendor import VendorClient

MAX_PROMPT_CHARS = 800  # Whisper reads the last 224 tokens of a prompt
_EXTENSIONS = {"audio/wav": "wav", "audio/webm": "webm", "audio/ogg": "ogg", "audio/mp4": "m4a",
               "audio/mpeg": "mp3", "audio/flac": "flac"}


def multipart(fields: dict[str, str], file: bytes, filename: str, media_type: str) -> tuple[bytes, str]:
    """(body, content type) of a ``multipart/form-data`` form (RFC 7578) with one file."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {media_type}\r\n\r\n".encode()
    )
    parts += [file, f"\r\n--{boundary}--\r\n".encode()]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def prompt(terms: tuple[str, ...]) -> str:
    text = ""
    for term in terms:
        candidate = f"{text}, {term}" if text else term
        if len(candidate) > MAX_PROMPT_CHARS:
            break
        text = candidate
    return text


class OpenAIProvider:
    name = "openai"

    def __init__(self, vendor: VendorClient, settings: SttSettings, model: str, terms: tuple[str, ...]) -> None:
        self._vendor = vendor
        self._settings = settings
        self._model = model
        self._prompt = prompt(terms)

    async def transcribe(self, audio: Audio) -> Transcript:
        fields = {"model": self._model, "response_format": "json",
                  "language": self._settings.language.split("-")[0].lower()}
        if self._prompt:
            fields["prompt"] = self._prompt
        body, content_type = multipart(fields, audio.data, f"audio.{_EXTENSIONS[audio.media_type]}", audio.media_type)
        answer = await self._vendor.call("POST", "/v1/audio/transcriptions", content=body, content_type=content_type)
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise self._vendor.malformed("no 'text' string")
        language = answer.get("language")
        return Transcript(answer["text"].strip(), language_or(language, self._settings.language))

    async def stream_token(self, ttl: float) -> StreamToken:
        raise NoStreaming(f"{self._vendor.label} has no browser streaming")

    async def probe(self) -> bool:
        try:
            await self._vendor.call("GET", "/v1/models")
        except ProviderError:
            return False
        return True

    async def close(self) -> None:
        return None
