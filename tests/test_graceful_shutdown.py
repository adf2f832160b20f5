"""SIGTERM (a deploy, a daily restart): in-flight requests finish, WebSockets close with 1012
(on which Apollo clients reconnect), the server exits well within Heroku's 30 s, and a client
that resubscribes with `after` on the new server misses nothing."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator

import httpx

from tests.support.graphql import CREATE_MESSAGE, GraphQLClient, create_room, post_message, sign_up
from tests.support.processes import SHARED_REDIS_URL, Server
from tests.support.sockets import unread_by_server
from tests.support.waiting import until, until_sync
from tests.support.wsclient import MESSAGE_CREATED, PROTOCOLS, ROOM_EVENTS, GraphQLWebSocket


async def test_sigterm_drains_requests_closes_websockets_with_1012_and_clients_resume(database_url: str) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
    }
    server = Server(env=env, workers=2).start()
    api = GraphQLClient(server.url)
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    subscribers = [await GraphQLWebSocket.open(server.ws_url, protocol, ann.token) for protocol in PROTOCOLS]
    for subscriber in subscribers:
        await subscriber.subscribe("s", MESSAGE_CREATED, {"room": room})
        await subscriber.subscribe("e", ROOM_EVENTS, {"room": room})
        await subscriber.barrier()
    last_seen = post_message(api, ann, room, "before the restart")
    cursors = []
    for subscriber in subscribers:
        results = [await subscriber.receive() for _ in range(2)]
        by_id = {result["id"]: result["payload"]["data"] for result in results}
        assert by_id["s"]["messageCreated"]["seq"] == 1
        cursors.append(by_id["e"]["roomEvents"]["cursor"])
    assert cursors[0] == cursors[1]

    # An HTTP request in flight when SIGTERM arrives: its body is still being sent.
    first_part_sent, sigterm_sent = threading.Event(), threading.Event()
    in_flight: dict[str, httpx.Response] = {}
    body = b'{"query": "mutation($r: ID!, $b: String!) { createMessage(room: $r, body: $b) { seq } }", '
    rest = f'"variables": {{"r": "{room}", "b": "sent across the SIGTERM"}}}}'.encode()

    def slow_body() -> Iterator[bytes]:
        yield body
        first_part_sent.set()
        # The rest only once the worker is draining: the request is in flight across the SIGTERM.
        assert sigterm_sent.wait(10)
        until_sync(lambda: "Shutting down" in server.log(), "the workers draining")
        yield rest

    def send() -> None:
        in_flight["response"] = httpx.post(
            f"{server.url}/graphql",
            content=slow_body(),
            headers={"content-type": "application/json", "authorization": f"Bearer {ann.token}"},
            timeout=30,
        )

    sender = threading.Thread(target=send)
    sender.start()
    assert first_part_sent.wait(5)
    # The server has read what was sent: a worker holds the request when SIGTERM comes.
    await until(lambda: unread_by_server(server.port) == 0, "the first part read by a worker")
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    sigterm_sent.set()

    codes = [await subscriber.close_code(timeout=25) for subscriber in subscribers]
    assert codes == [1012, 1012]
    sender.join(30)
    assert in_flight["response"].status_code == 200
    assert in_flight["response"].json() == {"data": {"createMessage": {"seq": 2}}}
    exit_code = server.process.wait(30)
    took = time.monotonic() - started
    assert exit_code == 0
    assert took < 20  # GRACEFUL_TIMEOUT, under Heroku's 30 s
    print(f"stopped in {took:.2f} s")

    # The next release: messages are posted while the clients are away, then they come back.
    successor = Server(env=env, workers=2).start()
    try:
        api = GraphQLClient(successor.url)
        for i in range(3):
            api.data(CREATE_MESSAGE, {"room": room, "body": f"while away {i}"}, token=ann.token)
        for protocol in PROTOCOLS:
            ws = await GraphQLWebSocket.open(successor.ws_url, protocol, ann.token)
            await ws.subscribe("s", MESSAGE_CREATED, {"room": room, "after": last_seen["id"]})
            resumed = await ws.messages("s", 4)
            assert [m["seq"] for m in resumed] == [2, 3, 4, 5]
            assert resumed[0]["body"] == "sent across the SIGTERM"
            assert await ws.silent(0.3)
            await ws.subscribe("e", ROOM_EVENTS, {"room": room, "after": cursors[0]})
            events = await ws.events("e", 4)
            assert [event["message"]["seq"] for event in events] == [2, 3, 4, 5]
            assert await ws.silent(0.3)
            await ws.close()
    finally:
        successor.stop()
