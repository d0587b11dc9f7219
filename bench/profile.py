"""Where the gateway's time goes under load: py-spy samples one gateway worker (production
config, every feature on) while wrk drives it, and prints the functions holding the most
samples, by own time and by time including callees.

    .venv/bin/python bench/profile.py                       # fast backend, 64 conns, 10 s
    .venv/bin/python bench/profile.py --backend slow --conns 1000
    .venv/bin/python bench/profile.py --speedscope out.json  # the whole profile, for speedscope.app

py-spy (``pip install py-spy``, dev/bench only) needs ptrace: root, or
``kernel.yama.ptrace_scope=0``.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lib import free_port, nginx_backend, uvicorn, wrk
from bench.suite import gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("fast", "slow"), default="fast")
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--speedscope", type=Path, help="also write the profile in speedscope's format")
    parser.add_argument("--gil", action="store_true", help="only samples of the thread holding the GIL")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    bport, gport = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{bport}/api/chat"
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        workdir = Path(tmp)
        backend = nginx_backend(bport) if args.backend == "fast" else uvicorn("bench.slow_backend:app", bport)
        with backend, gateway(gport, backend_url, workdir) as proc:
            url = f"http://127.0.0.1:{gport}/api/chat"
            wrk(url, 16, 1.0)
            load = threading.Thread(target=wrk, args=(url, args.conns, args.duration + 2))
            load.start()
            raw = workdir / "profile.txt"
            subprocess.run([spy, "record", "--pid", str(proc.pid), "--duration", str(args.duration), "--rate", "250",
                            "--format", "raw", "--output", str(raw), "--nonblocking", *(["--gil"] if args.gil else [])],
                           check=True,
                           capture_output=True)
            if args.speedscope:
                subprocess.run([spy, "record", "--pid", str(proc.pid), "--duration", "3", "--format", "speedscope",
                                "--output", str(args.speedscope), "--nonblocking"], check=True, capture_output=True)
            load.join()
        report(raw, args.top)


def report(raw: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    print(f"{samples} samples (all threads)\n\nown time")
    for frame, n in own.most_common(top):
        print(f"{100 * n / samples:6.1f}%  {frame}")
    print("\nincluding callees")
    for frame, n in total.most_common(top):
        print(f"{100 * n / samples:6.1f}%  {frame}")


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)": lines split one function apart.
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    module = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({module})"


if __name__ == "__main__":
    main()
