"""The layout's promises, checked: the chat path imports no avatar provider, and no
module reaches into another's private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def test_the_chat_path_imports_no_avatar_provider() -> None:
    code = (
        "import sys, gateway.chat; "
        "print(','.join(sorted(m for m in sys.modules if m.startswith('gateway.avatar'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=GATEWAY.parent).stdout.strip()
    assert out == ""


def test_no_module_imports_another_modules_private_names() -> None:
    reaches = []
    for path in GATEWAY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gateway"):
                reaches += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert reaches == []
