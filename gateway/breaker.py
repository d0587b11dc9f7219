"""A circuit breaker per upstream: a dead backend fails fast instead of piling up requests.

    closed ──(``failures`` consecutive failures)──► open ──(``cooldown``)──► half_open
      ▲                                              ▲                           │
      └──────────── the probe succeeds ──────────────┼─── the probe fails ───────┘

While open, calls fail at once with ``CircuitOpen`` (the chat route then answers
its fallback, if it has one). After the cool-down exactly one call goes through
as a probe; its outcome closes or reopens the breaker, and calls arriving while
it is in flight fail fast too. A probe abandoned without an outcome (its client
went away) lets the next call probe instead.

What counts: ``UpstreamFailed`` (unreachable, timed out, cut off, HTTP 5xx).
An answer of the wrong shape counts as a success: the backend is up, the
mapping is wrong, and failing fast would not help. State changes are logged.
The clock is injected (``clock``) so tests drive the cool-down without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

import structlog

from gateway import metrics
from gateway.errors import CircuitOpen, ProviderError, UpstreamFailed
from gateway.settings import BreakerSettings

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

log = structlog.get_logger("gateway.breaker")


class CircuitBreaker:
    def __init__(
        self, name: str, settings: BreakerSettings, provider: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self._settings = settings
        self._provider = provider
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        metrics.breaker_state(name, CLOSED)

    @property
    def state(self) -> str:
        """``open`` turns ``half_open`` once the cool-down is over (the next call probes)."""
        if self._state == OPEN and self._clock() - self._opened_at >= self._settings.cooldown:
            return HALF_OPEN
        return self._state

    def admit(self) -> Call:
        """A call may go ahead (``with breaker.admit(): ...`` records its outcome); ``CircuitOpen`` if not."""
        state = self.state
        if state == OPEN:
            remaining = self._settings.cooldown - (self._clock() - self._opened_at)
            raise CircuitOpen(
                f"{self._provider} is failing; not called for another {max(remaining, 0.1):.1f}s (circuit breaker open)"
            )
        if state == HALF_OPEN:
            if self._probing:
                raise CircuitOpen(f"{self._provider} is failing; one probe request is checking whether it is back "
                                  "(circuit breaker half-open)")
            self._set(HALF_OPEN)
            self._probing = True
            return Call(self, probe=True)
        return Call(self, probe=False)

    def _succeeded(self, probe: bool) -> None:
        if probe:
            self._probing = False
            self._failures = 0
            self._set(CLOSED)
        elif self._state == CLOSED:
            self._failures = 0

    def _failed(self, probe: bool) -> None:
        if probe:
            self._probing = False
            self._open()
        elif self._state == CLOSED:
            self._failures += 1
            if self._failures >= self._settings.failures:
                self._open()

    def _abandoned(self, probe: bool) -> None:
        if probe:
            self._probing = False  # no verdict: the next call probes

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(OPEN)

    def _set(self, state: str) -> None:
        if state != self._state:
            log.warning("circuit_breaker", upstream=self.name, state=state, previous=self._state,
                        failures=self._failures, cooldown_s=self._settings.cooldown)
            self._state = state
            metrics.breaker_state(self.name, state)


class Call:
    """One admitted call; as a context manager it records the outcome."""

    __slots__ = ("_breaker", "_probe")

    def __init__(self, breaker: CircuitBreaker, probe: bool) -> None:
        self._breaker = breaker
        self._probe = probe

    def __enter__(self) -> Call:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self._breaker._succeeded(self._probe)
        elif issubclass(exc_type, UpstreamFailed):
            self._breaker._failed(self._probe)
        elif issubclass(exc_type, ProviderError):
            self._breaker._succeeded(self._probe)  # it answered, wrongly: failing fast would not help
        else:
            self._breaker._abandoned(self._probe)  # cancelled (the client went away) or a bug: no verdict
