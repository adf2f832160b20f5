"""The reference web client in a real browser: two people chat live (typing, edits, deletes,
reactions), after a deploy a page reconnects and resumes while the other, on another server,
never sees its user go offline; a second session pages back through history; unread badges count
up and clear; a leave shows live. Screenshots land in test-artifacts/browser.

And live updates over Server-Sent Events: pages that chose SSE, and pages whose WebSocket fails
(falling back by themselves), keep every message exactly once, in order, while the server they
stream from restarts with messages posted before, during and after. Screenshots land in
test-artifacts/browser-sse.

And rooms people control: a private room hidden until an invite link is opened (signed in, and
signed out then signed up), roles shown and changed live, a kick that ends the kicked person's
view at once, and a direct message that reaches the other person's room list through the one
`myRooms` subscription, without a reload. Screenshots land in test-artifacts/browser-rooms."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

import httpx

from tests.support.graphql import CREATE_MESSAGE
from tests.support.processes import ROOT, SHARED_REDIS_URL, Server, migrate
from tests.support.waiting import until_sync

WEB = ROOT / "web"
BROWSER_TEST_SECONDS = 180
SSE_BROWSER_TEST_SECONDS = 300
ROOMS_BROWSER_TEST_SECONDS = 180


def test_two_users_chat_in_a_browser_and_a_page_resumes_after_a_restart(database_url: str) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"web-{uuid.uuid4().hex[:8]}:",
        "TYPING_SECONDS": "2",
    }
    pages_server = Server(env=env, workers=2).start()
    other_server = Server(env=env, workers=1).start()  # another dyno on the same database and Redis

    def restart(request: dict) -> dict:
        pages_server.stop()
        body = httpx.post(
            f"{other_server.url}/graphql",
            json={"query": CREATE_MESSAGE, "variables": {"room": request["room"], "body": request["body"]}},
            headers={"Authorization": f"Bearer {request['token']}"},
        ).json()
        assert "errors" not in body, body
        pages_server.start()  # the same port: the pages reconnect to it
        return {"posted": True}

    artifacts = ROOT / "test-artifacts" / "browser"
    try:
        run_page_test(
            "chat.browser.test.mjs",
            {"CHAT_SERVER_URL": pages_server.url, "CHAT_OTHER_URL": other_server.url, "CHAT_ARTIFACTS": str(artifacts)},
            BROWSER_TEST_SECONDS,
            restart,
        )
    finally:
        pages_server.stop()
        other_server.stop()
    screenshots = (
        "alice.png",
        "bob.png",
        "alice-after-restart.png",
        "alice-logged-in-history.png",
        "alice-sees-bob-leave.png",
    )
    for screenshot in screenshots:
        assert (artifacts / screenshot).is_file(), screenshot


def test_pages_on_sse_miss_nothing_and_see_nothing_twice_across_a_restart(database_url: str) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"sse-{uuid.uuid4().hex[:8]}:",
    }
    pages_server = Server(env=env, workers=2).start()
    other_server = Server(env=env, workers=1).start()  # another dyno on the same database and Redis
    artifacts = ROOT / "test-artifacts" / "browser-sse"
    try:
        run_page_test(
            "sse.browser.test.mjs",
            {"CHAT_SERVER_URL": pages_server.url, "CHAT_ARTIFACTS": str(artifacts)},
            SSE_BROWSER_TEST_SECONDS,
            lambda request: {
                "posted": _restart_while_posting(pages_server, other_server, request["room"], request["token"])
            },
        )
    finally:
        pages_server.stop()
        other_server.stop()
    for screenshot in ("alice-sse.png", "carol-auto-fallback.png", "alice-after-restart.png", "dave-after-restart.png"):
        assert (artifacts / screenshot).is_file(), screenshot


def test_private_rooms_invites_a_kick_and_a_direct_message_in_a_browser(postgres_url: str) -> None:
    """Issue 26 in the web client, against gunicorn with two workers: a PRIVATE room that a third
    person cannot find until invited (the link opened signed in and signed out), a promotion that
    shows live, a kick that ends the kicked person's view at once, and a direct message that
    reaches the other person's room list through `myRooms`, without a reload. On a database of
    its own: the public directory shows the 50 rooms with the most members, which the rooms of the
    suite's other tests would fill."""
    migrate({"DATABASE_URL": postgres_url})
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"rooms-{uuid.uuid4().hex[:8]}:",
    }
    server = Server(env=env, workers=2).start()
    artifacts = ROOT / "test-artifacts" / "browser-rooms"

    def no_restart(request: dict) -> dict:
        raise AssertionError(f"this page test asks for no restart: {request}")

    try:
        run_page_test(
            "rooms.browser.test.mjs",
            {"CHAT_SERVER_URL": server.url, "CHAT_ARTIFACTS": str(artifacts)},
            ROOMS_BROWSER_TEST_SECONDS,
            no_restart,
        )
    finally:
        server.stop()
    screenshots = (
        "carol-directory.png",
        "carol-not-found.png",
        "carol-invited.png",
        "dave-invited-after-sign-up.png",
        "carol-removed.png",
        "dave-banned.png",
        "alice-direct-arrived.png",
        "bob-direct.png",
    )
    for screenshot in screenshots:
        assert (artifacts / screenshot).is_file(), screenshot


