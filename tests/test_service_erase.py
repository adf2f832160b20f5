"""deleteUser(erase: true) against the real server (gunicorn, two workers, Postgres + Redis, and
the embedded default): every erased message is a MessageDeleted event, `by` the service's own
user, in its room's log order, heard live on roomEvents, delivered to the webhook receiver as
`message.deleted`, and found again by a resume from a cursor; more messages than one erase
batch (db.messages.ERASE_BATCH) take several transactions, each published. The erased user's
own subscription ends before any of it. Asking again after the user is gone erases what is left,
and nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from db.messages import ERASE_BATCH
from tests.support.graphql import GraphQLClient, post_many
from tests.support.host_tokens import SECRET, claims, hs256
from tests.support.processes import Server, served_on
from tests.support.waiting import until
from tests.support.webhooks import Receiver, seq_of
from tests.support.wsclient import TRANSPORT_WS, GraphQLWebSocket

KEY = "erase-service-key-" + "e" * 32
UPSERT = "mutation($u: [UserInput!]!) { upsertUsers(users: $u) { id externalId } }"
CREATE = """mutation($n: String!, $e: ID, $o: ID, $m: [ID!]) {
  createRoom(name: $n, externalId: $e, owner: $o, members: $m) { id }
}"""
DELETE = "mutation($e: ID!, $erase: Boolean) { deleteUser(externalId: $e, erase: $erase) }"
ME = "{ me { id name } }"
HISTORY = """query($r: ID!, $after: String) {
  room(id: $r) {
    messages(first: 100, after: $after) { edges { node { id deleted } } pageInfo { hasNextPage endCursor } }
  }
}"""
LAST_CURSOR = "query($r: ID!) { room(id: $r) { latestEventCursor } }"
EVENTS = """
subscription($room: ID!, $after: String) {
  roomEvents(room: $room, after: $after) {
    __typename cursor
    ... on MessageDeleted { messageId by { id name } }
  }
}"""
FAST = {
    "WEBHOOK_TIMEOUT_SECONDS": "1",
    "WEBHOOK_LEASE_SECONDS": "8",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "WEBHOOK_RETRY_MAX_SECONDS": "1",
    "WEBHOOK_POLL_SECONDS": "0.5",
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hooks = Receiver().start()
    yield hooks
    hooks.stop()


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[Server]:
    keys = {"SERVICE_KEY": KEY, "AUTH_JWT_SECRET": SECRET, "WEBHOOK_URL": receiver.url, "WEBHOOK_SECRET": "s", **FAST}
    database_url = request.getfixturevalue("database_url") if request.param == "postgres" else ""
    with served_on(request.param, keys, database_url, tmp_path_factory.mktemp("erase")) as server:
        yield server


def host_token(external_id: str) -> str:
    return hs256({k: v for k, v in claims(external_id).items() if k not in ("iss", "aud")})


def ext() -> str:
    return f"host-{uuid.uuid4().hex[:10]}"


def ann_and_bob_in_two_rooms(api: GraphQLClient) -> tuple[dict, dict, list[str]]:
    """Two host users made by the service, and two rooms ("big", "small") Ann owns with Bob in."""
    users = [{"externalId": ext(), "name": name} for name in ("Ann", "Bob")]
    ann, bob = api.data(UPSERT, {"u": users}, token=KEY)["upsertUsers"]
    rooms = [
        api.data(CREATE, {"n": name, "e": ext(), "o": ann["id"], "m": [bob["id"]]}, token=KEY)["createRoom"]["id"]
        for name in ("big", "small")
    ]
    return ann, bob, rooms


async def test_an_erasure_reaches_live_subscribers_webhooks_and_resumes(served: Server, receiver: Receiver) -> None:
    api = GraphQLClient(served.url)
    ann, bob, rooms = ann_and_bob_in_two_rooms(api)
    big, small = rooms
    bob_jwt, ann_jwt = host_token(bob["externalId"]), host_token(ann["externalId"])
    # More than two batches in one room, a few in the other; one of Ann's stays.
    posted = {
        big: await post_many(served.url, bob_jwt, big, [f"b{n}" for n in range(2 * ERASE_BATCH + 7)]),
        small: await post_many(served.url, bob_jwt, small, ["s0", "s1", "s2"], concurrency=1),
    }
    await post_many(served.url, ann_jwt, small, ["kept"], concurrency=1)
    before = {room: api.data(LAST_CURSOR, {"r": room}, token=ann_jwt)["room"]["latestEventCursor"] for room in rooms}
    hooks_before = len(receiver.snapshot())

    ann_ws = await GraphQLWebSocket.open(served.ws_url, TRANSPORT_WS, ann_jwt)
    bob_ws = await GraphQLWebSocket.open(served.ws_url, TRANSPORT_WS, bob_jwt)
    try:
        for n, room in enumerate(rooms):
            await ann_ws.subscribe(f"ann{n}", EVENTS, {"room": room, "after": before[room]})
        await bob_ws.subscribe("bob", EVENTS, {"room": big, "after": before[big]})
        await ann_ws.barrier()
        await bob_ws.barrier()
        assert api.data(DELETE, {"e": bob["externalId"], "erase": True}, token=KEY) == {"deleteUser": True}

        service = api.data(ME, token=KEY)["me"]
        heard: dict[str, list[dict]] = {room: [] for room in rooms}
        total = sum(len(messages) for messages in posted.values())
        while sum(event["__typename"] == "MessageDeleted" for events in heard.values() for event in events) < total:
            message = await ann_ws.receive(timeout=30)
            assert message["type"] == "next" and "errors" not in message["payload"], message
            event = message["payload"]["data"]["roomEvents"]
            heard[rooms[int(message["id"][3:])]].append(event)
        for room in rooms:
            # Bob left the room first (MemberLeft), then each of his messages, oldest first.
            deleted = [event for event in heard[room] if event["__typename"] == "MessageDeleted"]
            assert heard[room][0]["__typename"] == "MemberLeft"
            assert [event["messageId"] for event in deleted] == [m["id"] for m in posted[room]]
            assert all(event["by"] == {"id": service["id"], "name": "System"} for event in deleted)
            seqs = [seq_of(event["cursor"]) for event in heard[room]]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # Bob's own subscription ended before any of it: his last message is its end.
        ended = await bob_ws.receive(timeout=10)
        while ended.get("type") == "next" and "errors" not in ended["payload"]:
            assert ended["payload"]["data"]["roomEvents"]["__typename"] == "MemberLeft", ended
            ended = await bob_ws.receive(timeout=10)
        assert ended["type"] in ("error", "next", "complete"), ended
    finally:
        await ann_ws.close()
        await bob_ws.close()

    # A resume from the middle of the erasure gives the rest, in order.
    middle = heard[big][ERASE_BATCH]
    resumed = await GraphQLWebSocket.open(served.ws_url, TRANSPORT_WS, ann_jwt)
    try:
        await resumed.subscribe("r", EVENTS, {"room": big, "after": middle["cursor"]})
        rest = await resumed.events("r", len(heard[big]) - ERASE_BATCH - 1, timeout=30)
        assert [event["cursor"] for event in rest] == [event["cursor"] for event in heard[big][ERASE_BATCH + 1 :]]
        assert await resumed.silent(0.5)
    finally:
        await resumed.close()

    # Every tombstone reaches the webhook as message.deleted, per room in log order.
    def deliveries() -> dict[str, list[dict]]:
        found: dict[str, list[dict]] = {}
        for request in receiver.snapshot()[hooks_before:]:
            if request.payload["type"] == "message.deleted" and request.acknowledged:
                found.setdefault(request.room, []).append(request.payload)
        return found

    await until(lambda: sum(map(len, deliveries().values())) >= total, "every message.deleted delivered", 60)
    for room in rooms:
        payloads = deliveries()[room]
        assert [p["data"]["messageId"] for p in payloads] == [m["id"] for m in posted[room]]
        assert all(p["data"]["by"] == {"id": service["id"], "externalId": None} for p in payloads)
        assert [p["cursor"] for p in payloads] == [
            e["cursor"] for e in heard[room] if e["__typename"] == "MessageDeleted"
        ]

    # Asked again (an answer lost): nothing left to erase, nothing logged twice; without erase, gone.
    assert api.data(DELETE, {"e": bob["externalId"], "erase": True}, token=KEY) == {"deleteUser": True}
    after = {room: api.data(LAST_CURSOR, {"r": room}, token=ann_jwt)["room"]["latestEventCursor"] for room in rooms}
    assert after == {room: heard[room][-1]["cursor"] for room in rooms}
    assert api.error_codes(DELETE, {"e": bob["externalId"]}, token=KEY) == ["NOT_FOUND"]
    assert api.error_codes(DELETE, {"e": ext(), "erase": True}, token=KEY) == ["NOT_FOUND"]
    api.close()


async def test_an_erasure_out_of_time_answers_false_and_the_next_call_goes_on(
    database_url: str, tmp_path: Path
) -> None:
    """With ERASE_SECONDS=0 each call erases one batch and answers false while any was erased,
    true once none is left: a host calling while it answers false erases everything, nothing
    twice (each room's log grows by Bob's leaving and one tombstone per message)."""
    keys = {"SERVICE_KEY": KEY, "AUTH_JWT_SECRET": SECRET, "ERASE_SECONDS": "0"}
    with served_on("postgres", keys, database_url, tmp_path) as server:
        api = GraphQLClient(server.url)
        ann, bob, rooms = ann_and_bob_in_two_rooms(api)
        bob_jwt, ann_jwt = host_token(bob["externalId"]), host_token(ann["externalId"])
        counts = {rooms[0]: ERASE_BATCH + 5, rooms[1]: 2}
        for room, count in counts.items():
            await post_many(server.url, bob_jwt, room, [f"m{n}" for n in range(count)])

        def last_seqs() -> dict[str, int]:
            return {
                room: seq_of(api.data(LAST_CURSOR, {"r": room}, token=ann_jwt)["room"]["latestEventCursor"])
                for room in rooms
            }

        before = last_seqs()
        answers = [api.data(DELETE, {"e": bob["externalId"], "erase": True}, token=KEY)["deleteUser"]]
        while not answers[-1] and len(answers) < 10:
            answers.append(api.data(DELETE, {"e": bob["externalId"], "erase": True}, token=KEY)["deleteUser"])
        # A batch of the big room, its last 5, the small room's 2: then nothing left.
        assert answers == [False, False, False, True]
        assert {room: seq - before[room] for room, seq in last_seqs().items()} == {
            room: count + 1 for room, count in counts.items()
        }
        api.close()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_two_erasures_of_one_user_at_once_answer_true_only_when_all_is_erased(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    """The host's retry racing its first call: two deleteUser(erase) for the same user at once,
    again while either answers false (ERASE_SECONDS=0: a batch a call). The moment either answers
    true, every one of the user's messages is a tombstone and each room's log has grown by the
    leave and exactly one tombstone per message: no batch skipped, none erased twice."""
    keys = {"SERVICE_KEY": KEY, "AUTH_JWT_SECRET": SECRET, "ERASE_SECONDS": "0"}
    with served_on(backend, keys, database_url, tmp_path) as server:
        api = GraphQLClient(server.url)
        ann, bob, rooms = ann_and_bob_in_two_rooms(api)
        bob_jwt, ann_jwt = host_token(bob["externalId"]), host_token(ann["externalId"])
        counts = {rooms[0]: 2 * ERASE_BATCH + 5, rooms[1]: 3}
        posted = {
            room: {m["id"] for m in await post_many(server.url, bob_jwt, room, [f"m{n}" for n in range(count)])}
            for room, count in counts.items()
        }
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

            async def data(query: str, variables: dict, token: str) -> dict:
                response = await http.post(
                    "/graphql",
                    json={"query": query, "variables": variables},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert "errors" not in response.json(), response.text
                return response.json()["data"]

            async def last_seqs() -> dict[str, int]:
                found = [await data(LAST_CURSOR, {"r": room}, ann_jwt) for room in rooms]
                return {room: seq_of(f["room"]["latestEventCursor"]) for room, f in zip(rooms, found, strict=True)}

            async def left_of_bob() -> set[str]:
                left: set[str] = set()
                for room in rooms:
                    after = None
                    while True:
                        page = (await data(HISTORY, {"r": room, "after": after}, ann_jwt))["room"]["messages"]
                        left |= {e["node"]["id"] for e in page["edges"] if not e["node"]["deleted"]} & posted[room]
                        if not page["pageInfo"]["hasNextPage"]:
                            break
                        after = page["pageInfo"]["endCursor"]
                return left

            before = await last_seqs()
            grown: list[dict[str, int]] = []
            left: list[set[str]] = []

            async def erase() -> bool:
                done = (await data(DELETE, {"e": bob["externalId"], "erase": True}, KEY))["deleteUser"]
                if done:  # checked at once, while the other call may still be running
                    seqs = await last_seqs()
                    grown.append({room: seq - before[room] for room, seq in seqs.items()})
                    left.append(await left_of_bob())
                return bool(done)

            rounds = []
            while not any(answer for answers in rounds for answer in answers) and len(rounds) < 12:
                rounds.append(await asyncio.gather(erase(), erase()))
            expected = {room: count + 1 for room, count in counts.items()}
            assert any(rounds[-1]), rounds
            assert left and all(not found for found in left), left
            assert grown and all(growth == expected for growth in grown), (grown, rounds)
            # Nothing more was logged after: no batch was erased twice, none is left for a next call.
            assert {room: seq - before[room] for room, seq in (await last_seqs()).items()} == expected
            assert (await data(DELETE, {"e": bob["externalId"], "erase": True}, KEY))["deleteUser"] is True
        api.close()
