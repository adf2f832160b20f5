"""The Procfile's web command as Heroku runs it: $PORT on all interfaces, workers from
WEB_CONCURRENCY, GUNICORN_CMD_ARGS on top, and worker recycling spread out by jitter."""

from __future__ import annotations

import re
import uuid

import httpx

from tests.support.processes import SHARED_REDIS_URL, Server
from tests.support.wsclient import worker_pids


def redis_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"t-{uuid.uuid4().hex[:8]}:",
        **extra,
    }


def test_binds_port_on_all_interfaces_with_web_concurrency_workers(database_url: str) -> None:
    server = Server(env=redis_env(database_url), workers=3).start()
    try:
        assert f"Listening at: http://0.0.0.0:{server.port}" in server.log()
        assert server.process is not None
        assert len(worker_pids(server.process.pid)) == 3
        assert "uvicorn.workers" not in server.log()  # the maintained worker class, no deprecation warning
    finally:
        server.stop()


def test_one_worker_without_redis_whatever_web_concurrency_says(tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("one") / "chat.db"
    env = {"DATABASE_URL": f"sqlite:///{path}", "REDIS_URL": ""}
    from tests.support.processes import migrate

    migrate(env)
    server = Server(env=env, workers=4).start()
    try:
        assert server.process is not None
        assert len(worker_pids(server.process.pid)) == 1
    finally:
        server.stop()


def test_gunicorn_cmd_args_still_override_the_config(database_url: str) -> None:
    server = Server(env=redis_env(database_url, GUNICORN_CMD_ARGS="--workers 3"), workers=1).start()
    try:
        assert server.process is not None
        assert len(worker_pids(server.process.pid)) == 3
    finally:
        server.stop()


async def test_recycling_is_spread_out_and_no_request_fails(database_url: str) -> None:
    server = Server(env=redis_env(database_url, MAX_REQUESTS="40", MAX_REQUESTS_JITTER="30"), workers=3).start()
    assert server.process is not None
    original = {str(pid) for pid in worker_pids(server.process.pid)}
    failures = 0
    try:
        # A connection per request: reusing a kept-alive connection that a recycling worker closes
        # at that very moment is HTTP/1.1's own race, not a failure of recycling.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
            for _ in range(400):
                response = await http.post("/graphql", json={"query": "{ me { id } }"})
                if response.status_code != 200 or response.json() != {"data": {"me": None}}:
                    failures += 1
    finally:
        server.stop()
    # The workers' own log, in the order they wrote it: when each stopped, and what was served
    # meanwhile. (When the master reaps the exited workers is no measure: it may reap several at once.)
    lines = server.log().splitlines()
    limit_line = re.compile(r"\[(\d+)\] \[INFO\] Maximum request limit of (\d+)")
    limits_hit = {m.group(1): int(m.group(2)) for line in lines if (m := limit_line.search(line))}
    stops = [i for i, line in enumerate(lines) if (m := limit_line.search(line)) and m.group(1) in original]
    served_between = sum('"POST /graphql HTTP/1.1" 200' in line for line in lines[stops[0] : stops[-1]]) if stops else 0
    print(f"workers' limits {limits_hit}; requests served between the originals' first and last stop: {served_between}")
    assert failures == 0
    assert len(limits_hit) >= 3
    assert all(40 <= limit <= 70 for limit in limits_hit.values())
    assert len(set(limits_hit.values())) >= 2  # jitter: the workers' limits differ
    assert len(stops) == 3  # every original worker was recycled
    assert served_between > 0  # never every worker recycled at the same moment: others kept serving
