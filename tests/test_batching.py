"""No N+1: senders, rooms and members are batched per request. Counted exactly, from the
statement log of a Postgres cluster of the test's own."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support.graphql import GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.processes import PrivatePostgres, Server, migrate

QUERY = """{
  rooms(first: 10) {
    name
    members(first: 20) { id name avatar }
    messages(first: 50) { edges { node { body sender { id name } room { id name } } } }
  }
}"""


@pytest.fixture(scope="module")
def logged() -> Iterator[tuple[PrivatePostgres, Server]]:
    postgres = PrivatePostgres(settings=("log_statement=all",)).start()
    env = {"DATABASE_URL": postgres.url, "REDIS_URL": ""}
    try:
        migrate(env)
        server = Server(env=env, workers=1).start()
        try:
            yield postgres, server
        finally:
            server.stop()
    finally:
        postgres.remove()


def statements_for(postgres: PrivatePostgres, client: GraphQLClient, token: str) -> list[str]:
    before = len(postgres.log())
    client.data(QUERY, token=token)
    # asyncpg runs our queries as prepared statements ("execute"); its pool's own resets are
    # plain "statement" lines.
    return re.findall(r"LOG:  execute [^:]+: (.*)", postgres.log()[before:])


def test_queries_do_not_grow_with_messages_senders_or_members(logged: tuple[PrivatePostgres, Server]) -> None:
    postgres, server = logged
    client = GraphQLClient(server.url)
    owner = sign_up(client, "Owner")
    rooms = [create_room(client, owner, f"room {i}") for i in range(3)]
    post_message(client, owner, rooms[0], "first")
    small = statements_for(postgres, client, owner.token)

    people = [sign_up(client, f"Person{i}") for i in range(6)]
    for room in rooms:
        for person in people:
            join_room(client, person, room)
            post_message(client, person, room, f"hello from {person.name}")
    large = statements_for(postgres, client, owner.token)

    assert len(large) == len(small), (small, large)
    # The rooms, every room's page, their senders, their rooms, every room's members. Not the
    # token's user: the worker remembers it from the requests before (viewer_cache).
    assert len(large) == 5, large
