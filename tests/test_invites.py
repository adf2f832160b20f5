"""Invitations (issue 26), sent as clients and attackers send them against gunicorn on Postgres
and Redis (and the embedded default): who may create and revoke them, their bounds, PRIVATE
rooms joined by one, the same NOT_FOUND for every code that does not work, bans, the last use
raced for, the MemberJoined live, and the limits that stop a guesser long before a guess could
matter."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.support.graphql import Account, GraphQLClient, add_member, create_room, sign_up
from tests.support.processes import (
    ROOT,
    Server,
    served_with_limits,
)
from tests.support.waiting import at_window_start
from tests.support.wsclient import PROTOCOLS, GraphQLWebSocket

CREATE_INVITE = """
mutation($r: ID!, $uses: Int, $seconds: Int) {
  createInvite(room: $r, maxUses: $uses, expiresInSeconds: $seconds) {
    code expiresAt usesLeft room { id kind myRole }
  }
}"""
REVOKE = "mutation($c: String!) { revokeInvite(code: $c) }"
JOIN = "mutation($c: String!) { joinByInvite(code: $c) { id name kind myRole memberCount } }"
REMOVE = "mutation($r: ID!, $u: ID!, $ban: Boolean) { removeMember(room: $r, user: $u, ban: $ban) }"
UNBAN = "mutation($r: ID!, $u: ID!) { unbanMember(room: $r, user: $u) }"
SET_ROLE = "mutation($r: ID!, $u: ID!, $role: Role!) { setRole(room: $r, user: $u, role: $role) { role } }"
ROOM = "query($r: ID!) { room(id: $r) { id memberCount } }"
EVENTS = """
query($r: ID!, $after: String) {
  room(id: $r) {
    events(after: $after) { edges { node { __typename ... on MemberJoined { user { id } by { id } } } } }
  }
}"""
LIVE_EVENTS = """
subscription($room: ID!, $after: String) {
  roomEvents(room: $room, after: $after) { __typename cursor ... on MemberJoined { user { id } by { id } } }
}"""
LATEST = "query($r: ID!) { room(id: $r) { latestEventCursor } }"
MISSING_ROOM = "987654"
CODE = re.compile(r"[A-Za-z0-9_-]{32}")


@pytest.fixture
def api(server: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(server.url)
    yield client
    client.close()


def refusal(api: GraphQLClient, query: str, variables: dict, account: Account) -> tuple[str, str]:
    """The code and message of the one error a request got, with no data beside it."""
    body = api.post(query, variables, account.token)
    assert body.get("errors") and len(body["errors"]) == 1 and not any((body.get("data") or {}).values()), body
    return body["errors"][0]["extensions"]["code"], body["errors"][0]["message"]


def invite(
    api: GraphQLClient, account: Account, room: str, uses: int | None = None, seconds: int | None = None
) -> dict:
    return api.data(CREATE_INVITE, {"r": room, "uses": uses, "seconds": seconds}, account.token)["createInvite"]


def sql(database_url: str, statement: str) -> None:
    """A change made behind the API's back (time passing, a room of a kind the API cannot make yet)."""
    url = database_url.replace("postgres://", "postgresql://", 1)
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", statement], check=True, capture_output=True)


def members_of(api: GraphQLClient, account: Account, room: str) -> int:
    return api.data(ROOM, {"r": room}, account.token)["room"]["memberCount"]


def joined_events(api: GraphQLClient, account: Account, room: str) -> list[dict]:
    edges = api.data(EVENTS, {"r": room}, account.token)["room"]["events"]["edges"]
    return [edge["node"] for edge in edges if edge["node"]["__typename"] == "MemberJoined"]


