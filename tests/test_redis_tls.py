"""Heroku Redis speaks TLS with a self-signed certificate: `rediss://` works natively."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.graphql import GraphQLClient, create_room, post_message, sign_up
from tests.support.processes import PrivateRedis, Server, free_port
from tests.support.wsclient import MESSAGE_CREATED, PROTOCOLS, GraphQLWebSocket


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    directory: Path = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=redis.test"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    arguments = ("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-auth-clients", "no")
    redis = PrivateRedis(arguments=arguments, tls_port=free_port()).start()
    yield redis
    redis.stop()


def app_on(database_url: str, redis: PrivateRedis, **extra: str) -> Server:
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis.url, "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:8]}:"}
    return Server(env={**env, **extra}, workers=2).start()


async def test_rediss_with_a_self_signed_certificate_just_works(database_url: str, tls_redis: PrivateRedis) -> None:
    assert tls_redis.url.startswith("rediss://") and "ssl_cert_reqs" not in tls_redis.url
    app = app_on(database_url, tls_redis)
    try:
        assert httpx.get(f"{app.url}/readyz").json() == {"status": "ready", "database": "ok", "redis": "ok"}
        api = GraphQLClient(app.url)
        ann = sign_up(api, "Ann")
        room = create_room(api, ann)
        subscribers = [await GraphQLWebSocket.open(app.ws_url, protocol, ann.token) for protocol in PROTOCOLS * 2]
        for subscriber in subscribers:
            await subscriber.subscribe("s", MESSAGE_CREATED, {"room": room})
            await subscriber.barrier()
        assert f"room:{room}" in tls_redis.cli("PUBSUB", "CHANNELS", "*")  # subscribed through TLS
        post_message(api, ann, room, "over TLS")
        for subscriber in subscribers:
            assert [m["body"] for m in await subscriber.messages("s", 1)] == ["over TLS"]
            await subscriber.close()
    finally:
        app.stop()


def test_verification_can_be_required(database_url: str, tls_redis: PrivateRedis) -> None:
    app = app_on(database_url, tls_redis, REDIS_SSL_CERT_REQS="required")
    try:
        response = httpx.get(f"{app.url}/readyz", timeout=15)
        assert response.status_code == 503
        assert response.json()["redis"].startswith("unavailable")
        assert response.json()["database"] == "ok"
    finally:
        app.stop()
