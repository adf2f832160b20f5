"""Issue 24, addresses and accounts, against a real gunicorn on Postgres + Redis, each attack sent
as raw HTTP with the headers an attacker writes. The test plays Heroku's router too: it reaches
the server from 127.0.0.1 (a trusted peer by default) and appends the "real" address as the
rightmost X-Forwarded-For entry, as the router does.

- The client address is the rightmost X-Forwarded-For entry when it is an IP address, else the
  peer's; the access log records that same address; an untrusted peer's headers change nothing.
- Sign-in is limited per address (the real one) and per account whatever the address.
- Password hashing runs in a bounded pool: a burst waits, past the queue it is refused (503),
  and a worker's peak memory stays within one hash more than at start-up.
- /healthz says only that the process is up unless HEALTHZ_DETAILS.
- Every response carries nosniff, HSTS behind HTTPS, and the web client's page its CSP.
- Health checks and refused requests do not count towards MAX_REQUESTS; ordinary ones do.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.graphql import GraphQLClient, create_room, sign_up
from tests.support.processes import ROOT, SHARED_REDIS_URL, Server

LOG_IN = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }"
ATTACKER = "192.0.2.66"  # what the router appends for the attacker's connection
VICTIM = "198.51.100.7"


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"abuse-{uuid.uuid4().hex[:8]}:",
        **extra,
    }


@pytest.fixture(scope="module")
def limited(database_url: str) -> Iterator[Server]:
    """The shipped sign-in counts and /healthz, on two workers. The windows are an hour long: the
    limits count in fixed windows, and a test's eleven sign-ins that straddle the end of a 60 s
    window would see the count start again (a loaded machine took seconds over them)."""
    env = env_for(database_url, RATE_LIMIT_AUTH="10/3600", RATE_LIMIT_LOGIN_ACCOUNT="10/3600", HEALTHZ_DETAILS="0")
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


class Raw:
    """One HTTP/1.1 exchange over its own socket, bytes as written: status, headers, body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return values[-1] if values else None

    def json(self) -> dict:
        return json.loads(self.body)


def raw(
    server: Server,
    method: str,
    path: str,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    head_only: bool = False,
) -> Raw:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received or not head_only:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in header_lines)]
    if ("transfer-encoding", "chunked") in parsed and not head_only:
        rest = _unchunk(rest)
    return Raw(int(status_line.split()[1]), parsed, rest)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def graphql(server: Server, query: str, variables: dict, headers: list[tuple[str, str]] = ()) -> Raw:  # type: ignore[assignment]
    body = json.dumps({"query": query, "variables": variables}).encode()
    return raw(server, "POST", "/graphql", [("Content-Type", "application/json"), *headers], body)


def codes(answer: Raw) -> list[str]:
    return [error["extensions"]["code"] for error in answer.json().get("errors", [])]


def log_in(server: Server, email: str, password: str, forwarded_for: str | None) -> Raw:
    headers = [("X-Forwarded-For", forwarded_for)] if forwarded_for is not None else []
    return graphql(server, LOG_IN, {"e": email, "p": password}, headers)


