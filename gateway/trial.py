"""``avatar-gateway try "question"``: one chat turn through a route's mapping to its
configured backend, every step printed, so a mapping can be seen working (or seen
failing, and where) before the gateway goes live.

It uses the same pieces as the chat handler (validation, ``mapping``, the
``UpstreamClient``), so what it shows is what /api/chat would do. Header values
are masked and credentials in the URL hidden; the backend's own answer is shown
(shortened) because finding out why it refused a body is the point of the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.chat import PROVIDER, validate_chat
from gateway.errors import GatewayError, ProviderError
from gateway.mapping import backend_url, build_backend_body, parse_backend_answer
from gateway.settings import Route, Settings
from gateway.upstream import Answer, UpstreamClient, decode_json

MAX_SHOWN_CHARS = 2000
_SECRET_PARAM = re.compile(r"key|token|secret|sig|password", re.IGNORECASE)
_AUTH_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*) +\S")


def run_trial(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """0 when an answer and sources came out; 1 when the backend or the extraction failed; 2 for bad input."""
    out = out or sys.stdout
    route = next((r for r in settings.routes if r.path == args.route and r.handler == "chat"), None)
    if route is None or route.upstream is None:
        chat_paths = ", ".join(r.path for r in settings.routes if r.handler == "chat") or "none"
        print(f"error: {args.route} is not a chat route in {settings.source} (chat routes: {chat_paths})",
              file=sys.stderr)
        return 2
    try:
        data: dict[str, Any] = {"message": args.question}
        if args.session:
            data["sessionId"] = args.session
        if args.history:
            data["history"] = json.loads(args.history)
        if args.context:
            data["context"] = json.loads(args.context)
        turn = validate_chat(data, route.limits, uuid.uuid4().hex)
    except json.JSONDecodeError as exc:
        print(f"error: --history/--context is not JSON: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2

    body = build_backend_body(route.mapping, turn)
    url = backend_url(route.upstream.url, turn)
    headers = {**route.upstream.headers, "x-request-id": turn.request_id}
    print(f"-> POST {mask_url(url)}", file=out)
    for name, value in headers.items():
        shown = value if name == "x-request-id" else mask_header(value)
        print(f"   {name}: {shown}", file=out)
    print(_indent(json.dumps(body, indent=2, ensure_ascii=False)), file=out)

    try:
        answer = asyncio.run(_send(settings, route, url, body, headers))
    except ProviderError as exc:
        print(f"<- failed: {exc.message}", file=out)
        return 1
    print(f"<- HTTP {answer.status} in {answer.elapsed * 1000:.0f} ms", file=out)
    if not answer.ok:
        print(_indent(_shorten(answer.body.decode("utf-8", "replace"))), file=out)
        print(f"failed: {PROVIDER} answered HTTP {answer.status} (the body above says why)", file=out)
        return 1
    try:
        decoded = decode_json(answer, PROVIDER)
    except ProviderError as exc:
        print(_indent(_shorten(answer.body.decode("utf-8", "replace"))), file=out)
        print(f"failed: {exc.message}", file=out)
        return 1
    print(_indent(_shorten(json.dumps(decoded, indent=2, ensure_ascii=False))), file=out)
    try:
        text, sources = parse_backend_answer(route.mapping, decoded)
    except ProviderError as exc:
        print(f"extraction failed: {exc.message}", file=out)
        return 1
    print("== extracted", file=out)
    print(f"response: {text}", file=out)
    print(f"sources:  {json.dumps(sources, ensure_ascii=False)}", file=out)
    return 0


async def _send(settings: Settings, route: Route, url: str, body: Any, headers: Mapping[str, str]) -> Answer:
    assert route.upstream is not None
    async with UpstreamClient(settings.client) as client:
        return await client.request(
            "POST", url, provider=PROVIDER, timeouts=route.upstream.timeouts, json_body=body, headers=headers
        )


def mask_header(value: str) -> str:
    """``Bearer ****`` for ``Bearer sk-...``, ``****`` otherwise, ``(empty)`` when unset."""
    if not value.strip():
        return "(empty)"
    scheme = _AUTH_SCHEME.match(value)
    return f"{scheme.group(1)} ****" if scheme else "****"


def mask_url(url: str) -> str:
    """The URL without user:password and with secret-looking query values (``key``, ``sig``...) masked."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    query = urlencode(
        [(k, "****" if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + f"\n... ({len(text)} characters)"


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
