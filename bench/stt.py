"""The embedded speech-to-text engine: latency, real-time factor and peak memory.

    .venv/bin/python bench/stt.py             # 10 runs of ~5 s of speech
    .venv/bin/python bench/stt.py --runs 3

Speech is espeak-ng's (the voice of tests/test_stt_embedded.py), about 5 s of the
demo's questions in one utterance. Measured in this process, one recognition at a
time: decoding the WAV and the WebM/Opus to 16 kHz PCM (PyAV), recognition with the
domain language model built from the reference knowledge base, and the peak RSS of
a process holding one loaded decoder (what each worker of the pool costs).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.settings import SttSettings  # noqa: E402
from gateway.stt import audio, worker  # noqa: E402
from gateway.stt.embedded import DECODER_OPTIONS, model_path  # noqa: E402
from gateway.stt.lm import domain_model, read_dictionary  # noqa: E402
from gateway.stt.phrases import load_phrases  # noqa: E402
from tests.stt_support import speak, webm  # noqa: E402

KNOWLEDGE = ROOT / "examples" / "reference_backend" / "knowledge"
SPEECH = "Do you ship to Canada? How much does the Ridgeline tent cost? Can I pay with PayPal?"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    before = rss_mb()
    started = time.perf_counter()
    phrases = load_phrases(SttSettings(phrases_files=(str(KNOWLEDGE),)))
    arpa, extra = domain_model(phrases.sentences, read_dictionary(model_path() / "cmudict-en-us.dict"))
    lm = Path("/tmp/bench-stt-domain.lm")
    lm.write_text(arpa, encoding="utf-8")
    built = time.perf_counter() - started
    worker.start(str(lm), extra, DECODER_OPTIONS)
    loaded = time.perf_counter() - started
    wav = speak(SPEECH)
    opus = webm(wav)
    pcm = audio.decode(wav, 60).pcm
    seconds = len(pcm) / audio.BYTES_PER_SECOND
    timings: dict[str, list[float]] = {"decode WAV": [], "decode WebM/Opus": [], "recognize": []}
    text = ""
    for _ in range(args.runs):
        t = time.perf_counter()
        audio.decode(wav, 60)
        timings["decode WAV"].append(time.perf_counter() - t)
        t = time.perf_counter()
        audio.decode(opus, 60)
        timings["decode WebM/Opus"].append(time.perf_counter() - t)
        t = time.perf_counter()
        text = worker.recognize(pcm)
        timings["recognize"].append(time.perf_counter() - t)
    print(f"speech: {seconds:.2f} s; runs: {args.runs}; language model: {len(phrases.sentences)} phrases, "
          f"built in {built:.2f} s, decoder loaded after {loaded:.2f} s")
    print(f"transcript: {text!r}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:>18}: median {median * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms  "
              f"real-time factor {median / seconds:.3f}")
    total = statistics.median(timings["decode WebM/Opus"]) + statistics.median(timings["recognize"])
    print(f"{'WebM in, text out':>18}: {total * 1000:7.1f} ms  real-time factor {total / seconds:.3f}")
    print(f"peak RSS: {rss_mb():.0f} MB (Python and imports before loading: {before:.0f} MB)")


if __name__ == "__main__":
    main()
