"""Headers every HTTP response carries, added where the response starts (`send`), so JSON answers,
SSE and multipart streams, refusals (413s included), health checks and the web client alike.

- `X-Content-Type-Options: nosniff` on every response.
- `Strict-Transport-Security` when the request came over HTTPS: the scope's scheme, which
  forwarded.py takes from a trusted router's `X-Forwarded-Proto` (a client reaching the app
  directly cannot ask for it).
- A Content-Security-Policy on the HTML pages: the web client's allows what web/dist loads (its
  own module script and stylesheet), its API at /graphql over http(s) and ws(s) of the same
  origin, and images from us and over http(s) (users' avatar URLs, which updateProfile takes
  in either scheme; a browser upgrades an http image on an https page); nothing inline, no plugins,
  no framing. GraphiQL's explorer (GET /graphql) is inline scripts and an import map pulling
  from esm.sh: a policy loose enough for it protects nothing, so it gets only
  `frame-ancestors 'none'` (no clickjacking); it is off on a dyno unless asked for.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import Scope

NOSNIFF = (b"x-content-type-options", b"nosniff")
# One year; not `includeSubDomains`: an app's domain does not own its siblings' policy.
HSTS = (b"strict-transport-security", b"max-age=31536000")
WEB_CLIENT_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http:; "
    "connect-src 'self'{sockets}; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
EXPLORER_POLICY = b"frame-ancestors 'none'"
CSP = b"content-security-policy"
# A Host we name in the policy: a name or an address, and a port. Anything else is left out
# ('self' still covers ws(s) in browsers that implement CSP 3).
HOST = re.compile(rb"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def web_client_policy(scope: Scope) -> bytes:
    host = next((value for name, value in scope["headers"] if name == b"host"), b"")
    sockets = ""
    if HOST.fullmatch(host):
        # Older browsers (CSP 2) do not count ws(s) as 'self': the same origin, named.
        sockets = f" ws://{host.decode()} wss://{host.decode()}"
    return WEB_CLIENT_POLICY.format(sockets=sockets).encode()


def add_security_headers(scope: Scope, headers: list[Any]) -> None:
    """Adds this response's security headers to `headers` (a response start's, for `scope`)."""
    headers.append(NOSNIFF)
    if scope.get("scheme") == "https":
        headers.append(HSTS)
    if _is_html(headers) and not any(name.lower() == CSP for name, _ in headers):
        explorer = scope.get("path") == "/graphql"
        headers.append((CSP, EXPLORER_POLICY if explorer else web_client_policy(scope)))


def _is_html(headers: list[Any]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return bytes(value).lower().startswith(b"text/html")
    return False