def test_owners_and_moderators_create_invites_with_fresh_192_bit_codes(api: GraphQLClient) -> None:
    ann, mod, bob, eve = (sign_up(api, name) for name in ("Ann", "Mod", "Bob", "Eve"))
    room = create_room(api, ann, kind="PRIVATE")
    add_member(api, ann, room, mod.id)
    add_member(api, ann, room, bob.id)
    api.data(SET_ROLE, {"r": room, "u": mod.id, "role": "MODERATOR"}, ann.token)

    made = invite(api, ann, room, uses=5, seconds=3600)
    assert CODE.fullmatch(made["code"]), made
    assert made["usesLeft"] == 5 and made["room"] == {"id": room, "kind": "PRIVATE", "myRole": "OWNER"}
    assert abs(time.time() + 3600 - _epoch(made["expiresAt"])) < 120
    unlimited = invite(api, mod, room)
    assert unlimited["usesLeft"] is None and unlimited["expiresAt"] is None
    assert unlimited["room"]["myRole"] == "MODERATOR"
    # token_urlsafe(24): 32 characters of 64 symbols, 192 bits; never the same twice.
    codes = {invite(api, ann, room)["code"] for _ in range(40)}
    assert len(codes) == 40 and len(set("".join(codes))) > 50

    assert refusal(api, CREATE_INVITE, {"r": room}, bob)[0] == "FORBIDDEN"  # a MEMBER
    # An outsider of a PRIVATE room: the same NOT_FOUND as a room that does not exist.
    assert refusal(api, CREATE_INVITE, {"r": room}, eve) == refusal(api, CREATE_INVITE, {"r": MISSING_ROOM}, eve)
    assert refusal(api, CREATE_INVITE, {"r": room}, eve)[0] == "NOT_FOUND"
    public = create_room(api, ann, kind="PUBLIC")
    assert refusal(api, CREATE_INVITE, {"r": public}, eve)[0] == "FORBIDDEN"  # outside a PUBLIC room
    assert api.post(CREATE_INVITE, {"r": room}).get("errors")[0]["extensions"]["code"] == "UNAUTHENTICATED"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize(
    ("uses", "seconds", "argument"),
    [
        (0, None, "maxUses"),
        (10_001, None, "maxUses"),
        (-1, None, "maxUses"),
        (None, 59, "expiresInSeconds"),
        (None, 30 * 24 * 3600 + 1, "expiresInSeconds"),
        (None, 0, "expiresInSeconds"),
    ],
)
def test_bounds_of_uses_and_lifetime(api: GraphQLClient, uses: int | None, seconds: int | None, argument: str) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann, kind="PRIVATE")
    body = api.post(CREATE_INVITE, {"r": room, "uses": uses, "seconds": seconds}, ann.token)
    error = body["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": argument}, body


def test_the_bounds_themselves_are_accepted(api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann, kind="PRIVATE")
    assert invite(api, ann, room, uses=1, seconds=60)["usesLeft"] == 1
    assert invite(api, ann, room, uses=10_000, seconds=30 * 24 * 3600)["usesLeft"] == 10_000


def test_a_direct_room_takes_no_invites(api: GraphQLClient, database_url: str) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann, kind="PRIVATE")
    sql(database_url, f"UPDATE rooms SET kind = 'DIRECT' WHERE id = {int(room)}")
    assert refusal(api, CREATE_INVITE, {"r": room}, ann)[0] == "FORBIDDEN"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_private_room_is_joined_by_invite_and_its_members_see_member_joined_live(
    server: Server, api: GraphQLClient, protocol: str
) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann, kind="PRIVATE")
    assert refusal(api, ROOM, {"r": room}, bob)[0] == "NOT_FOUND"
    start = api.data(LATEST, {"r": room}, ann.token)["room"]["latestEventCursor"]
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
    await ws.subscribe("1", LIVE_EVENTS, {"room": room, "after": start})  # resumes: no race with the join
    code = invite(api, ann, room, uses=2)["code"]

    joined = api.data(JOIN, {"c": code}, bob.token)["joinByInvite"]
    assert joined == {"id": room, "name": "room", "kind": "PRIVATE", "myRole": "MEMBER", "memberCount": 2}
    live = await ws.events("1", 1)
    assert live[0]["__typename"] == "MemberJoined" and live[0]["user"] == {"id": bob.id} and live[0]["by"] is None
    assert await ws.silent()
    await ws.close()
    assert joined_events(api, ann, room)[-1] == {"__typename": "MemberJoined", "user": {"id": bob.id}, "by": None}
    assert members_of(api, bob, room) == 2  # bob sees it now

    # Joining again is harmless and takes no use: one use is left for cy.
    assert api.data(JOIN, {"c": code}, bob.token)["joinByInvite"]["memberCount"] == 2
    cy = sign_up(api, "Cy")
    assert api.data(JOIN, {"c": code}, cy.token)["joinByInvite"]["memberCount"] == 3
    dan = sign_up(api, "Dan")
    assert refusal(api, JOIN, {"c": code}, dan)[0] == "NOT_FOUND"  # used up
    assert len(joined_events(api, ann, room)) == 3


