"""Wiring: the provider chosen in ``stt.provider``, its phrases and the bound on
concurrent audio decoding, opened once in the app's lifespan (lifespan state ``stt``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from gateway.health import CachedProbe
from gateway.settings import STT_BASE_URLS, STT_MODELS, HealthSettings, Settings, SttSettings
from gateway.stt import audio
from gateway.stt.assemblyai import STREAMING_URL, AssemblyAIProvider
from gateway.stt.base import SPEECH_PROVIDER, SttProvider
from gateway.stt.deepgram import DeepgramProvider
from gateway.stt.embedded import EmbeddedProvider
from gateway.stt.openai import OpenAIProvider
from gateway.stt.phrases import Phrases, load_phrases
from gateway.upstream import UpstreamClient
from gateway.vendor import VendorClient

log = structlog.get_logger("gateway.stt")

# How each vendor takes its key.
_KEY_HEADERS = {"deepgram": ("Authorization", "Token "), "assemblyai": ("Authorization", ""),
                "openai": ("Authorization", "Bearer ")}


@dataclass
class SttRuntime:
    settings: SttSettings
    provider: SttProvider
    decoding: asyncio.Semaphore  # audio decodes running at once (threads)

    async def decode(self, data: bytes) -> audio.Audio:
        async with self.decoding:
            return await asyncio.to_thread(audio.decode, data, self.settings.max_seconds)

    def probe(self, health: HealthSettings) -> CachedProbe:
        async def probe() -> bool:
            async with asyncio.timeout(health.probe_timeout):
                return await self.provider.probe()

        return CachedProbe(probe, health.cache_seconds)


def build_provider(settings: SttSettings, http: UpstreamClient, phrases: Phrases) -> SttProvider:
    if settings.provider == "embedded":
        return EmbeddedProvider(settings, phrases)
    header, scheme = _KEY_HEADERS[settings.provider]
    vendor = VendorClient(
        settings.provider, http, settings.base_url or STT_BASE_URLS[settings.provider], header,
        settings.api_key or "", settings.timeouts, kind=SPEECH_PROVIDER, key_scheme=scheme,
        too_many="is rate limiting",
    )
    model = settings.model or STT_MODELS[settings.provider]
    if settings.provider == "deepgram":
        return DeepgramProvider(vendor, settings, model, phrases.terms)
    if settings.provider == "assemblyai":
        streaming = settings.streaming_url or settings.base_url or STREAMING_URL
        return AssemblyAIProvider(vendor, settings, model, phrases.terms, streaming)
    return OpenAIProvider(vendor, settings, model, phrases.terms)


@contextlib.asynccontextmanager
async def open_stt(settings: Settings, http: UpstreamClient) -> AsyncIterator[SttRuntime | None]:
    if not settings.uses_stt:
        yield None
        return
    phrases = await asyncio.to_thread(load_phrases, settings.stt)
    provider = build_provider(settings.stt, http, phrases)
    if isinstance(provider, EmbeddedProvider):
        await provider.start()
    log.info("stt_ready", provider=provider.name, terms=len(phrases.terms))
    try:
        yield SttRuntime(settings.stt, provider, asyncio.Semaphore(settings.stt.concurrency))
    finally:
        await provider.close()