def wait_for_log(server: Server, pattern: str, timeout: float = 10.0) -> str:
    """The log line matching `pattern` (access lines are written as responses start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log().splitlines():
            if re.search(pattern, line):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line matches {pattern!r}:\n{server.log()[-3000:]}")


def test_thirty_guesses_with_made_up_addresses_are_refused_after_ten(limited: Server) -> None:
    """The attacker writes a new address each time; the router appends its real one."""
    api = GraphQLClient(limited.url)
    victim = sign_up(api, "Victim", headers={"X-Forwarded-For": VICTIM})
    api.close()
    answers = [log_in(limited, victim.email, f"guess {i}", f"10.1.{i}.{i}, {ATTACKER}") for i in range(30)]
    assert [codes(a) for a in answers[:10]] == [["UNAUTHENTICATED"]] * 10
    assert [codes(a) for a in answers[10:]] == [["RATE_LIMITED"]] * 20
    assert all(a.json()["errors"][0]["extensions"]["retryAfter"] >= 1 for a in answers[10:])


def test_thirty_guesses_from_thirty_real_addresses_are_refused_after_ten(limited: Server) -> None:
    """A botnet: every guess really comes from another address. The account's limit holds; the
    right password is refused too while it does; another account is untouched."""
    api = GraphQLClient(limited.url)
    victim = sign_up(api, "Victim", headers={"X-Forwarded-For": "198.51.100.20"})
    other = sign_up(api, "Other", headers={"X-Forwarded-For": "198.51.100.21"})
    api.close()
    # The account's key is its normalized email: another spelling of it is the same account.
    spellings = [victim.email, victim.email.upper(), f"  {victim.email}  "]
    answers = [log_in(limited, spellings[i % 3], f"guess {i}", f"203.0.113.{i + 1}") for i in range(30)]
    assert [codes(a) for a in answers[:10]] == [["UNAUTHENTICATED"]] * 10
    assert [codes(a) for a in answers[10:]] == [["RATE_LIMITED"]] * 20
    assert codes(log_in(limited, victim.email, victim.password, "203.0.113.200")) == ["RATE_LIMITED"]
    assert log_in(limited, other.email, other.password, "203.0.113.201").json()["data"]["logIn"]["token"]


def test_naming_a_victims_address_leftmost_does_not_lock_the_victim_out(limited: Server) -> None:
    api = GraphQLClient(limited.url)
    victim = sign_up(api, "Victim", headers={"X-Forwarded-For": "198.51.100.30"})
    strangers = [sign_up(api, f"Stranger{i}", headers={"X-Forwarded-For": f"198.51.100.{40 + i}"}) for i in range(11)]
    api.close()
    # Eleven failed sign-ins at eleven accounts, each naming the victim's address on the left.
    attacker = "192.0.2.67"
    answers = [log_in(limited, s.email, "wrong password", f"198.51.100.30, {attacker}") for s in strangers]
    assert [codes(a) for a in answers] == [["UNAUTHENTICATED"]] * 10 + [["RATE_LIMITED"]]  # the attacker's limit
    # The victim, behind the router, is known by their own address: not limited.
    answer = log_in(limited, victim.email, victim.password, "198.51.100.30")
    assert answer.status == 200 and answer.json()["data"]["logIn"]["token"], answer.body


@pytest.mark.parametrize(
    ("forwarded_for", "logged"),
    [
        (None, "127.0.0.1"),  # absent: the peer
        ("", "127.0.0.1"),  # empty
        ("not-an-address", "127.0.0.1"),
        ("203.0.113.9, garbage", "127.0.0.1"),  # the rightmost entry decides, not a valid one left of it
        ("203.0.113.9:4711", "127.0.0.1"),  # port-suffixed: not what the router writes
        ("[2001:db8::9]:4711", "127.0.0.1"),  # bracketed
        ("203.0.113.9,", "127.0.0.1"),  # an empty rightmost entry
        ("10.0.0.1, 203.0.113.9", "203.0.113.9"),
        ("10.0.0.1,2001:DB8::9", "2001:db8::9"),  # normalized
        ("::ffff:203.0.113.10", "203.0.113.10"),  # an IPv4-mapped IPv6 address is the IPv4 one
    ],
)
def test_the_access_log_records_the_address_the_limits_use(
    limited: Server, forwarded_for: str | None, logged: str
) -> None:
    probe = f"/probe-{uuid.uuid4().hex[:12]}"
    headers = [("X-Forwarded-For", forwarded_for)] if forwarded_for is not None else []
    assert raw(limited, "GET", probe, headers).status == 404
    line = wait_for_log(limited, re.escape(f'"GET {probe} HTTP/1.1" 404'))
    assert line.startswith(f"{logged}:") and re.match(r"[^ ]+:\d+ - ", line), line


def test_several_forwarded_for_lines_are_one_list_and_the_last_entry_counts(limited: Server) -> None:
    probe = f"/probe-{uuid.uuid4().hex[:12]}"
    headers = [("X-Forwarded-For", "203.0.113.50"), ("X-Forwarded-For", "10.2.2.2, 203.0.113.51")]
    raw(limited, "GET", probe, headers)
    line = wait_for_log(limited, re.escape(f'"GET {probe} HTTP/1.1"'))
    assert line.startswith("203.0.113.51:"), line


def test_a_websocket_is_known_by_the_same_address(limited: Server) -> None:
    """The access log's WebSocket line records the rightmost entry too."""
    path = "/graphql"
    key = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "graphql-transport-ws"),
        ("X-Forwarded-For", "10.9.9.9, 203.0.113.77"),
    ]
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{limited.port}", *(f"{k}: {v}" for k, v in headers)]
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        wait_for_log(limited, r' 203\.0\.113\.77:\d+ - "WebSocket /graphql" \[accepted\]')


