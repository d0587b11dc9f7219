"""Audio for the speech-to-text tests: espeak-ng speech, tones, and re-encodings made with PyAV."""

from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import wave

import av

# The voice the end-to-end test and the benchmark speak with (see bench/README.md).
VOICE = ("-v", "en-us+klatt2", "-s", "160")
ENGINE_KEY = "stt_server_key_0a1b2c3d4e5f6a7b"


def speak(text: str) -> bytes:
    """``text`` spoken by espeak-ng, as WAV. Fails (never skips) when espeak-ng is missing:
    scripts/install installs it."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed; run scripts/install (Debian package espeak-ng)")
    return subprocess.run(["espeak-ng", *VOICE, "--stdout", text], capture_output=True, check=True).stdout


def tone(seconds: float, rate: int = 16_000) -> bytes:
    """A 440 Hz tone as 16-bit mono WAV."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def encode(wav: bytes, container: str, codec: str, rate: int = 48_000) -> bytes:
    """``wav`` re-encoded (WebM/Opus as MediaRecorder records it: ``encode(wav, "webm", "libopus")``)."""
    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(out, "w", format=container) as target:
        stream = target.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format or "s16", layout="mono", rate=rate)
        for frame in source.decode(audio=0):
            for piece in resampler.resample(frame):
                target.mux(stream.encode(piece))
        for piece in resampler.resample(None):
            target.mux(stream.encode(piece))
        target.mux(stream.encode(None))
    return out.getvalue()


def webm(wav: bytes) -> bytes:
    return encode(wav, "webm", "libopus")
