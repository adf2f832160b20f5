"""Profiles that reveal no email (issue 24): `avatar` is the user's own image, their Gravatar only
if they opted in, else an identicon we draw from their id alone and serve ourselves;
`updateProfile` checks what it stores and is rate limited. Against real servers."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.graphql import Account, GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.processes import SHARED_REDIS_URL, Server
from tests.support.wsclient import TRANSPORT_WS, GraphQLWebSocket

UPDATE = """
mutation($name: String, $url: String, $gravatar: Boolean) {
  updateProfile(name: $name, avatarUrl: $url, gravatar: $gravatar) { id name avatar(size: 64) }
}"""
ME = "{ me { id name avatar(size: 48) } }"
EVERYWHERE = """
query($room: ID!) {
  room(id: $room) {
    members { id name avatar }
    messages(first: 10) { edges { node { sender { id name avatar(size: 20) } } } }
    events { edges { node { __typename ... on MemberJoined { user { avatar } } } } }
  }
}"""
LIVE = """
subscription($room: ID!, $after: String) {
  roomEvents(room: $room, after: $after) {
    __typename
    ... on MessageCreated { message { body sender { id avatar(size: 32) } } }
    ... on MemberJoined { user { avatar } }
  }
}"""


def email_digest(account: Account) -> str:
    return hashlib.sha256(account.email.strip().lower().encode()).hexdigest()


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body["errors"]]


@pytest.fixture
def api(any_server: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(any_server.url)
    yield client
    client.close()


def test_the_avatar_is_an_identicon_we_serve_drawn_from_the_id_alone(any_server: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    avatar = api.data(ME, token=ann.token)["me"]["avatar"]
    assert avatar == f"/avatars/{ann.id}.svg?s=48"
    served = httpx.get(f"{any_server.url}{avatar}")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("image/svg+xml")
    assert "max-age=31536000" in served.headers["cache-control"]
    assert served.headers["content-security-policy"] == "default-src 'none'"
    assert served.text.startswith("<svg") and 'width="48"' in served.text and "<script" not in served.text
    assert httpx.get(f"{any_server.url}{avatar}").content == served.content  # deterministic
    other = httpx.get(f"{any_server.url}/avatars/{bob.id}.svg?s=48")
    assert other.status_code == 200 and other.content != served.content
    # Any id draws (no read, nothing revealed about who exists); the size is clamped; the
    # response stays small whatever is asked.
    sizes = [("/avatars/9223372036854775807.svg?s=1", 1), ("/avatars/7.svg?s=99999", 2048), ("/avatars/7.svg", 80)]
    for path, width in sizes:
        response = httpx.get(f"{any_server.url}{path}")
        assert response.status_code == 200 and f'width="{width}"' in response.text
        assert len(response.content) < 4096
    for bad in ("/avatars/abc.svg", "/avatars/12345678901234567890.svg", "/avatars/7.png", "/avatars/7.svg?s=-1"):
        assert httpx.get(f"{any_server.url}{bad}").status_code == 404, bad


async def test_nothing_about_an_email_reaches_another_member(any_server: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    ws = await GraphQLWebSocket.open(any_server.ws_url, TRANSPORT_WS, bob.token)
    try:
        join_room(api, bob, room)
        latest = "query($r: ID!) { room(id: $r) { latestEventCursor } }"
        after = api.data(latest, {"r": room}, bob.token)["room"]["latestEventCursor"]
        await ws.subscribe("1", LIVE, {"room": room, "after": after})
        post_message(api, ann, room, "hi")
        seen = []
        while True:
            event = (await ws.result("1"))["data"]["roomEvents"]
            seen.append(str(event))
            if event["__typename"] == "MessageCreated":
                assert event["message"]["sender"]["avatar"] == f"/avatars/{ann.id}.svg?s=32"
                break
    finally:
        await ws.close()
    response = api.http.post(
        "/graphql",
        json={"query": EVERYWHERE, "variables": {"room": room}},
        headers={"authorization": f"Bearer {bob.token}"},
    )
    assert "errors" not in response.json(), response.text
    for text in [response.text, *seen]:
        assert email_digest(ann) not in text and ann.email not in text and "gravatar" not in text


async def test_a_live_event_and_a_resume_show_the_sender_s_own_picture_and_gravatar(
    any_server: Server, api: GraphQLClient
) -> None:
    """A message's event carries its sender's profile (db.room_events.PROFILE_FIELDS): live and
    read back from the log, `avatar` is what the sender chose, not the identicon."""
    ann, cid, bob = sign_up(api, "Ann"), sign_up(api, "Cid"), sign_up(api, "Bob")
    own = "https://images.example.com/ann.png"
    api.data(UPDATE, {"url": own}, ann.token)
    api.data(UPDATE, {"gravatar": True}, cid.token)
    room = create_room(api, ann)
    join_room(api, cid, room)
    join_room(api, bob, room)
    latest = "query($r: ID!) { room(id: $r) { latestEventCursor } }"
    after = api.data(latest, {"r": room}, bob.token)["room"]["latestEventCursor"]
    expected = {ann.id: own, cid.id: f"https://www.gravatar.com/avatar/{email_digest(cid)}?s=32&d=identicon"}
    for resumed in (False, True):
        ws = await GraphQLWebSocket.open(any_server.ws_url, TRANSPORT_WS, bob.token)
        try:
            await ws.subscribe("1", LIVE, {"room": room, "after": after})
            if not resumed:
                post_message(api, ann, room, "from ann")
                post_message(api, cid, room, "from cid")
            senders: dict[str, str] = {}
            while len(senders) < 2:
                event = (await ws.result("1"))["data"]["roomEvents"]
                if event["__typename"] == "MessageCreated":
                    senders[event["message"]["sender"]["id"]] = event["message"]["sender"]["avatar"]
            assert senders == expected, resumed
        finally:
            await ws.close()


def test_update_profile_sets_a_picture_and_refuses_a_spoofing_name(any_server: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    join_room(api, bob, room)
    url = "https://images.example.com/ann.png?v=2"
    for spoofed in ["A\u202enn", "Ann\u200b", "Ann\x00", "\u2066Ann\u2069 Smith"]:
        body = api.post(UPDATE, {"url": url, "name": spoofed}, ann.token)
        assert codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["argument"] == "name"
        unchanged = {"id": ann.id, "name": "Ann", "avatar": f"/avatars/{ann.id}.svg?s=48"}
        assert api.data(ME, token=ann.token)["me"] == unchanged  # nothing changed, the url neither
    updated = api.data(UPDATE, {"url": url, "name": "  Ann Smith "}, ann.token)["updateProfile"]
    assert updated == {"id": ann.id, "name": "Ann Smith", "avatar": url}
    # What the other member sees, and what Ann's own `me` says on every worker at once.
    members = api.data("query($r: ID!) { room(id: $r) { members { id name avatar } } }", {"r": room}, bob.token)
    assert {"id": ann.id, "name": "Ann Smith", "avatar": url} in members["room"]["members"]
    for _ in range(6):
        fresh = GraphQLClient(any_server.url)  # a new connection: any worker
        try:
            assert fresh.data(ME, token=ann.token)["me"] == {"id": ann.id, "name": "Ann Smith", "avatar": url}
        finally:
            fresh.close()
    # Only what is given changes; "" removes the picture.
    assert api.data(UPDATE, {"name": "Ann"}, ann.token)["updateProfile"]["avatar"] == url
    cleared = api.data(UPDATE, {"url": ""}, ann.token)["updateProfile"]
    assert cleared == {"id": ann.id, "name": "Ann", "avatar": f"/avatars/{ann.id}.svg?s=64"}


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "ftp://example.com/a.png",
        "/relative.png",
        "https://",
        "https://example.com/a b.png",
        "https://example.com/\u202e.png",
        "https://example.com/" + "a" * 2048,
    ],
)
def test_only_bounded_http_urls_are_pictures(api: GraphQLClient, url: str) -> None:
    ann = sign_up(api, "Ann")
    body = api.post(UPDATE, {"url": url}, ann.token)
    assert codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["argument"] == "avatarUrl"
    assert api.data(ME, token=ann.token)["me"]["avatar"] == f"/avatars/{ann.id}.svg?s=48"


def test_names_invisible_empty_or_too_long_are_refused(api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    for name in ["\u200b\u202e\x00", "   ", "", "x" * 101]:
        body = api.post(UPDATE, {"name": name}, ann.token)
        assert codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["argument"] == "name"
    assert api.data(ME, token=ann.token)["me"]["name"] == "Ann"
    assert api.error_codes(UPDATE, {"name": "Eve"}) == ["UNAUTHENTICATED"]


def test_gravatar_only_for_a_user_who_opts_in(api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    opted = api.data(UPDATE, {"gravatar": True}, ann.token)["updateProfile"]["avatar"]
    assert opted == f"https://www.gravatar.com/avatar/{email_digest(ann)}?s=64&d=identicon"
    own = "https://images.example.com/mine.png"
    assert api.data(UPDATE, {"url": own}, ann.token)["updateProfile"]["avatar"] == own  # their own image first
    api.data(UPDATE, {"url": "", "gravatar": False}, ann.token)
    assert api.data(ME, token=ann.token)["me"]["avatar"] == f"/avatars/{ann.id}.svg?s=48"


@pytest.fixture(scope="module")
def limited(database_url: str) -> Iterator[Server]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "RATE_LIMIT_PROFILE": "3/3600",
        "RATE_LIMIT_AUTH": "4/3600",
    }
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


def test_update_profile_is_rate_limited_per_user(limited: Server) -> None:
    api = GraphQLClient(limited.url)
    try:
        ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
        for i in range(3):
            api.data(UPDATE, {"name": f"Ann {i}"}, ann.token)
        refused = api.post(UPDATE, {"name": "Ann 4"}, ann.token)
        assert codes(refused) == ["RATE_LIMITED"] and refused["errors"][0]["extensions"]["retryAfter"] >= 1
        assert api.data(ME, token=ann.token)["me"]["name"] == "Ann 2"
        assert api.data(UPDATE, {"name": "Bob 1"}, bob.token)["updateProfile"]["name"] == "Bob 1"  # per user
    finally:
        api.close()


def test_change_password_guesses_are_limited_per_account_whatever_the_address(limited: Server) -> None:
    """The sign-in limit's `auth` bucket, keyed by the user: addresses made up in
    X-Forwarded-For do not reset it."""
    api = GraphQLClient(limited.url)
    try:
        ann = sign_up(api, "Ann")
        change = 'mutation($c: String!) { changePassword(current: $c, new: "a new passphrase") { token } }'
        for i in range(4):
            headers = {"authorization": f"Bearer {ann.token}", "x-forwarded-for": f"10.0.0.{i}"}
            body = api.http.post("/graphql", json={"query": change, "variables": {"c": f"guess {i}"}}, headers=headers)
            assert codes(body.json()) == ["BAD_USER_INPUT"], body.text
        headers = {"authorization": f"Bearer {ann.token}", "x-forwarded-for": "10.0.0.99"}
        body = api.http.post("/graphql", json={"query": change, "variables": {"c": ann.password}}, headers=headers)
        assert codes(body.json()) == ["RATE_LIMITED"], body.text
        assert api.data(ME, token=ann.token)["me"]["id"] == ann.id  # refused before anything changed
    finally:
        api.close()
