"""Messages over HTTP: validation, per-room sequence numbers under concurrency, and paging
(newest first) with opaque cursors."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.graphql import CREATE_MESSAGE, GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.processes import Server

PAGE = """
query($id: ID!, $first: Int, $after: String) {
  room(id: $id) {
    messages(first: $first, after: $after) {
      edges { cursor node { id seq body sender { id name } room { id name } createdAt } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""


def page(client: GraphQLClient, token: str, room: str, first: int | None = None, after: str | None = None) -> dict:
    variables: dict = {"id": room, "after": after}
    if first is not None:
        variables["first"] = first
    return client.data(PAGE, variables, token=token)["room"]["messages"]


def test_bodies_are_trimmed_and_bounded(client: GraphQLClient) -> None:
    ann = sign_up(client, "Ann")
    room = create_room(client, ann)
    assert post_message(client, ann, room, "\n  hello \t")["body"] == "hello"
    assert len(post_message(client, ann, room, "y" * 4000)["body"]) == 4000
    for body in ("", "   \n ", "z" * 4001):
        error = client.post(CREATE_MESSAGE, {"room": room, "body": body}, token=ann.token)["errors"][0]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "body"}


def test_a_message_names_its_sender_room_and_time(client: GraphQLClient) -> None:
    ann = sign_up(client, "Ann")
    room = create_room(client, ann, "lobby")
    message = post_message(client, ann, room, "hi")
    assert message["sender"] == {"id": ann.id, "name": "Ann"}
    assert message["room"] == {"id": room}
    assert message["createdAt"].endswith("+00:00")


def test_sequence_numbers_are_per_room_and_gap_free(client: GraphQLClient) -> None:
    ann = sign_up(client, "Ann")
    one, two = create_room(client, ann, "one"), create_room(client, ann, "two")
    seqs = [post_message(client, ann, room, "m")["seq"] for room in (one, two, one, one, two)]
    assert seqs == [1, 1, 2, 3, 2]


def test_fifty_concurrent_posts_get_fifty_consecutive_numbers(any_server: Server) -> None:
    client = GraphQLClient(any_server.url)
    posters = [sign_up(client, f"Poster{i}") for i in range(5)]
    room = create_room(client, posters[0])
    for poster in posters[1:]:
        join_room(client, poster, room)

    async def post_all() -> list[int]:
        async def post(i: int) -> int:
            poster = posters[i % len(posters)]
            async with httpx.AsyncClient(base_url=any_server.url, timeout=60) as http:  # a connection each
                response = await http.post(
                    "/graphql",
                    json={"query": CREATE_MESSAGE, "variables": {"room": room, "body": f"concurrent {i}"}},
                    headers={"Authorization": f"Bearer {poster.token}"},
                )
            body = response.json()
            assert "errors" not in body, body
            return body["data"]["createMessage"]["seq"]

        return await asyncio.gather(*(post(i) for i in range(50)))

    seqs = asyncio.run(post_all())
    assert sorted(seqs) == list(range(1, 51))
    history = page(client, posters[0].token, room, first=100)
    assert [edge["node"]["seq"] for edge in history["edges"]] == list(range(50, 0, -1))
    assert sorted(edge["node"]["body"] for edge in history["edges"]) == sorted(f"concurrent {i}" for i in range(50))


def test_paging_walks_newest_first_through_every_message_once(client: GraphQLClient) -> None:
    ann = sign_up(client, "Ann")
    room = create_room(client, ann)
    for i in range(1, 8):
        post_message(client, ann, room, f"m{i}")
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        result = page(client, ann.token, room, first=3, after=after)
        seen += [edge["node"]["seq"] for edge in result["edges"]]
        assert result["pageInfo"]["endCursor"] == result["edges"][-1]["cursor"]
        pages += 1
        if not result["pageInfo"]["hasNextPage"]:
            break
        after = result["pageInfo"]["endCursor"]
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    assert pages == 3


def test_page_edges(client: GraphQLClient) -> None:
    ann = sign_up(client, "Ann")
    empty = create_room(client, ann)
    assert page(client, ann.token, empty) == {"edges": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}
    room = create_room(client, ann)
    for i in range(1, 5):
        post_message(client, ann, room, f"m{i}")
    exact = page(client, ann.token, room, first=4)
    assert len(exact["edges"]) == 4 and exact["pageInfo"]["hasNextPage"] is False
    nothing = page(client, ann.token, room, first=0)
    assert nothing["edges"] == [] and nothing["pageInfo"]["hasNextPage"] is True
    assert len(page(client, ann.token, room)["edges"]) == 4  # default first: 50
    assert len(page(client, ann.token, room, first=100)["edges"]) == 4
    last = page(client, ann.token, room, first=1, after=exact["edges"][-1]["cursor"])
    assert last == {"edges": [], "pageInfo": {"hasNextPage": False, "endCursor": exact["edges"][-1]["cursor"]}}


@pytest.mark.parametrize(("first", "after"), [(101, None), (-1, None), (10, "garbage"), (10, "c2VxOg==")])
def test_bad_paging_arguments_are_refused(client: GraphQLClient, first: int, after: str | None) -> None:
    ann = sign_up(client, "Ann")
    room = create_room(client, ann)
    body = client.post(PAGE, {"id": room, "first": first, "after": after}, token=ann.token)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
