"""Host-signed JWTs (issue 27) against the real server: HS256 with AUTH_JWT_SECRET, RS256 and
ES256 against a JWKS URL the test serves on loopback (its keys rotated mid-test), the user made
on first sight and updated from `name` and `picture`, every refusal, the JWKS URL fetched a
bounded number of times whatever kids come, and a live connection ending on every transport
when its token expires (a WebSocket with the close code a client reconnects on); on Postgres +
Redis with two workers, and on the embedded default with only a JWKS URL."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from identity.auth import JwksKeys
from tests.support.graphql import GraphQLClient
from tests.support.host_tokens import AUDIENCE, ISSUER, SECRET, HostServer, SigningKey, claims, handmade, hs256
from tests.support.httpstream import open_multipart, open_sse, part_errors
from tests.support.processes import SHARED_REDIS_URL, Server, migrate
from tests.support.waiting import until_sync
from tests.support.wsclient import MESSAGE_CREATED, PROTOCOLS, GraphQLWebSocket
from tests.test_apollo_clients import run_node_tests

ME = "{ me { id name avatar(size: 64) } }"
CREATE_ROOM = 'mutation { createRoom(name: "host room") { id } }'
POST = "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id } }"
LOG_OUT_EVERYWHERE = "mutation { logOut(everywhere: true) }"
SIGN_UP = "mutation($n: String!, $e: String!, $p: String!) { signUp(name: $n, email: $e, password: $p) { token } }"
LOG_IN = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }"
CHANGE_PASSWORD = "mutation($c: String!, $n: String!) { changePassword(current: $c, new: $n) { token } }"
COOKIE = "chat_sse_token"


@pytest.fixture(scope="module")
def host() -> Iterator[HostServer]:
    host = HostServer()
    host.keys = [SigningKey.rsa(), SigningKey.ec()]
    host.start()
    yield host
    host.stop()


def host_env(host: HostServer) -> dict[str, str]:
    return {
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_JWKS_URL": host.jwks_url,
        "AUTH_JWT_ISSUER": ISSUER,
        "AUTH_JWT_AUDIENCE": AUDIENCE,
        "AUTH_JWT_LEEWAY_SECONDS": "1",
        "AUTH_JWKS_REFETCH_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def served(database_url: str, host: HostServer) -> Iterator[Server]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        **host_env(host),
    }
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


@pytest.fixture
def api(served: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(served.url)
    yield client
    client.close()


def me(api: GraphQLClient, token: str) -> dict | None:
    return api.data(ME, token=token)["me"]


def codes(errors: list[dict]) -> list[str]:
    return [error["extensions"]["code"] for error in errors]


def sub() -> str:
    return f"host-user-{uuid.uuid4().hex[:8]}"


def test_each_algorithm_signs_in_the_same_host_user(api: GraphQLClient, host: HostServer) -> None:
    rsa_key, ec_key = host.keys
    who = sub()
    first = me(api, hs256(claims(who, name="Ann Host")))
    assert first is not None and first["name"] == "Ann Host"
    # The same `sub` by every algorithm is the same user: made once, on first sight.
    assert me(api, rsa_key.sign(claims(who, name="Ann Host"))) == first
    assert me(api, ec_key.sign(claims(who, name="Ann Host"))) == first
    # A token with no name keeps the stored one; a new name or picture updates the user.
    assert me(api, hs256(claims(who))) == first
    picture = "https://host.example/ann.png"
    updated = me(api, hs256(claims(who, name="Ann Renamed", picture=picture)))
    assert updated == {"id": first["id"], "name": "Ann Renamed", "avatar": picture}
    # A host user acts like any other: creates a room, posts in it.
    token = rsa_key.sign(claims(who))
    room = api.data(CREATE_ROOM, token=token)["createRoom"]["id"]
    assert api.data(POST, {"room": room, "body": "hi"}, token=token)["createMessage"]["id"]
    # Their account has no password: changePassword is refused (signUp works as ever here).
    password = "correct horse battery"
    assert api.error_codes(CHANGE_PASSWORD, {"c": password, "n": password}, token=token) == ["FORBIDDEN"]
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    assert api.data(SIGN_UP, {"n": "Pat", "e": email, "p": password})["signUp"]["token"]
    # A user first seen without a name is "Member", never their `sub` (the host's id for them).
    assert me(api, hs256(claims(sub())))["name"] == "Member"  # type: ignore[index]


def refusals(host: HostServer) -> dict[str, str]:
    """Every kind of token refused, by what is wrong with it."""
    rsa_key, ec_key = host.keys
    who = sub()
    stranger = SigningKey.rsa()
    stranger.kid = rsa_key.kid  # a key nobody published, claiming a published kid
    without_exp = claims(who)
    del without_exp["exp"]
    without_sub = claims(who)
    del without_sub["sub"]
    return {
        "bad signature (HS256)": hs256(claims(who), secret="not-the-secret-" + "y" * 32),
        "bad signature (RS256)": stranger.sign(claims(who)),
        "tampered payload": _tampered(ec_key.sign(claims(who))),
        "alg none": handmade({"alg": "none", "typ": "JWT"}, claims(who), None),
        "HS256 keyed with the RS256 public key": handmade(
            {"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}, claims(who), rsa_key.public_pem()
        ),
        "RS256 key used as ES256": handmade({"alg": "ES256", "kid": rsa_key.kid}, claims(who), b"x"),
        "unknown kid": SigningKey.rsa().sign(claims(who)),
        "wrong issuer": hs256({**claims(who), "iss": "https://evil.example"}),
        "no issuer": hs256({k: v for k, v in claims(who).items() if k != "iss"}),
        "wrong audience": hs256({**claims(who), "aud": "someone-else"}),
        "expired": hs256(claims(who, ttl=-60)),
        "no exp": hs256(without_exp),
        "no sub": hs256(without_sub),
        "not a JWT": "a.b.c",
    }


def _tampered(token: str) -> str:
    header, _payload, signature = token.split(".")
    other = hs256(claims("someone-else")).split(".")[1]
    return ".".join((header, other, signature))


async def test_every_refusal_is_unauthenticated_everywhere(
    api: GraphQLClient, served: Server, host: HostServer
) -> None:
    for what, token in refusals(host).items():
        assert me(api, token) is None, what
        assert api.error_codes(CREATE_ROOM, token=token) == ["UNAUTHENTICATED"], what
        ws = await GraphQLWebSocket.open(served.ws_url, PROTOCOLS[0])
        await ws.send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        assert await ws.close_code() == 4403, what
        response = httpx.post(f"{served.url}/graphql/sse-session", headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 401, what
    async with await open_sse(served.url, MESSAGE_CREATED, {"room": "1"}, token=refusals(host)["expired"]) as stream:
        assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
    async with await open_multipart(served.url, MESSAGE_CREATED, {"room": "1"}, token=hs256({})) as multipart:
        [part] = await multipart.payloads(1)
        assert codes(part_errors(part)) == ["UNAUTHENTICATED"]


def test_keys_rotate_and_unknown_kids_fetch_a_bounded_number_of_times(api: GraphQLClient, host: HostServer) -> None:
    who = sub()
    old_rsa, ec_key = host.keys
    assert me(api, old_rsa.sign(claims(who))) is not None
    # Made-up kids: each worker fetches at most once per AUTH_JWKS_REFETCH_SECONDS (1 s here).
    started, before = time.monotonic(), host.fetches
    for _ in range(30):
        assert me(api, SigningKey.rsa().sign(claims(who))) is None
    seconds = time.monotonic() - started
    assert host.fetches - before <= 2 * (int(seconds) + 1), (host.fetches - before, seconds)
    # The host rotates: a new RSA key replaces the old one. A token under the new kid is taken
    # as soon as a worker may fetch again; then the old kid, gone from the JWKS, is refused.
    new_rsa = SigningKey.rsa()
    host.keys = [new_rsa, ec_key]
    rotated = new_rsa.sign(claims(who))
    until_sync(lambda: me(api, rotated) is not None, timeout=10, what="the rotated key accepted")
    stale = old_rsa.sign(claims(who))
    until_sync(lambda: me(api, stale) is None, timeout=10, what="the retired key refused")
    host.keys = [old_rsa, ec_key]  # as the other tests expect


async def test_an_expiring_token_ends_every_live_transport(api: GraphQLClient, served: Server) -> None:
    who = sub()
    lasting = hs256(claims(who, ttl=600, name="Eve"))
    room = api.data(CREATE_ROOM, token=lasting)["createRoom"]["id"]
    anchor = api.data(POST, {"room": room, "body": "anchor"}, token=lasting)["createMessage"]["id"]
    short = hs256(claims(who, ttl=6))
    variables = {"room": room, "after": anchor}
    session = httpx.post(f"{served.url}/graphql/sse-session", headers={"authorization": f"Bearer {short}"})
    assert session.status_code == 204, session.text
    cookie = session.cookies[COOKIE]
    sockets = {}
    for protocol in PROTOCOLS:
        sockets[protocol] = ws = await GraphQLWebSocket.open(served.ws_url, protocol, short)
        await ws.subscribe("1", MESSAGE_CREATED, variables)
        await ws.barrier()
    by_header = await open_sse(served.url, MESSAGE_CREATED, variables, token=short)
    by_cookie = await open_sse(
        served.url, MESSAGE_CREATED, variables, method="GET", headers={"cookie": f"{COOKIE}={cookie}"}
    )
    multipart = await open_multipart(served.url, MESSAGE_CREATED, variables, token=short)
    try:
        api.data(POST, {"room": room, "body": "while valid"}, token=lasting)
        for ws in sockets.values():
            assert (await ws.result("1"))["data"]["messageCreated"]["body"] == "while valid"
        for stream in (by_header, by_cookie):
            assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["while valid"]
        [part] = await multipart.payloads(1)
        assert part["payload"]["data"]["messageCreated"]["body"] == "while valid"
        # Expiry: each WebSocket closes with 4403 (graphql-ws's client retries it, asking its
        # connectionParams for a fresh token) and no error first; the streams end UNAUTHENTICATED.
        for ws in sockets.values():
            assert await ws.close_code(timeout=15) == 4403
        for stream in (by_header, by_cookie):
            assert codes(await stream.refused(timeout=15)) == ["UNAUTHENTICATED"]
        [part] = await multipart.payloads(1, timeout=15)
        assert codes(part_errors(part)) == ["UNAUTHENTICATED"]
        assert me(api, short) is None
    finally:
        for closing in (by_header, by_cookie, multipart):
            await closing.aclose()
        for ws in sockets.values():
            await ws.close()


async def test_log_out_everywhere_refuses_the_jwts_issued_before(api: GraphQLClient, served: Server) -> None:
    who = sub()
    token = hs256({**claims(who), "iat": int(time.time()) - 5})
    viewer = me(api, token)
    assert viewer is not None
    room = api.data(CREATE_ROOM, token=token)["createRoom"]["id"]
    ws = await GraphQLWebSocket.open(served.ws_url, PROTOCOLS[0], token)
    await ws.subscribe("1", MESSAGE_CREATED, {"room": room})
    await ws.barrier()
    assert api.data(LOG_OUT_EVERYWHERE, token=token) == {"logOut": True}
    assert codes((await ws.result("1"))["errors"]) == ["UNAUTHENTICATED"]
    await ws.close()
    assert me(api, token) is None
    assert me(api, hs256({k: v for k, v in claims(who).items() if k != "iat"})) is None  # no iat: can't tell
    # The host's next token (issued after) signs the same user in again.
    fresh = hs256({**claims(who), "iat": int(time.time()) + 1})
    assert me(api, fresh) == viewer


async def test_only_a_jwks_url_and_host_accounts_on_the_embedded_default(tmp_path: Path, host: HostServer) -> None:
    """SQLite, one worker, no Redis, and no shared secret: HS256 is refused outright (even keyed
    with a published public key), RS256 and ES256 sign in. ACCOUNTS=host: signUp, logIn and
    changePassword are FORBIDDEN."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
        "REDIS_URL": "",
        "AUTH_JWKS_URL": host.jwks_url,
        "AUTH_JWKS_REFETCH_SECONDS": "1",
        "AUTH_JWT_LEEWAY_SECONDS": "1",
        "ACCOUNTS": "host",
    }
    migrate(env)
    server = Server(env=env, workers=1).start()
    api = GraphQLClient(server.url)
    try:
        rsa_key, ec_key = host.keys
        who = sub()
        user = me(api, rsa_key.sign(claims(who, name="Sam")))
        assert user is not None and user["name"] == "Sam"
        assert me(api, ec_key.sign(claims(who))) == user
        assert me(api, hs256(claims(who))) is None
        confused = handmade({"alg": "HS256", "kid": rsa_key.kid}, claims(who), rsa_key.public_pem())
        assert me(api, confused) is None
        password = "correct horse battery"
        variables = {"n": "Mallory", "e": "m@example.com", "p": password}
        assert api.error_codes(SIGN_UP, variables) == ["FORBIDDEN"]
        assert api.error_codes(LOG_IN, {"e": "m@example.com", "p": password}) == ["FORBIDDEN"]
        token = rsa_key.sign(claims(who))
        assert api.error_codes(CHANGE_PASSWORD, {"c": password, "n": password}, token=token) == ["FORBIDDEN"]
        # Expiry here too: the WebSocket of a 4 s ES256 token closes with 4403.
        room = api.data(CREATE_ROOM, token=token)["createRoom"]["id"]
        ws = await GraphQLWebSocket.open(server.ws_url, PROTOCOLS[0], ec_key.sign(claims(who, ttl=4)))
        try:
            await ws.subscribe("1", MESSAGE_CREATED, {"room": room})
            await ws.barrier()
            assert await ws.close_code(timeout=15) == 4403
        finally:
            await ws.close()
    finally:
        api.close()
        server.stop()