def test_every_code_that_does_not_work_gets_the_same_not_found(api: GraphQLClient, database_url: str) -> None:
    ann, eve = sign_up(api, "Ann"), sign_up(api, "Eve")
    room = create_room(api, ann, kind="PRIVATE")
    used_up = invite(api, ann, room, uses=1)["code"]
    api.data(JOIN, {"c": used_up}, sign_up(api, "Bob").token)
    expired = invite(api, ann, room, seconds=60)["code"]
    sql(
        database_url,
        f"UPDATE room_invites SET expires_at = now() - interval '1 second' WHERE room_id = {int(room)} "
        "AND expires_at IS NOT NULL",
    )
    revoked = invite(api, ann, room)["code"]
    assert api.data(REVOKE, {"c": revoked}, ann.token)["revokeInvite"] is True
    unknown = secrets.token_urlsafe(24)
    live = invite(api, ann, room)["code"]
    shapes = [
        "",
        "x",
        live[:-1],
        live + "A",
        live.upper() if live.upper() != live else live.lower(),
        "' OR 1=1 --",
        "\u0000" * 32,
        "é" * 32,
        "A" * 10_000,
    ]

    answers = {code: refusal(api, JOIN, {"c": code}, eve) for code in [used_up, expired, revoked, unknown, *shapes]}
    assert set(answers.values()) == {("NOT_FOUND", "Invite not found.")}, answers
    assert refusal(api, ROOM, {"r": room}, eve)[0] == "NOT_FOUND"  # eve got nowhere
    assert members_of(api, ann, room) == 2
    # And revokeInvite tells an outsider no more: a live code of someone else's is "not found" too.
    revokes = {code: refusal(api, REVOKE, {"c": code}, eve) for code in [live, used_up, unknown, revoked, *shapes]}
    assert set(revokes.values()) == {("NOT_FOUND", "Invite not found.")}, revokes
    assert api.data(JOIN, {"c": live}, eve.token)["joinByInvite"]["id"] == room  # untouched by all that


def test_a_banned_user_cannot_join_by_invite_and_takes_no_use(api: GraphQLClient) -> None:
    ann, bob, eve = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Eve")
    room = create_room(api, ann, kind="PRIVATE")
    code = invite(api, ann, room, uses=1)["code"]
    add_member(api, ann, room, bob.id)
    api.data(REMOVE, {"r": room, "u": bob.id, "ban": True}, ann.token)  # removed and banned
    api.data(REMOVE, {"r": room, "u": eve.id, "ban": True}, ann.token)  # banned ahead, never a member
    for banned in (bob, eve):
        assert refusal(api, JOIN, {"c": code}, banned) == ("FORBIDDEN", "You are banned from this room.")
        assert refusal(api, ROOM, {"r": room}, banned)[0] == "NOT_FOUND"
    api.data(UNBAN, {"r": room, "u": bob.id}, ann.token)
    assert api.data(JOIN, {"c": code}, bob.token)["joinByInvite"]["myRole"] == "MEMBER"  # its one use was kept


async def _race(url: str, code: str, tokens: list[str]) -> list[dict]:
    """Every token tries the code at the same moment: each its own connection, all sent once
    every connection is open (a barrier), so they reach the server together."""
    ready = asyncio.Barrier(len(tokens))

    async def one(token: str) -> dict:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await http.get("/healthz")  # the connection is open before the barrier
            await ready.wait()
            response = await http.post(
                "/graphql", json={"query": JOIN, "variables": {"c": code}}, headers={"Authorization": f"Bearer {token}"}
            )
            return response.json()

    return await asyncio.gather(*(one(token) for token in tokens))


@pytest.mark.parametrize(("uses", "racers"), [(1, 12), (3, 24)])
async def test_racing_for_the_last_uses_exactly_that_many_win(
    server: Server, api: GraphQLClient, uses: int, racers: int
) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann, kind="PRIVATE")
    code = invite(api, ann, room, uses=uses)["code"]
    people = [sign_up(api, f"R{i}") for i in range(racers)]
    answers = await _race(server.url, code, [person.token for person in people])
    won = [answer for answer in answers if "errors" not in answer]
    lost = [answer for answer in answers if "errors" in answer]
    assert len(won) == uses, answers
    assert {answer["errors"][0]["extensions"]["code"] for answer in lost} == {"NOT_FOUND"}
    assert members_of(api, ann, room) == 1 + uses
    assert len(joined_events(api, ann, room)) == 1 + uses


