"""python -m examples.reference_backend [--host H] [--port P] [--public-url URL] [--knowledge DIR]"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from examples.reference_backend.app import KNOWLEDGE_DIR, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="Northwind Outfitters reference chat backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--public-url", default=os.environ.get("REFERENCE_BACKEND_PUBLIC_URL"),
                        help="base URL for source links (default http://HOST:PORT)")
    parser.add_argument("--knowledge", type=Path, default=KNOWLEDGE_DIR, help="directory of Markdown documents")
    args = parser.parse_args()
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    app = create_app(args.knowledge, public_url)
    print(f"reference backend: http://{args.host}:{args.port}/api/chat (knowledge: {args.knowledge})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
