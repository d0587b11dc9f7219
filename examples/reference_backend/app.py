"""The reference backend's HTTP surface (Starlette).

POST /api/chat      {message, sessionId, context} -> {response, sources}
GET  /docs/{name}   the knowledge-base document a source points at
GET  /health        {status, documents}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from examples.reference_backend.retrieval import BM25Index, Hit, load_passages, tokenize

KNOWLEDGE_DIR = Path(__file__).resolve().parent / "knowledge"
NO_MATCH = (
    "I couldn't find that in the Northwind Outfitters knowledge base. "
    "You can ask about our products, shipping, returns, warranty, sizing, care, stores, "
    "the loyalty program or how to contact support."
)
_DOC_NAME = re.compile(r"^[a-z0-9-]{1,64}$")


def compose(hits: list[Hit]) -> str:
    """An extractive answer: the chosen paragraphs of one document, each section led by where it is from."""
    parts = []
    section = None
    for hit in hits:
        if hit.passage.section != section or not parts:
            section = hit.passage.section
            lead = f"From our {hit.passage.title}" + (f" ({section})" if section else "")
            parts.append(f"{lead}: {hit.passage.text}")
        else:
            parts.append(hit.passage.text)
    return "\n\n".join(parts)


def previous_question(context: Any) -> str:
    """The last user turn from ``context.history``, used to resolve short follow-ups."""
    if not isinstance(context, dict) or not isinstance(context.get("history"), list):
        return ""
    for turn in reversed(context["history"]):
        if isinstance(turn, dict) and turn.get("role") == "user" and isinstance(turn.get("content"), str):
            return str(turn["content"])
    return ""


def create_app(knowledge_dir: Path = KNOWLEDGE_DIR, public_url: str = "http://127.0.0.1:9000") -> Starlette:
    passages = load_passages(knowledge_dir)
    index = BM25Index(passages)
    docs = {p.doc: p.title for p in passages}
    base = public_url.rstrip("/")

    async def chat(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message.strip():
            return JSONResponse({"error": "'message' must be a non-empty string"}, status_code=400)
        # Follow-ups ("and for Canada?") borrow the previous question's words at a lower weight.
        extra = previous_question(body.get("context")) if len(tokenize(message)) <= 3 else ""
        chosen = index.answer(message, extra=extra)
        if not chosen:
            return JSONResponse({"response": NO_MATCH, "sources": []})
        doc = chosen[0].passage
        sources = [{"title": doc.title, "url": f"{base}/docs/{doc.doc}"}]
        return JSONResponse({"response": compose(chosen), "sources": sources})

    async def document(request: Request) -> Response:
        name = request.path_params["name"]
        if not _DOC_NAME.match(name) or name not in docs:
            return JSONResponse({"error": f"no document named {name!r}"}, status_code=404)
        text = (knowledge_dir / f"{name}.md").read_text(encoding="utf-8")
        return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "documents": len(docs)})

    return Starlette(
        routes=[
            Route("/api/chat", chat, methods=["POST"]),
            Route("/docs/{name}", document, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