def test_who_may_revoke(api: GraphQLClient) -> None:
    ann, mod, mod2, bob = (sign_up(api, name) for name in ("Ann", "Mod", "Mod2", "Bob"))
    room = create_room(api, ann, kind="PRIVATE")
    for person in (mod, mod2, bob):
        add_member(api, ann, room, person.id)
    for person in (mod, mod2):
        api.data(SET_ROLE, {"r": room, "u": person.id, "role": "MODERATOR"}, ann.token)
    by_mod = [invite(api, mod, room)["code"] for _ in range(3)]
    by_ann = invite(api, ann, room)["code"]

    # A MEMBER who did not create it: not found, as for an unknown code.
    assert refusal(api, REVOKE, {"c": by_ann}, bob) == ("NOT_FOUND", "Invite not found.")
    assert api.data(REVOKE, {"c": by_ann}, mod2.token)["revokeInvite"] is True  # another MODERATOR
    assert api.data(REVOKE, {"c": by_mod[0]}, ann.token)["revokeInvite"] is True  # an OWNER
    # Its creator, even after losing the role (and after leaving).
    api.data(SET_ROLE, {"r": room, "u": mod.id, "role": "MEMBER"}, ann.token)
    assert api.data(REVOKE, {"c": by_mod[1]}, mod.token)["revokeInvite"] is True
    api.data("mutation($r: ID!) { leaveRoom(room: $r) }", {"r": room}, mod.token)
    assert api.data(REVOKE, {"c": by_mod[2]}, mod.token)["revokeInvite"] is True
    # Revoked is gone: a second revoke, and any join, are not found.
    assert refusal(api, REVOKE, {"c": by_ann}, ann)[0] == "NOT_FOUND"
    assert refusal(api, JOIN, {"c": by_mod[1]}, bob)[0] == "NOT_FOUND"  # bob is a member; the code is dead
    # A used-up invite is revoked with `false`: it could not be used any more.
    used = invite(api, ann, room, uses=1)["code"]
    api.data(JOIN, {"c": used}, sign_up(api, "Cy").token)
    assert api.data(REVOKE, {"c": used}, ann.token)["revokeInvite"] is False


def test_a_room_holds_at_most_100_live_invites(api: GraphQLClient, database_url: str) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann, kind="PRIVATE")
    codes = [invite(api, ann, room, seconds=3600 if i < 10 else None)["code"] for i in range(100)]
    body = api.post(CREATE_INVITE, {"r": room}, ann.token)
    assert body["errors"][0]["extensions"] == {"code": "TOO_MANY_INVITES", "limit": 100}, body
    api.data(REVOKE, {"c": codes[50]}, ann.token)
    invite(api, ann, room)  # room for one again
    assert api.post(CREATE_INVITE, {"r": room}, ann.token)["errors"][0]["extensions"]["code"] == "TOO_MANY_INVITES"
    # Dead invites do not count (and are cleared): ten expire.
    sql(
        database_url,
        f"UPDATE room_invites SET expires_at = now() - interval '1 second' WHERE room_id = {int(room)} "
        "AND expires_at IS NOT NULL",
    )
    for _ in range(10):
        invite(api, ann, room)
    assert api.post(CREATE_INVITE, {"r": room}, ann.token)["errors"][0]["extensions"]["code"] == "TOO_MANY_INVITES"
    other = create_room(api, ann, kind="PRIVATE")  # per room
    invite(api, ann, other)


def test_the_embedded_default_joins_by_invite(sqlite_server: Server) -> None:
    api = GraphQLClient(sqlite_server.url)
    ann, bob, eve = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Eve")
    room = create_room(api, ann, kind="PRIVATE")
    code = invite(api, ann, room, uses=1, seconds=600)["code"]
    assert api.data(JOIN, {"c": code}, bob.token)["joinByInvite"]["memberCount"] == 2
    assert refusal(api, JOIN, {"c": code}, eve) == refusal(api, JOIN, {"c": secrets.token_urlsafe(24)}, eve)
    assert refusal(api, JOIN, {"c": code}, eve)[0] == "NOT_FOUND"
    assert joined_events(api, ann, room)[-1]["by"] is None
    assert api.data(REVOKE, {"c": code}, ann.token)["revokeInvite"] is False
    api.close()


# --- Rate limits ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited() -> Iterator[Server]:
    """Postgres + Redis with the shipped RATE_LIMIT_INVITE_JOINS count (10) and a RATE_LIMIT_ACTIONS
    of 30, in hour-long windows (the limits count in fixed windows; what matters is the count)."""
    with served_with_limits(
        "chat_invites",
        {
            "RATE_LIMIT_ACTIONS": "30/3600",
            "RATE_LIMIT_INVITE_JOINS": "10/3600",
        },
    ) as server:
        yield server


