"""The one upstream client, through the production aiohttp transport, against real
misbehaving servers on loopback: every failure becomes one clear ProviderError."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.errors import ProviderError
from gateway.settings import ClientSettings, Timeouts
from gateway.upstream import UpstreamClient, decode_json
from tests.conftest import free_port

pytestmark = pytest.mark.integration

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TIMEOUTS = Timeouts(connect=0.5, total=1.0)
CAP = 1024 * 1024


@contextlib.asynccontextmanager
async def raw_server(behaviour: Behaviour) -> AsyncIterator[str]:
    """A TCP server that does exactly what ``behaviour`` says, HTTP or not."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")  # the request head (bodies here are small JSON)
            await behaviour(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api/chat"
    finally:
        server.close()


def reply(head: bytes, body: bytes = b"", *, pause: float = 0) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head + body)
        await writer.drain()
        await asyncio.sleep(pause)

    return behaviour


def http(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def call(url: str, max_bytes: int = CAP) -> tuple[int, bytes]:
    async with UpstreamClient(ClientSettings(max_response_bytes=max_bytes)) as client:
        answer = await client.request("POST", url, provider="Chat backend", timeouts=TIMEOUTS, json_body={"m": 1})
        decode_json(answer, "Chat backend")
        return answer.status, answer.body


async def failure(url: str, max_bytes: int = CAP) -> str:
    with pytest.raises(ProviderError) as caught:
        await call(url, max_bytes)
    return caught.value.message


async def test_a_well_behaved_answer_is_read() -> None:
    async with raw_server(reply(http(b'{"response": "hi"}'))) as url:
        assert await call(url) == (200, b'{"response": "hi"}')


async def test_gzip_answer_is_decoded() -> None:
    body = gzip.compress(b'{"response": "' + b"x" * 10_000 + b'"}')
    async with raw_server(reply(http(body, "Content-Encoding: gzip"))) as url:
        status, raw = await call(url)
    assert status == 200 and len(raw) == 10_000 + 16


async def test_nothing_listening() -> None:
    message = await failure(f"http://127.0.0.1:{free_port()}/api/chat")
    assert message == "Chat backend could not be reached: connection refused or host unknown"


async def test_connection_setup_that_never_completes_times_out() -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so connecting hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(listener.getsockname())
            fillers.append(filler)
        port = listener.getsockname()[1]
        message = await failure(f"http://127.0.0.1:{port}/api/chat")
    finally:
        for s in [*fillers, listener]:
            s.close()
    assert message == "Chat backend could not be reached: connection timed out after 0.5s (connect timeout)"


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        pytest.param(reply(b""), "Chat backend closed the connection before answering", id="closes-at-once"),
        pytest.param(reply(b"", pause=5), "Chat backend did not answer within 1s (total timeout)", id="never-answers"),
        pytest.param(reply(http(b'{"response": "hi"}')[:-5], pause=5), "Chat backend did not answer within 1s (total timeout)",
                     id="body-stalls"),
        pytest.param(reply(http(b'{"response": "hi"}')[:-5]), "Chat backend closed the connection before answering",
                     id="body-cut-short"),
        pytest.param(reply(b"HELLO THERE\r\n\r\n"), "Chat backend answered with malformed HTTP", id="not-http"),
        pytest.param(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
                     "Chat backend answered with malformed HTTP", id="length-and-chunked"),
        pytest.param(reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n"),
                     "Chat backend answered with malformed HTTP", id="bad-chunk-size"),
        pytest.param(reply(http(b"not gzip at all", "Content-Encoding: gzip")),
                     "Chat backend answered with a body that is not valid gzip", id="bad-gzip"),
        pytest.param(reply(http(gzip.compress(gzip.compress(b"{}")), "Content-Encoding: gzip, gzip")),
                     "Chat backend answered with an unsupported Content-Encoding", id="stacked-encodings"),
        pytest.param(reply(http(b"{}", "Content-Encoding: br")),
                     "Chat backend answered with an unsupported Content-Encoding", id="unknown-encoding"),
        pytest.param(reply(http(b'{"response": "' + b"x" * (CAP + 1) + b'"}')),
                     f"Chat backend answer exceeds {CAP} bytes", id="too-large"),
        pytest.param(reply(http(b'{"n": ' + b"9" * 5000 + b"}")), "Chat backend answered with a body that is not JSON",
                     id="integer-beyond-python-limit"),
        pytest.param(reply(http(b'{"n": 1e999}')), "Chat backend answered with a body that is not JSON",
                     id="number-beyond-double"),
        pytest.param(reply(http(b'{"n": NaN}')), "Chat backend answered with a body that is not JSON", id="nan"),
    ],
)
async def test_misbehaving_backend(behaviour: Behaviour, expected: str) -> None:
    async with raw_server(behaviour) as url:
        assert await failure(url) == expected


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compression_bomb_is_cut_off_at_the_decoded_size(encoding: str) -> None:
    # 1 GiB of zeros compresses to about 1 MiB; the cap applies to what it inflates to.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    bomb = b"".join(compressor.compress(block) for _ in range(64)) + compressor.flush()
    async with raw_server(reply(http(bomb, f"Content-Encoding: {encoding}"))) as url:
        assert await failure(url) == f"Chat backend answer exceeds {CAP} bytes"


async def test_percent_encoding_in_the_url_reaches_the_backend_as_sent() -> None:
    # A sessionId with ':' or '/' placed in a URL (Dialogflow CX sessions) must stay encoded.
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await reader.readuntil(b"\r\n")).split(b" ")[1])
        await reader.readuntil(b"\r\n\r\n")
        writer.write(http(b"{}"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await call(f"http://127.0.0.1:{port}/sessions/a%3Ab%2Fc:detectIntent")
    finally:
        server.close()
    assert seen == [b"/sessions/a%3Ab%2Fc:detectIntent"]
