"""The graphql-sse npm client (distinct connections mode) across a server restart: subscribed to
messageCreated while messages are posted, the server is stopped with SIGTERM mid-stream (more
messages are posted through another server on the same database and Redis while it is down) and
started again on the same port. The stream ends without `complete`, the client reconnects by itself
with Last-Event-ID, and it gets every message once, in order."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

import redis as redis_sync

from tests.support.graphql import GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.processes import ROOT, SHARED_REDIS_URL, Server
from tests.support.waiting import until_sync

JS = ROOT / "tests" / "js"
NODE_SECONDS = 180


class NodeClient:
    """tests/js/sse-restart.mjs, its `SSE {...}` lines read as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["node", str(JS / "sse-restart.mjs")],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.events: list[dict] = []
        self._lines: queue.Queue[dict | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._watchdog = threading.Timer(NODE_SECONDS, self.process.kill)  # a hung client must not hang the run
        self._watchdog.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("SSE "):
                self._lines.put(json.loads(line[4:]))
        self._lines.put(None)

    def wait_for(self, check: Callable[[dict], bool], what: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = self._lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}:\n{self.text()}") from None
            if event is None:
                raise AssertionError(f"node exited while waiting for {what}:\n{self.text()}")
            self.events.append(event)
            if check(event):
                return event

    def messages(self) -> list[dict]:
        return [event for event in self.events if event["type"] == "MESSAGE"]

    def wait_for_messages(self, count: int, timeout: float = 30) -> None:
        if len(self.messages()) < count:
            self.wait_for(lambda _: len(self.messages()) >= count, f"{count} messages", timeout)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def text(self) -> str:
        return "".join(self.output)

    def close(self) -> None:
        self._watchdog.cancel()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def test_graphql_sse_client_resumes_across_a_restart_with_nothing_missed_and_nothing_twice(database_url: str) -> None:
    assert (JS / "node_modules" / "graphql-sse").is_dir(), "run `make test`: it installs tests/js (npm ci)"
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"sse-{uuid.uuid4().hex[:8]}:",
    }
    server = Server(env=env, workers=2).start()
    other = Server(env=env, workers=1).start()  # another dyno on the same database and Redis
    node: NodeClient | None = None
    try:
        api, other_api = GraphQLClient(server.url), GraphQLClient(other.url)
        ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
        room = create_room(api, ann)
        join_room(api, bob, room)

        node = NodeClient({"CHAT_SERVER_URL": server.url, "CHAT_TOKEN": bob.token, "CHAT_ROOM": room})
        node.wait_for(lambda event: event["type"] == "CONNECTED", "the event stream")
        # CONNECTED is the response's head, sent before the subscription starts; SSE has no
        # answer that says it started. Its room's feed subscribed in Redis stands in (nobody
        # else subscribes to this room): from then on the room's messages reach the stream.
        channel = f"{env['CHANNEL_PREFIX']}room:{room}"
        with redis_sync.Redis.from_url(SHARED_REDIS_URL) as redis:
            until_sync(lambda: redis.pubsub_numsub(channel)[0][1] >= 1, "the stream's feed subscribed")
        posted = [post_message(api, ann, room, f"before {i}") for i in range(5)]
        node.wait_for_messages(5)

        # Mid-stream: three more, and SIGTERM at once (some may still be on their way).
        posted += [post_message(api, ann, room, f"racing {i}") for i in range(3)]
        started = time.monotonic()
        exit_code = server.stop()
        took = time.monotonic() - started
        assert exit_code == 0, server.log()
        assert took < 15, f"SSE streams held the shutdown for {took:.1f} s"
        print(f"server stopped in {took:.2f} s")
        posted += [post_message(other_api, ann, room, f"while down {i}") for i in range(3)]
        server.start()  # the same port, database and Redis
        node.wait_for(lambda event: event["type"] == "CONNECTED" and event["reconnected"], "the reconnect", 60)
        posted += [post_message(api, ann, room, f"after {i}") for i in range(3)]

        node.send(f"EXPECT {len(posted)}")
        done = node.wait_for(lambda event: event["type"] == "DONE", "the client to finish", 90)
        assert node.process.wait(10) == 0, node.text()
    finally:
        if node is not None:
            node.close()
        server.stop()
        other.stop()

    print(node.text())
    messages = node.messages()
    assert done == {"type": "DONE", "received": len(posted), "expected": len(posted)}, node.text()
    assert [m["seq"] for m in messages] == list(range(1, len(posted) + 1)), node.text()
    assert [m["id"] for m in messages] == [p["id"] for p in posted]
    assert [m["body"] for m in messages] == [p["body"] for p in posted]
    assert all(m["eventId"] == m["id"] for m in messages), "each event's id is its message's id"
    types = [event["type"] for event in node.events]
    assert "COMPLETE" not in types and "ERROR" not in types, node.text()

    # Every connection after the first sent the id of the last message received before it.
    last_id = None
    connects = []
    for event in node.events:
        if event["type"] == "MESSAGE":
            last_id = event["id"]
        elif event["type"] == "CONNECTING":
            connects.append(event)
            assert event["lastEventId"] == last_id, node.text()
    assert len(connects) >= 2, node.text()
    assert connects[0]["lastEventId"] is None
    assert connects[1]["lastEventId"] in [p["id"] for p in posted[4:8]], "it had the first five before the restart"
