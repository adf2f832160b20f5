"""The host's side of host-signed JWTs, for tests: signing keys (HS256, RS256, ES256), tokens
minted with them, and a loopback HTTP server (a thread of this process) that plays the host: its
JWKS URL (keys replaceable mid-test, fetches counted) and a token endpoint that mints a fresh
HS256 token per call (what a client's token provider calls)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

SECRET = "test-shared-secret-" + "x" * 32
ISSUER = "https://host.example"
AUDIENCE = "chat"


@dataclass
class SigningKey:
    """An RS256 or ES256 key pair and its kid."""

    algorithm: str
    private: Any
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @classmethod
    def rsa(cls) -> SigningKey:
        return cls("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls) -> SigningKey:
        return cls("ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        to_jwk = RSAAlgorithm.to_jwk if self.algorithm == "RS256" else ECAlgorithm.to_jwk
        return {**to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": kid or self.kid})


def claims(sub: str, ttl: float = 300.0, **extra: Any) -> dict[str, Any]:
    """What a host puts in a user's token: who, for how long, issued now, by and for whom."""
    now = time.time()
    return {"sub": sub, "iat": int(now), "exp": int(now + ttl), "iss": ISSUER, "aud": AUDIENCE, **extra}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token PyJWT would refuse to make: `alg: none` (key None), or HS256 keyed with anything
    (a public key's PEM: the algorithm-confusion attack)."""
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


class HostServer:
    """GET /jwks.json (the keys in `keys`, counted in `fetches`) and GET /token?sub=&ttl=&name=
    (a fresh HS256 token; counted in `tokens`)."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.fetches = 0
        self.tokens = 0
        self._lock = threading.Lock()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/jwks.json":
                    with host._lock:
                        host.fetches += 1
                        body = json.dumps({"keys": [key.jwk() for key in host.keys]}).encode()
                elif url.path == "/token":
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    extra = {"name": query["name"]} if "name" in query else {}
                    with host._lock:
                        host.tokens += 1
                    token = hs256(claims(query["sub"], float(query.get("ttl", "300")), **extra))
                    body = json.dumps({"token": token}).encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks.json"

    def start(self) -> HostServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
