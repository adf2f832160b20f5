"""A request's line and headers are bounded (serving.uvicorn_protocols.MAX_REQUEST_HEAD_BYTES):
an attacker's `Authorization: Bearer <megabytes shaped like a JWT>` gets 431 and a closed
connection, sent at once or trickled in small writes, over plain HTTP or a WebSocket upgrade,
instead of the process holding it and the app hashing and parsing it. Headers under the bound
are served, request after request on one kept-alive connection."""

from __future__ import annotations

import base64
import socket

import httpx

from serving.uvicorn_protocols import MAX_REQUEST_HEAD_BYTES
from tests.support.processes import Server

QUERY = b'{"query":"{ me { id } }"}'


def jwt_shaped(size: int) -> bytes:
    """`<header>.<payload>.<signature>` of about `size` bytes, the header a large JSON object
    (what a JWT library would decode and parse before it looks at the signature)."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","x":"' + b"a" * size + b'"}').rstrip(b"=")
    return header[:size] + b".e30.c2ln"


def post_head(authorization: bytes, path: bytes = b"/graphql") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + authorization + b"\r\ncontent-length: %d\r\n\r\n" % len(QUERY)
    )


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def send_then_read(server: Server, data: bytes, piece: int) -> bytes:
    """Sends all of `data` in writes of `piece` bytes (the server reads all of it, so its close
    is a clean one and its answer can be read), then reads until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for start in range(0, len(data), piece):
            sock.sendall(data[start : start + piece])
        return read_response(sock)


def assert_serving(server: Server) -> None:
    assert httpx.post(f"{server.url}/graphql", json={"query": "{ me { id } }"}).json() == {"data": {"me": None}}


def test_a_head_just_past_the_bound_is_refused_with_431(server: Server) -> None:
    head = post_head(jwt_shaped(2 * MAX_REQUEST_HEAD_BYTES))[: MAX_REQUEST_HEAD_BYTES + 1]
    response = send_then_read(server, head, piece=len(head))
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert b"connection: close" in response.lower()
    assert_serving(server)


def test_a_head_trickled_in_small_writes_is_refused_once_past_the_bound(server: Server) -> None:
    # One byte past the bound, in its last write: the server has read everything when it refuses,
    # so its close is clean (bytes still on their way after it would be answered with a reset).
    head = post_head(jwt_shaped(2 * MAX_REQUEST_HEAD_BYTES))[: MAX_REQUEST_HEAD_BYTES + 1]
    response = send_then_read(server, head, piece=1024)
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert_serving(server)


def test_a_megabyte_authorization_header_is_never_answered_as_a_request(server: Server) -> None:
    """Sent at once, a megabyte is more than the server reads before it refuses: the client
    gets the 431, or a reset for the bytes the server left unread; never an answer to the query
    (before the bound: 200 and `{"data": {"me": null}}`, the megabyte hashed and parsed)."""
    data = post_head(jwt_shaped(1_000_000)) + QUERY
    response = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        try:
            sock.sendall(data)
            response = read_response(sock)
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert response == b"" or response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert_serving(server)


def test_a_websocket_upgrade_with_a_huge_header_is_refused(server: Server) -> None:
    head = (
        b"GET /graphql HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n"
        b"sec-websocket-protocol: graphql-transport-ws\r\ncookie: " + b"c" * MAX_REQUEST_HEAD_BYTES
    )
    response = send_then_read(server, head, piece=8192)
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]


def test_headers_under_the_bound_are_served_request_after_request(server: Server) -> None:
    # Each request's head is most of the bound: the count starts again with each request.
    filler = b"x" * (MAX_REQUEST_HEAD_BYTES * 3 // 4)
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            response = client.post(
                "/graphql", content=QUERY, headers={"content-type": "application/json", "x-pad": filler.decode()}
            )
            assert response.status_code == 200
            assert response.json() == {"data": {"me": None}}