def test_an_untrusted_peers_forwarding_headers_change_nothing(database_url: str) -> None:
    """Without a router (FORWARDED_ALLOW_IPS not naming the peer), a client that writes the
    headers is still known by its own address, gets no HSTS, and cannot spread its guesses."""
    env = env_for(database_url, FORWARDED_ALLOW_IPS="10.0.0.0/8", RATE_LIMIT_AUTH="3/3600")
    server = Server(env=env, workers=1).start()
    try:
        probe = f"/probe-{uuid.uuid4().hex[:12]}"
        answer = raw(server, "GET", probe, [("X-Forwarded-For", "203.0.113.5"), ("X-Forwarded-Proto", "https")])
        assert answer.header("strict-transport-security") is None
        line = wait_for_log(server, re.escape(f'"GET {probe} HTTP/1.1"'))
        assert line.startswith("127.0.0.1:") and "203.0.113.5" not in line, line
        guesses = [log_in(server, "nobody@example.com", "x" * 8, f"203.0.113.{i}") for i in range(5)]
        assert [codes(a) for a in guesses] == [["UNAUTHENTICATED"]] * 3 + [["RATE_LIMITED"]] * 2
    finally:
        server.stop()


def test_healthz_says_only_that_the_process_is_up(limited: Server) -> None:
    answer = raw(limited, "GET", "/healthz")
    assert answer.status == 200 and answer.json() == {"status": "ok"}


def test_every_response_carries_nosniff_and_hsts_behind_https(limited: Server, database_url: str) -> None:
    api = GraphQLClient(limited.url)
    ann = sign_up(api, "Ann", headers={"X-Forwarded-For": "198.51.100.90"})
    room = create_room(api, ann)
    api.close()
    https = [("X-Forwarded-Proto", "https")]
    typing = "subscription($r: ID!) { typing(room: $r) { room { id } } }"
    subscription = json.dumps({"query": typing, "variables": {"r": room}}).encode()
    auth = [("Authorization", f"Bearer {ann.token}"), ("Content-Type", "application/json")]
    answers = {
        "json": graphql(limited, "{ __typename }", {}, https),
        "refused": raw(limited, "POST", "/graphql", [*https, ("Content-Type", "text/plain")], b"x"),
        "too large": raw(limited, "POST", "/graphql", [*https, ("Content-Type", "application/json")], b" " * 1_100_000),
        "healthz": raw(limited, "GET", "/healthz", https),
        "readyz": raw(limited, "GET", "/readyz", https),
        "page": raw(limited, "GET", "/", https),
        "sse": raw(
            limited,
            "POST",
            "/graphql",
            [*https, *auth, ("Accept", "text/event-stream")],
            subscription,
            head_only=True,
        ),
        "multipart": raw(
            limited,
            "POST",
            "/graphql",
            [*https, *auth, ("Accept", 'multipart/mixed;boundary="graphql";subscriptionSpec=1.0, application/json')],
            subscription,
            head_only=True,
        ),
    }
    statuses = {name: answer.status for name, answer in answers.items()}
    assert statuses == {
        "json": 200, "refused": 415, "too large": 413, "healthz": 200, "readyz": 200, "page": 200, "sse": 200,
        "multipart": 200,
    }  # fmt: skip
    assert answers["sse"].header("content-type").startswith("text/event-stream")  # type: ignore[union-attr]
    assert answers["multipart"].header("content-type").startswith("multipart/mixed")  # type: ignore[union-attr]
    for name, answer in answers.items():
        assert answer.header("x-content-type-options") == "nosniff", name
        assert answer.header("strict-transport-security") == "max-age=31536000", name
    # Over plain HTTP (no X-Forwarded-Proto, or the router saying http as the last word): no HSTS.
    for headers in ([], [("X-Forwarded-Proto", "https, http")]):
        plain = raw(limited, "GET", "/healthz", headers)
        assert plain.header("x-content-type-options") == "nosniff"
        assert plain.header("strict-transport-security") is None
    # Only pages get a policy: the web client its own, the explorer only against framing.
    assert answers["json"].header("content-security-policy") is None
    policy = answers["page"].header("content-security-policy") or ""
    assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert f"ws://127.0.0.1:{limited.port} wss://127.0.0.1:{limited.port}" in policy
    assert "img-src 'self' https: http:;" in policy
    explorer = raw(limited, "GET", "/graphql", [("Accept", "text/html")])
    assert explorer.status == 200 and explorer.header("content-security-policy") == "frame-ancestors 'none'"
    # A Host that could smuggle a directive is not named in the policy.
    smuggled = raw(limited, "GET", "/", [("Host", "x; script-src *")])
    assert "script-src *" not in (smuggled.header("content-security-policy") or "")


