"""Decoding what browsers record into 16 kHz mono PCM, within limits.

Accepted: WAV, WebM/Matroska (MediaRecorder's Opus in Chrome and Firefox),
Ogg (Opus, Vorbis), MP4 (Safari's AAC), MP3 and FLAC. The container is
recognised from its first bytes and named to FFmpeg explicitly: FFmpeg's own
probing would also accept playlists and concat scripts (``hls``, ``concat``)
that open other files and URLs, which must never happen with a stranger's
upload. Codecs outside a small allowlist are refused by name.

Limits: the bytes were capped while reading (``gateway/transcribe.py``); here
the duration is counted while decoding and decoding stops as soon as it
passes ``max_seconds``, so a small file that claims hours of audio is never
inflated. The output is at most ``max_seconds`` x 32 KB.

Runs with PyAV (FFmpeg's libraries in-process), no subprocess per request.
CPU-bound: callers run it off the event loop.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av

from gateway.errors import InvalidRequest

SAMPLE_RATE = 16_000
BYTES_PER_SECOND = SAMPLE_RATE * 2  # s16 mono
FORMATS_TEXT = "WAV, WebM/Opus, Ogg/Opus, MP4/AAC, MP3 or FLAC"
# container -> the media type vendors are sent
MEDIA_TYPES = {
    "wav": "audio/wav",
    "matroska": "audio/webm",
    "ogg": "audio/ogg",
    "mov": "audio/mp4",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
}
CODECS = frozenset(
    {"opus", "libopus", "vorbis", "aac", "mp3", "mp3float", "flac", "pcm_s16le", "pcm_s24le", "pcm_s32le",
     "pcm_f32le", "pcm_f64le", "pcm_u8", "pcm_mulaw", "pcm_alaw", "pcm_s16be"}
)


@dataclass(frozen=True)
class Audio:
    data: bytes = field(repr=False)  # the upload as received (what vendors are sent)
    container: str
    codec: str
    pcm: bytes = field(repr=False)  # 16 kHz mono signed 16-bit little-endian
    seconds: float

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.container]


def sniff(data: bytes) -> str | None:
    """The container of ``data`` from its magic bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[:4] == b"OggS":
        return "ogg"
    if data[4:8] == b"ftyp":
        return "mov"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE6 in (0xE2, 0xE4, 0xE6)):
        return "mp3"
    return None


def decode(data: bytes, max_seconds: float) -> Audio:
    """``data`` as 16 kHz mono PCM; ``InvalidRequest`` naming what is wrong with it."""
    if not data:
        raise InvalidRequest("Audio is empty")
    container = sniff(data)
    if container is None:
        raise InvalidRequest(f"Body is not audio in a supported format; send {FORMATS_TEXT}")
    limit = int(max_seconds * SAMPLE_RATE)
    try:
        with av.open(io.BytesIO(data), mode="r", format=container) as source:
            stream = next((s for s in source.streams if s.type == "audio"), None)
            if stream is None:
                raise InvalidRequest("Audio has no audio stream")
            codec = stream.codec_context.name
            if codec not in CODECS:
                raise InvalidRequest(f"Audio codec '{codec}' is not supported; send {FORMATS_TEXT}")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            chunks: list[bytes] = []
            samples = 0
            for frame in source.decode(stream):
                assert isinstance(frame, av.AudioFrame)
                for out in resampler.resample(frame):
                    samples += out.samples
                    if samples > limit:
                        raise InvalidRequest(f"Audio is longer than the limit of {max_seconds:g} seconds")
                    chunks.append(bytes(out.planes[0])[: out.samples * 2])
            for out in resampler.resample(None):
                samples += out.samples
                chunks.append(bytes(out.planes[0])[: out.samples * 2])
    except av.FFmpegError:
        name = _NAMES[container]
        raise InvalidRequest(f"Audio could not be decoded: the {name} data is damaged or truncated") from None
    if samples > limit:
        raise InvalidRequest(f"Audio is longer than the limit of {max_seconds:g} seconds")
    if samples == 0:
        raise InvalidRequest("Audio contains no sound samples")
    return Audio(data, container, codec, b"".join(chunks), samples / SAMPLE_RATE)


_NAMES = {"wav": "WAV", "matroska": "WebM", "ogg": "Ogg", "mov": "MP4", "mp3": "MP3", "flac": "FLAC"}
