"""Session fixtures: a fresh Postgres database (created and dropped here), a Redis channel
prefix of our own, and real gunicorn servers: on Postgres + Redis with two workers, and on
the embedded default (SQLite file, in-process broadcast)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.graphql import GraphQLClient
from tests.support.processes import (
    SHARED_REDIS_URL,
    Server,
    create_database,
    drop_database,
    migrate,
    unique_name,
)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = unique_name("chat_test")
    url = create_database(name)
    try:
        migrate({"DATABASE_URL": url})
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty Postgres database of the test's own, not migrated: what the migration tests
    upgrade step by step."""
    name = unique_name("chat_migrate")
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def channel_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="session")
def server(database_url: str, channel_prefix: str) -> Iterator[Server]:
    """Postgres + Redis, two workers: what a dyno runs."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": channel_prefix}
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded default: no DATABASE_URL, no REDIS_URL (a SQLite file in a temp dir)."""
    path = tmp_path_factory.mktemp("sqlite") / "chat.db"
    env = {"DATABASE_URL": f"sqlite:///{path}", "REDIS_URL": ""}
    migrate(env)
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def any_server(request: pytest.FixtureRequest) -> Server:
    """Each test using this runs against both backends."""
    return request.getfixturevalue("server" if request.param == "postgres" else "sqlite_server")


@pytest.fixture
def client(any_server: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(any_server.url)
    yield client
    client.close()
