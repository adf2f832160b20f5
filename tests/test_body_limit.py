"""An oversized body gets a 413 the client can read (issue 13): the server reads the rest of it
before answering, so the client is not cut off with a reset while it is still sending. Several
tries each: a server that answers and closes early fails a few of them, not all."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from limits.body_size import DRAIN_FACTOR
from tests.support.processes import ROOT, Server

JS = ROOT / "tests" / "js"
LIMIT = 1_000_000  # MAX_BODY_BYTES's default, which the session servers keep
TRIES = 5
SIZES = [int(1.1 * LIMIT), 3 * LIMIT]
CREATE_MESSAGE = "mutation($r: ID!, $b: String!) { createMessage(room: $r, body: $b) { id } }"


def create_message_body(size: int) -> bytes:
    """A createMessage request of exactly `size` bytes, its message body padded."""
    empty = json.dumps({"query": CREATE_MESSAGE, "variables": {"r": "1", "b": ""}}).encode()
    payload = json.dumps({"query": CREATE_MESSAGE, "variables": {"r": "1", "b": "x" * (size - len(empty))}}).encode()
    assert len(payload) == size
    return payload


def chunks(payload: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


def assert_payload_too_large(status: int, body: dict) -> None:
    assert status == 413
    assert body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert str(LIMIT) in body["errors"][0]["message"]


def assert_serving(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.post(f"{server.url}/graphql", json={"query": "{ me { id } }"}).json() == {"data": {"me": None}}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "chunked"])
def test_httpx_reads_the_413(any_server: Server, size: int, streamed: bool) -> None:
    payload = create_message_body(size)
    with httpx.Client(base_url=any_server.url) as client:
        for _ in range(TRIES):
            response = client.post(
                "/graphql",
                content=chunks(payload) if streamed else payload,
                headers={"content-type": "application/json"},
            )
            assert_payload_too_large(response.status_code, response.json())
            # The whole body was read: the connection is good for the next request.
            assert "connection" not in response.headers
        assert client.post("/graphql", json={"query": "{ me { id } }"}).json() == {"data": {"me": None}}
    assert_serving(any_server)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", ["declared", "chunked"])
def test_node_fetch_reads_the_413(any_server: Server, size: int, mode: str) -> None:
    result = subprocess.run(
        ["node", str(JS / "post-oversized.mjs"), f"{any_server.url}/graphql", str(size), str(TRIES), mode],
        cwd=JS,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    tries = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(tries) == TRIES
    for attempt in tries:
        assert "error" not in attempt, tries
        assert_payload_too_large(attempt["status"], attempt["body"])
    assert_serving(any_server)


# The exchanges below are written by hand: what matters is what is on the wire.


def connect(server: Server, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed within the response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def request_head(server: Server, *headers: str) -> bytes:
    lines = ["POST /graphql HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_closed(sock: socket.socket) -> None:
    assert sock.recv(1) == b""


def test_the_connection_serves_the_next_request_once_the_body_was_drained(server: Server) -> None:
    payload = create_message_body(SIZES[0])
    with connect(server) as sock:
        sock.sendall(request_head(server, f"Content-Length: {len(payload)}") + payload)
        status, headers, body = read_response(sock)
        assert_payload_too_large(status, json.loads(body))
        assert "connection" not in headers
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        assert read_response(sock)[0] == 200


@pytest.mark.parametrize("expect", [False, True], ids=["beyond-the-bound", "expect-100-continue"])
def test_a_body_not_worth_reading_is_refused_before_it_is_sent(server: Server, expect: bool) -> None:
    """Beyond the bound the body would not be read whole anyway; a client that waits for
    "100 Continue" is told no before it sends anything."""
    length = 2 * LIMIT if expect else DRAIN_FACTOR * LIMIT + 1
    with connect(server) as sock:
        sock.sendall(request_head(server, f"Content-Length: {length}", *(["Expect: 100-continue"] if expect else [])))
        status, headers, body = read_response(sock)
        assert_payload_too_large(status, json.loads(body))
        assert headers["connection"] == "close"
        assert_closed(sock)
    assert_serving(server)


def test_a_chunked_body_is_read_up_to_the_bound_then_cut_short(server: Server) -> None:
    """The client sends one byte more than the bound and waits: everything it sent was read,
    so the close that follows the 413 is a clean one."""
    head = request_head(server, "Transfer-Encoding: chunked")
    with connect(server) as sock:
        sock.sendall(head)
        piece = b"x" * 65536
        for _ in range(DRAIN_FACTOR * LIMIT // len(piece)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        rest = DRAIN_FACTOR * LIMIT % len(piece) + 1
        sock.sendall(b"%x\r\n%s\r\n" % (rest, b"x" * rest))
        status, headers, body = read_response(sock)
        assert_payload_too_large(status, json.loads(body))
        assert headers["connection"] == "close"
        assert_closed(sock)
    assert_serving(server)


def test_a_stalled_body_is_refused_after_the_drain_time(server: Server) -> None:
    """A client that stops sending halfway gets its 413 (and a closed connection) once the
    drain time is up: a refused request never holds the worker for long."""
    with connect(server, timeout=30) as sock:
        sock.sendall(request_head(server, f"Content-Length: {2 * LIMIT}") + b"x" * LIMIT)
        status, headers, body = read_response(sock)
        assert_payload_too_large(status, json.loads(body))
        assert headers["connection"] == "close"
        assert_closed(sock)
    assert_serving(server)
