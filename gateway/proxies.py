"""Client identity behind reverse proxies, without trusting what a client can forge.

The direct peer of the socket is the client unless it is a trusted proxy. Only
then is the forwarding header read, walked from right to left (the right end
was written by the proxy nearest to us), skipping hops that are themselves
trusted proxies; the first untrusted address is the client. Whatever a client
puts at the left end of ``X-Forwarded-For`` is therefore never reached while a
trusted proxy appended the real address after it.

Exactly one header is honoured, ``X-Forwarded-For`` (what nginx sets with
``$proxy_add_x_forwarded_for``) or RFC 7239 ``Forwarded``, chosen in the
config: honouring both would let a client send the one the proxy does not
rewrite. A hop that is not an IP address (``unknown``, an obfuscated
identifier, garbage) stops the walk; the address of the trusted hop that
reported it is used instead, so such a client still shares a budget with
others behind the same proxy rather than getting one of its own.

The socket peer is the one the connection has, however the gateway was
started: see ``socket_peer`` for uvicorn's own proxy-headers handling, which
``uvicorn gateway.app:create_app --factory`` runs by default.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

import structlog
from starlette.requests import Request
from starlette.types import Receive, Scope

log = structlog.get_logger("gateway.proxies")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("([^"]*)"|[^;,\s]*)', re.IGNORECASE)


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """'10.0.0.0/8', '127.0.0.1', '::1' -> networks; raises ValueError naming the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return tuple(networks)


def parse_ip(text: str) -> IPAddress | None:
    """An address from a header hop: '1.2.3.4', '1.2.3.4:5678', '[::1]:80', '::1'; None if not an IP."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_for_hops(values: Sequence[str]) -> list[str]:
    """The ``for=`` values of RFC 7239 ``Forwarded`` headers, left to right."""
    hops = []
    for value in values:
        for element in value.split(","):
            match = _FORWARDED_FOR.search(element)
            hops.append(match.group(2) if match and match.group(2) is not None else (match.group(1) if match else ""))
    return hops


def x_forwarded_for_hops(values: Sequence[str]) -> list[str]:
    return [hop.strip() for value in values for hop in value.split(",")]


class ClientResolver:
    def __init__(self, trusted: tuple[IPNetwork, ...], header: str = "x-forwarded-for") -> None:
        self.trusted = trusted
        self.header = header.lower()

    def is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.trusted)

    def resolve(self, peer: str | None, header_values: Sequence[str]) -> str:
        """The client address for a request from ``peer`` carrying these forwarding header values."""
        if peer is None:
            return "unknown"
        current = parse_ip(peer)
        if current is None or not self.trusted or not self.is_trusted(current) or not header_values:
            return peer
        hops = forwarded_for_hops(header_values) if self.header == "forwarded" else x_forwarded_for_hops(header_values)
        for hop in reversed(hops):
            address = parse_ip(hop)
            if address is None:
                return str(current)  # unknown / garbage: the reporting (trusted) hop
            current = address
            if not self.is_trusted(address):
                return str(address)
        return str(current)  # every hop trusted: the leftmost one


def client_ip(request: Request) -> str:
    """The client's address: the socket peer, or, behind a trusted proxy, what it forwarded."""
    return scope_client_ip(request.scope, request.receive)


def scope_client_ip(scope: Scope, receive: Receive) -> str:
    """``client_ip`` for ASGI code that has no Request. Resolved once per request (the
    limiter and the access log both ask), with the lifespan's ``client_resolver``."""
    state = scope["state"]
    if "client_ip" not in state:
        resolver: ClientResolver = state["client_resolver"]
        name = resolver.header.encode()
        values = [value.decode("latin-1") for key, value in scope["headers"] if key == name]
        state["client_ip"] = resolver.resolve(socket_peer(scope, receive), values)
    return str(state["client_ip"])


_warned_unknown_peer = False


def socket_peer(scope: Scope, receive: Receive) -> str | None:
    """The address of the socket's peer, also where uvicorn's proxy-headers middleware replaced it.

    ``uvicorn gateway.app:create_app --factory`` runs uvicorn's ProxyHeadersMiddleware by
    default (``--proxy-headers``, trusting ``FORWARDED_ALLOW_IPS``, 127.0.0.1 and ::1 by
    default). For such a peer it sets ``scope["client"]`` to one hop of X-Forwarded-For, by its
    own rules, in which ``garbage-1`` is a client like any other: every new string would get a
    fresh rate-limit budget, and the gateway's own trust list would not be the one applied.

    The rewrite leaves a mark: the client is then exactly what uvicorn parses out of one of the
    header's hops, ``(host, port)`` with port 0 where the hop has none, and no TCP peer has port
    0. Then the peer is asked of the connection itself: ``receive`` is a bound method of
    uvicorn's request cycle, which holds the transport. Where that is not possible (another
    server, or a uvicorn whose internals changed) the peer is unknown, None, which the resolver
    turns into ``unknown``: one budget for all such requests, never one per header value.
    ``avatar-gateway serve`` turns uvicorn's rewriting off; then the mark never shows.
    """
    global _warned_unknown_peer
    client = scope.get("client")
    if not client:
        return None
    host, port = str(client[0]), int(client[1])
    hops = [
        hop.strip()
        for name, value in scope["headers"]
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
    ]
    if not hops or (port != 0 and (host, port) not in {_uvicorn_host_port(hop) for hop in hops}):
        return host
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    if not _warned_unknown_peer:
        _warned_unknown_peer = True
        log.warning(
            "client_peer_unknown",
            reason="the server rewrote the client address from X-Forwarded-For; clients it rewrote share one "
            "rate-limit budget. Start with avatar-gateway serve, or uvicorn --no-proxy-headers",
        )
    return None


def _uvicorn_host_port(hop: str) -> tuple[str, int]:
    """A hop as uvicorn's ProxyHeadersMiddleware parses it (``_parse_host_port`` in
    uvicorn/middleware/proxy_headers.py): bare, ``host:port`` or ``[v6]:port``; port 0 if none."""
    if hop.startswith("["):
        end = hop.find("]")
        if end == -1:
            return hop, 0
        host, rest = hop[1:end], hop[end + 1 :]
        if not rest:
            return host, 0
        if not rest.startswith(":"):
            return hop, 0
        try:
            return host, int(rest[1:])
        except ValueError:
            return host, 0
    if hop.count(":") == 1:
        host, _, port = hop.rpartition(":")
        try:
            return host, int(port)
        except ValueError:
            return hop, 0
    return hop, 0
