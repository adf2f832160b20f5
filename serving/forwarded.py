"""Who the client is and which scheme it used, read once per request at the composition root.

Heroku's router appends the address it accepted the connection from to `X-Forwarded-For`, and
sets `X-Forwarded-Proto`: everything to the left of the last entry is whatever the client wrote.
So the client's address is the RIGHTMOST entry, and only when it parses as an IP address (bare,
as Heroku writes it: a port-suffixed or bracketed form is not what the router sends, so it is
not believed). Anything else (no header, an empty or garbage entry) leaves the peer's address.

These headers are believed only from a trusted peer (`FORWARDED_ALLOW_IPS`): on a dyno every
peer is the router ("*"); elsewhere, by default, only this machine. A client that reaches
`make run` directly is its own peer, and what it writes in the headers changes nothing.

The address is written into the scope's `client`, the same dict uvicorn's access log reads, so
the access line records the address the rate limits used. uvicorn's own proxy handling is off
(worker.py): it takes the leftmost entry when every peer is trusted.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from core.settings import ConfigurationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = {"http": ("http", "ws"), "https": ("https", "wss")}


def client_ip(forwarded_for: str) -> str | None:
    """The rightmost entry of an `X-Forwarded-For` value, normalized, when it is an IP address."""
    entry = forwarded_for.rpartition(",")[2].strip()
    if not entry or len(entry) > 45:  # the longest textual IPv6 address
        return None
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:1.2.3.4 is 1.2.3.4: one key for the limits
            return str(address.ipv4_mapped)
        if address.scope_id is not None:
            return None
    return str(address)


class TrustedPeers:
    """Which peers' forwarding headers are believed."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.everyone = "*" in entries
        self.networks: list[Network] = []
        if not self.everyone:
            for entry in entries:
                try:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ConfigurationError(
                        f"FORWARDED_ALLOW_IPS: {entry!r} is not an address, a network or *."
                    ) from None
        self._known: dict[str, bool] = {}

    def __contains__(self, host: str | None) -> bool:
        if self.everyone:
            return True
        if not host:
            return False
        known = self._known.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host)
                known = any(address in network for network in self.networks)
            except ValueError:
                known = False
            if len(self._known) >= 1024:  # peers are few (routers, this machine): bounded all the same
                self._known.clear()
            self._known[host] = known
        return known


def apply_forwarded(scope: Any, trusted: TrustedPeers) -> None:
    """Sets the HTTP or WebSocket scope's `client` and `scheme` from the forwarding headers, when
    its peer is trusted. The scope's `client` is the peer's until then (uvicorn's)."""
    client = scope.get("client")
    if (client[0] if client else None) not in trusted:
        return
    forwarded_for: list[bytes] = []
    proto = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded_for.append(value)
        elif name == b"x-forwarded-proto":
            proto = value
    if forwarded_for:
        # Several header lines are one list, in order (RFC 9110 5.3): the last line's last entry.
        host = client_ip(forwarded_for[-1].decode("latin-1"))
        if host is not None:
            scope["client"] = (host, client[1] if client else 0)
    if proto is not None:
        schemes = SCHEMES.get(proto.decode("latin-1").rpartition(",")[2].strip().lower())
        if schemes is not None:
            scope["scheme"] = schemes[scope["type"] == "websocket"]
