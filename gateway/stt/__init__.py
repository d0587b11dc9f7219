"""Speech-to-text: one interface (``base.py``), one module per provider, the
embedded offline engine, its language model built from domain phrases, and
audio decoding. Wired up in ``runtime.py``; served by ``gateway/transcribe.py``."""