def worker_pids(server: Server) -> set[int]:
    import subprocess

    assert server.process is not None
    out = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_burst_of_sign_ins_waits_for_the_bounded_hashing_pool(database_url: str) -> None:
    """One hash at a time and two waiting: of 12 concurrent logIns, those past the queue are
    refused with 503 at once, the rest answered; the worker's peak memory grows by less than one
    argon2id hash (64 MiB) over what start-up left (it hashes once at import)."""
    env = env_for(database_url, PASSWORD_HASH_THREADS="1", PASSWORD_HASH_QUEUE="2")
    server = Server(env=env, workers=1).start()
    try:
        api = GraphQLClient(server.url)
        account = sign_up(api, "Burst")
        api.close()
        (pid,) = worker_pids(server)
        before = peak_rss_kib(pid)

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                body = {"query": LOG_IN, "variables": {"e": account.email, "p": account.password}}
                return await asyncio.gather(*(http.post("/graphql", json=body) for _ in range(12)))

        answers = asyncio.run(burst())
        after = peak_rss_kib(pid)
        signed_in = [a for a in answers if a.status_code == 200 and a.json()["data"]["logIn"]["token"]]
        busy = [a for a in answers if a.status_code == 503]
        assert len(signed_in) + len(busy) == 12
        assert len(signed_in) >= 3 and busy  # three at once in the pool (one running, two waiting)
        assert all(a.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE" for a in busy)
        assert all(a.headers["retry-after"] for a in busy)
        print(f"peak RSS before the burst {before} KiB, after {after} KiB")
        assert after - before < 64 * 1024
        assert raw(server, "GET", "/healthz").status == 200
    finally:
        server.stop()


def test_health_checks_and_refusals_do_not_recycle_a_worker_ordinary_requests_do(database_url: str) -> None:
    env = env_for(
        database_url,
        MAX_REQUESTS="20",
        MAX_REQUESTS_JITTER="0",
        HEALTHZ_DETAILS="1",
        RATE_LIMIT_AUTH="100000/60",
        RATE_LIMIT_LOGIN_ACCOUNT="2/3600",
    )
    server = Server(env=env, workers=1).start()
    try:

        def pid() -> int:
            return httpx.get(f"{server.url}/healthz", timeout=10).json()["worker"]

        first = pid()
        limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
        with httpx.Client(base_url=server.url, limits=limits, timeout=30) as http:
            for _ in range(100):
                assert http.get("/healthz").status_code == 200
                assert http.get("/readyz").status_code == 200
            for _ in range(25):
                too_large = http.post(
                    "/graphql", content=b" " * 1_100_000, headers={"content-type": "application/json"}
                )
                assert too_large.status_code == 413
                # Refused before execution, answered 200 to a client taking only application/json.
                invalid = http.post("/graphql", json={"query": "{ nope }"}, headers={"accept": "application/json"})
                assert invalid.status_code == 200 and "data" not in invalid.json()
                assert (
                    http.get("/graphql?query=%7B", headers={"accept": "application/graphql-response+json"}).status_code
                    == 400
                )
            # Two executed logIns count; the rate-limited ones after them do not.
            login = {"query": LOG_IN, "variables": {"e": "nobody@example.com", "p": "whatever1"}}
            for i in range(30):
                answer = http.post("/graphql", json=login).json()
                assert answer["errors"][0]["extensions"]["code"] == ("UNAUTHENTICATED" if i < 2 else "RATE_LIMITED")
        assert pid() == first
        assert "Maximum request limit" not in server.log()
        # Ordinary requests still recycle it.
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for _ in range(25):
                assert http.post("/graphql", json={"query": "{ __typename }"}).status_code == 200
        wait_for_log(server, r"Maximum request limit of 20 exceeded")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if pid() != first:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert pid() != first
    finally:
        server.stop()


def test_the_web_client_works_under_its_policy_in_chromium(database_url: str) -> None:
    """Debian's Chromium signs up, posts and receives live over WebSocket and SSE, with every
    Content-Security-Policy violation it reports collected: there must be none."""
    from tests.test_browser import run_page_test

    env = env_for(database_url)
    server = Server(env=env, workers=1).start()
    artifacts = ROOT / "test-artifacts" / "browser-csp"
    try:
        run_page_test(
            "csp.browser.test.mjs",
            {"CHAT_SERVER_URL": server.url, "CHAT_ARTIFACTS": str(artifacts)},
            120,
            lambda _request: {},
        )
    finally:
        server.stop()
