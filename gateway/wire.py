"""HTTP/1.1 errors below the application: uvicorn's httptools protocol, answering in the envelope.

A request uvicorn cannot parse (Content-Length together with Transfer-Encoding,
a bad chunk size, bytes that are not HTTP) is answered by uvicorn itself,
before any application code runs, with ``400 text/plain``; and its httptools
protocol puts no bound on the request head, so a client can make it buffer a
header of any size. ``GatewayProtocol`` is that protocol with three changes:

- a parse error is answered 400 INVALID_REQUEST in the contract's envelope,
  with llhttp's reason (``Malformed HTTP request: Invalid character in chunk
  size``);
- a request target over MAX_TARGET_BYTES is answered 414 URI_TOO_LONG, and a
  head over MAX_HEAD_BYTES 431 HEADERS_TOO_LARGE (RFC 6585), while it is
  read, so neither is ever buffered whole. The limits follow nginx's defaults
  (``large_client_header_buffers 4 8k``: 8 KiB a line, 32 KiB in all), so what
  the example nginx lets through, the gateway accepts;
- after such an answer the connection is closed the way nginx's lingering
  close does it: a FIN after the answer, then whatever the client is still
  sending is read and dropped for up to LINGER_SECONDS. Closing a socket with
  unread data makes the kernel send a RST, which can destroy the answer before
  the client reads it: a client still sending a 200 KB header would see
  "connection reset" instead of the 431.

``avatar-gateway serve`` runs it; under bare uvicorn it takes
``--http gateway.wire:GatewayProtocol``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import structlog
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.errors import envelope

MAX_TARGET_BYTES = 8 * 1024
MAX_HEAD_BYTES = 32 * 1024
LINGER_SECONDS = 2.0

log = structlog.get_logger("gateway.access")


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class GatewayProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # between the first byte of a request and the end of its headers
        self._target_bytes = 0
        self._head_bytes = 0  # parsed: the target and complete header lines
        self._head_received = 0  # raw: also a header line llhttp is still buffering
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and drop
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            # A callback's own exception (a limit below) arrives as the parser error's context.
            refused = exc.__context__ if isinstance(exc.__context__, _Refused) else None
            if refused is None:
                reason = str(exc.args[0] if exc.args else "unparseable")[:200]
                refused = _Refused(400, "INVALID_REQUEST", f"Malformed HTTP request: {reason}")
            self._refuse(refused)
            return
        if self._head_open:
            self._head_received += len(data)
            if self._head_received > MAX_HEAD_BYTES:
                self._refuse(_head_too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._target_bytes = self._head_bytes = self._head_received = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._target_bytes += len(url)
        self._head_bytes += len(url)
        if self._target_bytes > MAX_TARGET_BYTES:
            raise _Refused(414, "URI_TOO_LONG", f"Request target is longer than {MAX_TARGET_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _head_too_large()

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def _refuse(self, refused: _Refused) -> None:
        self._refused = True
        self._unset_keepalive_if_required()
        self.pipeline.clear()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The application may be running already (the head was fine, the body is not):
            # from now on it reads a disconnect and its writes go nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:  # it has begun its own answer: nothing can follow it
                self.transport.close()
                return
        body = envelope(refused.code, refused.message)
        head = [STATUS_LINE[refused.status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        log.info(
            "request_refused",
            status=refused.status,
            code=refused.code,
            reason=refused.message,
            client=self.client[0] if self.client else None,
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.flow.resume_reading()
            self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:  # TLS cannot half-close
            self.transport.close()


def _head_too_large() -> _Refused:
    return _Refused(431, "HEADERS_TOO_LARGE", f"Request header fields are larger than {MAX_HEAD_BYTES} bytes")