def run_page_test(script: str, env: dict[str, str], seconds: float, restart: Callable[[dict], dict]) -> None:
    """Runs one of web/tests' files against the built client in Debian's Chromium. The file runs
    directly, not under `node --test`: the runner gives each file a child process whose stdin is
    not ours, and the page's test asks this one (a `PYTEST:` line) to restart its server, then
    reads the answer on stdin."""
    assert (WEB / "dist" / "index.html").is_file(), "run `make test`: it builds web/ first"
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    assert shutil.which(chromium), "run `make test`: it installs Debian's chromium"
    node = subprocess.Popen(
        ["node", "--test-reporter=spec", str(WEB / "tests" / script)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    watchdog = threading.Timer(seconds, node.kill)  # a hung page must not hang the run
    watchdog.start()
    try:
        assert node.stdout is not None and node.stdin is not None
        for line in node.stdout:
            output.append(line)
            if "PYTEST:" not in line:
                continue
            request = json.loads(line.split("PYTEST:", 1)[1])
            assert request["restart"]
            node.stdin.write(json.dumps(restart(request)) + "\n")
            node.stdin.flush()
        assert node.wait() == 0, "".join(output)
    finally:
        watchdog.cancel()
        if node.poll() is None:
            node.kill()
    text = "".join(output)
    assert "pass 1" in text and "fail 0" in text, text


def _restart_while_posting(pages_server: Server, other_server: Server, room: str, token: str) -> list[str]:
    """Restarts the pages' server (SIGTERM, then again on the same port) while messages go to the
    room through the other server, one after another: from before the SIGTERM until the server has
    exited (some land while its workers drain their streams), while it is down, and just after it
    is back. Returns their bodies in the order they were posted."""
    posted: list[str] = []

    def post(body: str) -> None:
        answer = httpx.post(
            f"{other_server.url}/graphql",
            json={"query": CREATE_MESSAGE, "variables": {"room": room, "body": body}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        assert "errors" not in answer, answer
        posted.append(body)

    stopped = threading.Event()
    failures: list[BaseException] = []

    def keep_posting() -> None:
        try:
            number = 0
            while not stopped.is_set() or number < 2:
                number += 1
                post(f"During {number} (server stopping)")
                time.sleep(0.25)  # paced, not a barrier: posts spread over the whole stop
        except BaseException as failure:
            failures.append(failure)

    poster = threading.Thread(target=keep_posting)
    poster.start()
    until_sync(lambda: len(posted) >= 2, "messages posted before the SIGTERM")
    pages_server.stop()  # SIGTERM, and wait until it has exited
    stopped.set()
    poster.join(30)
    assert not poster.is_alive() and not failures, failures
    for number in (1, 2, 3):
        post(f"Down {number} (server stopped)")
    pages_server.start()  # the same port: the pages' EventSources reconnect to it
    for number in (1, 2):
        post(f"Back {number} (server restarted)")
    return posted