def test_apollo_reconnects_with_a_fresh_host_token(served: Server, host: HostServer) -> None:
    """Apollo's GraphQLWsLink whose connectionParams function asks the host's token endpoint for
    a 5 s token: closed with 4403 at expiry, it reconnects with a fresh one and its subscription
    keeps receiving (tests/js/host-token.test.mjs)."""
    before = host.tokens
    output = run_node_tests(served, "host-token.test.mjs", {"TOKEN_URL": host.url, "TOKEN_TTL": "5"})
    assert re.search(r"\bpass 1\b", output) and re.search(r"\bfail 0\b", output), output
    assert host.tokens - before >= 3  # the HTTP calls' token, the first connect's, a reconnect's


async def test_unknown_kids_at_once_share_one_fetch(host: HostServer) -> None:
    """In one process: 50 tokens naming kids nobody published, all at once, cost the JWKS URL
    one fetch (single flight), and none more within AUTH_JWKS_REFETCH_SECONDS; a known kid
    needs none."""
    keys = JwksKeys(host.jwks_url, refetch_seconds=60, cache_seconds=3600)
    before = host.fetches
    found = await asyncio.gather(*(keys.key(uuid.uuid4().hex, "RS256") for _ in range(50)))
    assert found == [None] * 50
    assert host.fetches - before == 1
    assert await keys.key(uuid.uuid4().hex, "RS256") is None
    rsa_key, ec_key = host.keys
    assert await keys.key(rsa_key.kid, "RS256") is not None
    assert await keys.key(ec_key.kid, "ES256") is not None
    assert await keys.key(rsa_key.kid, "ES256") is None  # a key verifies only its own algorithm
    assert host.fetches - before == 1


