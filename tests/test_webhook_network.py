"""transports.webhook_network (httpcore's network backend on asyncio's streams) against real
servers on loopback: webhook endpoints are https in production, so a POST over TLS (a
certificate made here for 127.0.0.1, trusted by the pool's context) is answered and its
connection kept alive for the next; an untrusted certificate, a closed port and a server that
never answers fail with the httpcore exceptions AnyIO's backend raised (what the dispatcher
classifies)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.processes import free_port
from transports.webhook_network import AsyncioBackend


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a webhook receiver behind a load balancer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = b"got " + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on loopback, and its certificate (for the client to trust)."""
    cert, key = _certificate(tmp_path_factory.mktemp("tls"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/hook", cert
    server.shutdown()
    server.server_close()


async def _post(pool: httpcore.AsyncConnectionPool, url: str, body: bytes) -> httpcore.Response:
    headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode())]
    return await pool.request("POST", url, headers=headers, content=body, extensions={"timeout": {"read": 5.0}})


async def test_a_post_over_tls_is_answered_and_its_connection_kept(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    context = ssl.create_default_context(cafile=str(cert))
    async with httpcore.AsyncConnectionPool(ssl_context=context, network_backend=AsyncioBackend()) as pool:
        first = await _post(pool, url, b'{"n": 1}')
        second = await _post(pool, url, b'{"n": 2}')
        assert (first.status, first.content, second.status, second.content) == (
            200,
            b'got {"n": 1}',
            200,
            b'got {"n": 2}',
        )
        assert len(pool.connections) == 1  # the second request went on the first's connection
        stream = pool.connections[0]._connection._network_stream  # type: ignore[attr-defined]
        assert stream.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")


async def test_an_untrusted_certificate_is_a_connect_error(tls_server: tuple[str, Path]) -> None:
    url, _cert = tls_server
    async with httpcore.AsyncConnectionPool(
        ssl_context=ssl.create_default_context(), network_backend=AsyncioBackend()
    ) as pool:
        with pytest.raises(httpcore.ConnectError):
            await _post(pool, url, b"{}")


async def test_a_closed_port_is_a_connect_error_and_a_silent_server_a_read_timeout() -> None:
    async with httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as pool:
        with pytest.raises(httpcore.ConnectError):
            await _post(pool, f"http://127.0.0.1:{free_port()}/hook", b"{}")
        silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog), never answers
        try:
            port = silent.getsockname()[1]
            with pytest.raises(httpcore.ReadTimeout):
                await pool.request(
                    "POST",
                    f"http://127.0.0.1:{port}/hook",
                    headers=[(b"Content-Length", b"2")],
                    content=b"{}",
                    extensions={"timeout": {"read": 0.5}},
                )
        finally:
            silent.close()
