"""Client identity behind proxies: unit tests of the right-to-left walk, and a real nginx in front."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.proxies import ClientResolver, forwarded_for_hops, parse_ip, parse_networks, socket_peer
from tests.conftest import BASE_YAML, free_port, make_settings, serve
from tests.serve_support import START_PATHS, started
from tests.services import NGINX_MAIN, nginx

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = parse_networks(["127.0.0.1/32", "::1/128"])


def resolve(peer: str, *values: str, trusted=LOOPBACK, header: str = "x-forwarded-for") -> str:
    return ClientResolver(trusted, header).resolve(peer, list(values))


def test_untrusted_peer_headers_are_ignored() -> None:
    assert resolve("203.0.113.9", "1.2.3.4") == "203.0.113.9"


def test_trusted_peer_rightmost_untrusted_hop_is_the_client() -> None:
    assert resolve("127.0.0.1", "198.51.100.7") == "198.51.100.7"
    # A client forging the left part changes nothing: nginx appended the real address.
    assert resolve("127.0.0.1", "1.1.1.1, 198.51.100.7") == "198.51.100.7"


def test_trusted_hops_are_skipped() -> None:
    trusted = parse_networks(["127.0.0.1", "10.0.0.0/8"])
    assert resolve("127.0.0.1", "1.1.1.1, 198.51.100.7, 10.1.2.3", trusted=trusted) == "198.51.100.7"
    assert resolve("127.0.0.1", "10.9.9.9", "10.1.2.3", trusted=trusted) == "10.9.9.9"  # all trusted: the leftmost


def test_garbage_hop_falls_back_to_the_reporting_proxy() -> None:
    assert resolve("127.0.0.1", "unknown") == "127.0.0.1"
    assert resolve("127.0.0.1", "198.51.100.7, <script>") == "127.0.0.1"
    assert resolve("127.0.0.1", "") == "127.0.0.1"


def test_no_trusted_proxies_means_never_trust_headers() -> None:
    assert resolve("127.0.0.1", "198.51.100.7", trusted=()) == "127.0.0.1"


def test_forwarded_header_rfc7239() -> None:
    header = 'for=1.1.1.1, for="[2001:db8::1]:4711";proto=https, for=198.51.100.7:443;by=10.0.0.1'
    assert forwarded_for_hops([header]) == ["1.1.1.1", "[2001:db8::1]:4711", "198.51.100.7:443"]
    assert resolve("127.0.0.1", header, header="forwarded") == "198.51.100.7"
    assert resolve("127.0.0.1", 'for="[2001:db8::1]:4711"', header="forwarded") == "2001:db8::1"
    assert resolve("127.0.0.1", "for=_hidden", header="forwarded") == "127.0.0.1"
    # When Forwarded is the configured header, X-Forwarded-For is not looked at (and vice versa).
    assert resolve("127.0.0.1", header="forwarded") == "127.0.0.1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.2.3.4", "1.2.3.4"), ("1.2.3.4:80", "1.2.3.4"), ("[::1]:80", "::1"), ("::ffff:10.0.0.1", "10.0.0.1"), ("x", None)],
)
def test_parse_ip(text: str, expected: str | None) -> None:
    address = parse_ip(text)
    assert (None if address is None else str(address)) == expected


def with_server(server: str, url: str = "http://b/api/chat", chat_extra: str = "") -> str:
    base = BASE_YAML.format(url=url, chat_extra=chat_extra)
    assert "server: {log_format: json}" in base
    return base.replace("server: {log_format: json}", f"server: {server}")


def test_trusted_proxies_config_errors() -> None:
    from gateway.errors import ConfigError

    yaml = with_server("{trusted_proxies: [10.0.0.0/8, nope]}")
    with pytest.raises(ConfigError, match=r"server.trusted_proxies\[1\]: 'nope' is not an IP address or network"):
        make_settings(yaml_text=yaml)
    settings = make_settings(
        yaml_text=with_server("{trusted_proxies: '${TP}'}"),
        env={"TP": "10.0.0.0/8, 127.0.0.1"},
    )
    assert settings.server.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")


# -- a real nginx in front ------------------------------------------------------

def backend_app() -> Starlette:
    async def chat(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"response": "ok", "sources": []})

    return Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])


@pytest.fixture
def behind_nginx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[str, str]]:
    """The shipped examples/nginx/gateway.conf in front of a gateway (chat limit 3/minute per IP)."""
    with serve(backend_app()) as backend:
        settings = make_settings(
            yaml_text=with_server(
                "{log_format: json, trusted_proxies: [127.0.0.1]}", f"{backend}/api/chat", "    rate_limit: 3/minute"
            )
        )
        with serve(create_app(settings)) as gateway:
            nginx_port = free_port()
            site = (ROOT / "examples" / "nginx" / "gateway.conf").read_text()
            site = site.replace("listen 80;", f"listen 127.0.0.1:{nginx_port};")
            site = site.replace("server 127.0.0.1:8080;", f"server {gateway.removeprefix('http://')};")
            with nginx(NGINX_MAIN.format(dir=tmp_path, connections=256, site=site), tmp_path, nginx_port):
                yield f"http://127.0.0.1:{nginx_port}", gateway


def client_from(address: str) -> httpx.Client:
    # All of 127.0.0.0/8 is loopback on Linux: distinct source addresses are distinct clients.
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


@pytest.mark.integration
def test_forged_x_forwarded_for_through_nginx_gets_no_fresh_budget(
    behind_nginx: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    proxy, gateway = behind_nginx
    with client_from("127.0.0.2") as alice, client_from("127.0.0.3") as bob:
        answers = [
            alice.post(f"{proxy}/api/chat", json={"message": "hi"}, headers={"X-Forwarded-For": f"10.0.0.{i}"})
            for i in range(5)
        ]
        assert [r.status_code for r in answers] == [200, 200, 200, 429, 429], [r.text for r in answers]
        # Another real client behind the same nginx has its own budget.
        assert bob.post(f"{proxy}/api/chat", json={"message": "hi"}).status_code == 200
        # Straight to the gateway, Alice's forged header comes from an untrusted peer: ignored.
        r = alice.post(f"{gateway}/api/chat", json={"message": "hi"}, headers={"X-Forwarded-For": "10.9.9.9"})
        assert r.status_code == 429
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    clients = [e["client"] for e in events if e.get("event") == "request"]
    assert clients == ["127.0.0.2"] * 5 + ["127.0.0.3", "127.0.0.2"]


# -- every documented way of starting the gateway resolves clients the same way ---------------
# uvicorn's own proxy-headers handling is on by default in `uvicorn ... --factory`: it rewrites
# scope["client"] from X-Forwarded-For for peers in FORWARDED_ALLOW_IPS (127.0.0.1 by default),
# taking `garbage-1` as the client. The gateway must not let that hand out fresh budgets.

HEALTH_ONLY = """
server: {log_format: json}
storage: {record_chat_turns: false}
routes:
  - path: /api/health
    handler: health
    rate_limit: 3/minute