def _address(i: int) -> dict[str, str]:
    """A client at another address, as the router (a trusted peer: this machine) reports it."""
    return {"X-Forwarded-For": f"198.51.{i // 250}.{i % 250 + 1}"}


def test_a_code_guesser_is_stopped_after_10_guesses_per_account_and_per_address(limited: Server) -> None:
    """One account guessing from 200 addresses, and 40 accounts guessing from one address: each
    gets 10 answers, then RATE_LIMITED, before any code is looked at (so even a right guess past
    the limit gets nothing). At 10 per 10 minutes, a day is 1,440 guesses per address, each
    hitting one of a room's at most 100 live 192-bit codes with a chance of 100 / 2^192."""
    api = GraphQLClient(limited.url)
    ann = sign_up(api, "Ann", headers=_address(9_000))
    room = create_room(api, ann, kind="PRIVATE")
    real = invite(api, ann, room)["code"]
    at_window_start(3600, 300)

    eve = sign_up(api, "Eve", headers=_address(9_001))
    answers = [api.post(JOIN, {"c": secrets.token_urlsafe(24)}, eve.token, _address(i)) for i in range(200)]
    answers.append(api.post(JOIN, {"c": real}, eve.token, _address(201)))
    found = [answer["errors"][0]["extensions"]["code"] for answer in answers]
    assert found[:10] == ["NOT_FOUND"] * 10 and set(found[10:]) == {"RATE_LIMITED"}, found
    assert 1 <= answers[-1]["errors"][0]["extensions"]["retryAfter"] <= 3600

    accounts = [sign_up(api, f"Sock{i}", headers=_address(5_000 + i)) for i in range(40)]
    seen = [api.post(JOIN, {"c": secrets.token_urlsafe(24)}, a.token, _address(7_777)) for a in accounts]
    seen.append(api.post(JOIN, {"c": real}, sign_up(api, "Late", headers=_address(9_002)).token, _address(7_777)))
    codes = [answer["errors"][0]["extensions"]["code"] for answer in seen]
    assert codes[:10] == ["NOT_FOUND"] * 10 and set(codes[10:]) == {"RATE_LIMITED"}, codes
    assert members_of(api, ann, room) == 1

    # Someone else, elsewhere, is not held by the guessers' limits.
    bob = sign_up(api, "Bob", headers=_address(9_003))
    assert api.data(JOIN, {"c": real}, bob.token, _address(9_004))["joinByInvite"]["memberCount"] == 2
    api.close()


def test_the_three_mutations_count_against_rate_limit_actions(limited: Server) -> None:
    api = GraphQLClient(limited.url)
    ann = sign_up(api, "Ann", headers=_address(8_000))
    room = create_room(api, ann, kind="PRIVATE")
    at_window_start(3600, 300)
    made = [api.post(CREATE_INVITE, {"r": room}, ann.token) for _ in range(20)]
    assert all("errors" not in answer for answer in made)
    codes = [answer["data"]["createInvite"]["code"] for answer in made]
    revoked = [api.post(REVOKE, {"c": code}, ann.token) for code in codes[:5]]
    assert all("errors" not in answer for answer in revoked)
    joins = [api.post(JOIN, {"c": codes[-1]}, ann.token, _address(8_001)) for _ in range(5)]  # harmless: a member
    assert all("errors" not in answer for answer in joins)
    # 30 spent: each of the three is refused now.
    for query, variables in ((CREATE_INVITE, {"r": room}), (REVOKE, {"c": codes[6]}), (JOIN, {"c": codes[7]})):
        body = api.post(query, variables, ann.token, _address(8_002))
        assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED", (query, body)
    api.close()


# --- The migration ----------------------------------------------------------------------------


def _alembic(url: str, step: str, revision: str) -> None:
    code = f"from alembic import command; from db.migrate import alembic_config as c; command.{step}(c(), {revision!r})"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, check=True)


def test_migration_0006_invites_goes_up_down_and_up_on_sqlite(tmp_path: Path) -> None:
    """Self-contained: only its own table and index, on a database at 0005."""
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"

    def tables() -> set[str]:
        with sqlite3.connect(path) as connection:
            return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    _alembic(url, "upgrade", "0005")
    before = tables()
    _alembic(url, "upgrade", "0006_invites")
    assert tables() == before | {"room_invites"}
    _alembic(url, "downgrade", "0005")
    assert tables() == before
    _alembic(url, "upgrade", "0006_invites")
    with sqlite3.connect(path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(room_invites)")]
    assert columns == ["id", "code_hash", "room_id", "created_by", "created_at", "expires_at", "uses_left"]
