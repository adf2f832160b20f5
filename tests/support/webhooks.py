"""A webhook receiver on loopback: a real HTTP server in a thread of the test process, recording
every POST it gets, answering as the test's `answer` says, and able to go down (its listening
socket closed: connections refused) and come back on the same port."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.processes import BASE_ENV, ROOT, free_port

HANG = "hang"  # an answer: hold the request past the sender's timeout, then answer 200


@dataclass
class Received:
    headers: Any  # the request's headers (http.client.HTTPMessage: case-insensitive)
    body: bytes
    payload: dict
    answer: int | str
    attempt: int  # 1 for the first request with this id
    arrived: float = field(default_factory=time.time)  # wall clock, as the payload's `at`
    answering: float | None = None  # when its answer began to be written (after a hang's wait)

    @property
    def room(self) -> str:
        return self.payload["room"]["id"]

    @property
    def seq(self) -> int:
        return seq_of(self.payload["cursor"])

    @property
    def acknowledged(self) -> bool:
        return isinstance(self.answer, int) and 200 <= self.answer < 300


def seq_of(cursor: str) -> int:
    """The seq in a room log's cursor (`event:<room>:<seq>`, base64)."""
    return int(base64.urlsafe_b64decode(cursor.encode()).decode().rsplit(":", 1)[1])


# Given the payload and which attempt this is for its id: a status, or HANG.
Answer = Callable[[dict, int], "int | str"]


@dataclass
class Receiver:
    answer: Answer = field(default=lambda _payload, _attempt: 200)
    hang_seconds: float = 3.0
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    _attempts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/chat"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                payload = json.loads(body)
                # The attempt's number and its place in `received` are taken together: a retry
                # arriving while an earlier attempt's thread waits for the lock is recorded after it.
                with receiver._lock:
                    attempt = receiver._attempts[payload["id"]] = receiver._attempts.get(payload["id"], 0) + 1
                    answer = receiver.answer(payload, attempt)
                    received = Received(self.headers, body, payload, answer, attempt)
                    receiver.received.append(received)
                if answer == HANG:
                    time.sleep(receiver.hang_seconds)
                    answer = 200
                received.answering = time.time()
                try:
                    self.send_response(int(answer))
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the sender gave up waiting (a hang), or stopped
                    pass

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Down: the listening socket closed (new connections are refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def acknowledged(self) -> dict[str, list[int]]:
        """Each room's seqs acknowledged, in the order they arrived."""
        rooms: dict[str, list[int]] = {}
        for request in self.snapshot():
            if request.acknowledged:
                rooms.setdefault(request.room, []).append(request.seq)
        return rooms


def readme_verify() -> Callable[..., bool]:
    """`verify` exactly as the README shows it (between its webhook-verify markers)."""
    readme = (Path(ROOT) / "README.md").read_text()
    found = re.search(r"<!-- webhook-verify -->\n```python\n(.*?)```\n<!-- /webhook-verify -->", readme, re.S)
    assert found, "the README's webhook-verify snippet"
    namespace: dict[str, Any] = {}
    exec(compile(found.group(1), "README.md:webhook-verify", "exec"), namespace)
    return namespace["verify"]


def start_worker_logged(env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    """The Procfile's optional `worker: python -m composition.webhooks`, its log lines gathered as
    they come (read to its end by a thread)."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "composition.webhooks"],
        cwd=ROOT,
        env={**os.environ, **BASE_ENV, **env},
        stderr=subprocess.STDOUT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert worker.stdout is not None
        for line in worker.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return worker, lines