"""


@pytest.mark.integration
@pytest.mark.parametrize("how", START_PATHS)
def test_garbage_forwarded_for_from_a_trusted_proxy_shares_one_budget(how: str, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(HEALTH_ONLY)
    port = free_port()
    with started(how, config, port), httpx.Client(timeout=10) as client:
        url = f"http://127.0.0.1:{port}/api/health"

        def status(forwarded_for: str) -> int:
            return client.get(url, headers={"X-Forwarded-For": forwarded_for}).status_code

        garbage = ["unknown", "garbage-1", "garbage-2:8080", "[garbage-3]:99", "_hidden", "garbage-4", ""]
        statuses = [status(value) for value in garbage]
        # Real addresses forwarded by the trusted proxy are clients with budgets of their own.
        forwarded = [status("198.51.100.7"), status("1.1.1.1, 198.51.100.8:5555"), status("198.51.100.7")]
    assert [s == 429 for s in statuses] == [False] * 3 + [True] * 4, statuses
    assert 429 not in forwarded, forwarded


class FakeTransport:
    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer

    def get_extra_info(self, name: str) -> object:
        return self.peer if name == "peername" else None


class FakeCycle:
    """Stands in for uvicorn's RequestResponseCycle, whose bound ``receive`` the app gets."""

    def __init__(self, peer: tuple[str, int] | None) -> None:
        self.transport = FakeTransport(peer) if peer else None

    async def receive(self) -> dict[str, object]:
        return {"type": "http.disconnect"}


def scope(client: tuple[str, int] | None, *forwarded_for: str) -> dict[str, object]:
    return {"type": "http", "client": client, "headers": [(b"x-forwarded-for", v.encode()) for v in forwarded_for]}


@pytest.mark.parametrize(
    ("client", "forwarded_for", "transport_peer", "expected"),
    [
        pytest.param(("127.0.0.1", 43210), (), None, "127.0.0.1", id="no-header"),
        pytest.param(("127.0.0.1", 43210), ("198.51.100.7",), None, "127.0.0.1", id="header-not-applied"),
        pytest.param(("garbage-1", 0), ("garbage-1",), ("127.0.0.1", 43210), "127.0.0.1", id="rewritten"),
        pytest.param(("198.51.100.7", 0), ("1.1.1.1, 198.51.100.7",), ("::1", 5000, 0, 0), "::1", id="rewritten-v6"),
        pytest.param(("garbage-2", 8080), ("garbage-2:8080",), ("127.0.0.1", 43210), "127.0.0.1", id="rewritten-port"),
        pytest.param(("garbage-3", 99), ("[garbage-3]:99", "x"), ("127.0.0.1", 1), "127.0.0.1", id="rewritten-brackets"),
        # Rewritten, and the socket cannot be asked: the peer is unknown, never the header's word.
        pytest.param(("garbage-1", 0), ("garbage-1",), None, None, id="rewritten-no-transport"),
    ],
)
def test_socket_peer_sees_through_uvicorn_proxy_headers(
    client: tuple[str, int], forwarded_for: tuple[str, ...], transport_peer: tuple[str, int] | None, expected: str | None
) -> None:
    assert socket_peer(scope(client, *forwarded_for), FakeCycle(transport_peer).receive) == expected


@pytest.mark.integration
def test_the_socket_peer_is_recovered_where_uvicorn_rewrote_it(capsys: pytest.CaptureFixture[str]) -> None:
    """conftest's serve() runs uvicorn.Config's defaults, proxy_headers on, as the bare CLI does."""
    with serve(create_app(make_settings())) as url, httpx.Client(timeout=10) as client:
        for forwarded_for in ("garbage-1", "garbage-2:8080", "198.51.100.7"):
            client.get(f"{url}/api/health", headers={"X-Forwarded-For": forwarded_for})
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [e["client"] for e in events if e.get("event") == "request"] == ["127.0.0.1", "127.0.0.1", "198.51.100.7"]


def test_the_access_log_names_the_resolved_client_also_for_requests_the_limiter_never_saw(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A 404 from behind a trusted proxy: the log says who the client is, not the proxy.
    with serve(create_app(make_settings())) as url:
        r = httpx.get(f"{url}/api/nothing-here", headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 404
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = next(e for e in events if e.get("event") == "request" and e["path"] == "/api/nothing-here")
    assert access["client"] == "203.0.113.9"
