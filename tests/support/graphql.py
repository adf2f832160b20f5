"""A small GraphQL-over-HTTP client, and helpers for the steps every test repeats."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

SIGN_UP = """
mutation SignUp($name: String!, $email: String!, $password: String!) {
  signUp(name: $name, email: $email, password: $password) { token user { id name } }
}"""
CREATE_ROOM = """
mutation CreateRoom($name: String!, $kind: RoomKind) { createRoom(name: $name, kind: $kind) { id name } }"""
ADD_MEMBER = "mutation AddMember($room: ID!, $user: ID!) { addMember(room: $room, user: $user) { id } }"
JOIN_ROOM = "mutation JoinRoom($room: ID!) { joinRoom(room: $room) { id name } }"
CREATE_MESSAGE = """
mutation CreateMessage($room: ID!, $body: String!) {
  createMessage(room: $room, body: $body) { id body seq createdAt sender { id name } room { id } }
}"""


class GraphQLClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict:
        headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        response = self.http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
        assert response.headers["content-type"].startswith("application/json"), response.text
        return response.json()

    def data(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict:
        """The `data` of a request that must succeed."""
        body = self.post(query, variables, token, headers)
        assert "errors" not in body, body
        return body["data"]

    def error_codes(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> list[str]:
        body = self.post(query, variables, token)
        assert body.get("errors"), body
        return [error["extensions"]["code"] for error in body["errors"]]

    def close(self) -> None:
        self.http.close()


@dataclass
class Account:
    id: str
    name: str
    email: str
    password: str
    token: str


def sign_up(client: GraphQLClient, name: str = "user", headers: dict[str, str] | None = None) -> Account:
    email = f"{name.lower()}-{uuid.uuid4().hex[:10]}@example.com"
    password = "correct horse battery"
    payload = client.data(SIGN_UP, {"name": name, "email": email, "password": password}, headers=headers)["signUp"]
    return Account(payload["user"]["id"], name, email, password, payload["token"])


def create_room(client: GraphQLClient, account: Account, name: str = "room", kind: str = "PUBLIC") -> str:
    """A room `account` owns: PUBLIC unless asked (tests join it with `join_room`), though
    `createRoom` itself makes PRIVATE ones by default."""
    return client.data(CREATE_ROOM, {"name": name, "kind": kind}, account.token)["createRoom"]["id"]


def add_member(client: GraphQLClient, account: Account, room: str, user: str) -> None:
    client.data(ADD_MEMBER, {"room": room, "user": user}, account.token)


def join_room(client: GraphQLClient, account: Account, room: str) -> None:
    client.data(JOIN_ROOM, {"room": room}, account.token)


def post_message(client: GraphQLClient, account: Account, room: str, body: str) -> dict:
    return client.data(CREATE_MESSAGE, {"room": room, "body": body}, account.token)["createMessage"]


async def post_many(url: str, token: str, room: str, bodies: list[str], concurrency: int = 16) -> list[dict]:
    """Post every body (several at once, as busy rooms see); the created messages, in seq order."""
    headers = {"Authorization": f"Bearer {token}"}
    queue = list(reversed(bodies))
    created: list[dict] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                variables = {"room": room, "body": body}
                response = await http.post("/graphql", json={"query": CREATE_MESSAGE, "variables": variables})
                assert "errors" not in response.json(), response.text
                created.append(response.json()["data"]["createMessage"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(created, key=lambda message: message["seq"])