async def test_a_jwks_url_that_trickles_is_given_up_on_in_its_timeout_in_all() -> None:
    """A JWKS URL that sends its body a byte at a time (each read well within httpx's per-read
    timeout) is given up on after JwksKeys' timeout in all: the tokens waiting on that fetch are
    refused then, not when the trickle ends."""
    trickling: list[asyncio.Task] = []

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
        try:
            for _ in range(100):  # 100 bytes over 20 s: never done in time
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        trickling.append(asyncio.current_task())  # type: ignore[arg-type]
        await trickle(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    keys = JwksKeys(f"http://127.0.0.1:{port}/jwks", refetch_seconds=60, cache_seconds=3600, timeout=1.0)
    try:
        started = time.monotonic()
        found = await asyncio.gather(*(keys.key(uuid.uuid4().hex, "RS256") for _ in range(5)))
        elapsed = time.monotonic() - started
    finally:
        for task in trickling:
            task.cancel()
        server.close()
        await server.wait_closed()
    assert found == [None] * 5
    assert 0.9 <= elapsed < 3.0, elapsed
    assert keys.fetches == 0 and len(trickling) == 1


def test_a_jwt_without_a_name_never_shows_its_sub_to_room_mates(api: GraphQLClient) -> None:
    """The host's id for a user is theirs and the service's to see (`externalId`); a JWT with no
    usable `name` claim used to name its user after its `sub`, which every room-mate reads."""
    secret_sub = f"alice@corp.example/{uuid.uuid4().hex[:8]}"
    nameless = hs256(claims(secret_sub))
    bidi = hs256(claims(f"{secret_sub}-2", name="Eve\u202egnp.exe"))
    mate = hs256(claims(sub(), name="Room mate"))
    room = api.data('mutation { createRoom(name: "open", kind: PUBLIC) { id } }', token=mate)["createRoom"]["id"]
    for token in (nameless, bidi):
        api.data("mutation($r: ID!) { joinRoom(room: $r) { id } }", {"r": room}, token=token)
    members = api.data("query($r: ID!) { room(id: $r) { members { name externalId } } }", {"r": room}, token=mate)[
        "room"
    ]["members"]
    assert sorted(member["name"] for member in members) == ["Member", "Member", "Room mate"]
    assert all(secret_sub not in str(member) for member in members), members
    assert api.data("{ me { name externalId } }", token=nameless)["me"] == {"name": "Member", "externalId": secret_sub}
