from tests.support.graphql import GraphQLClient, create_room, post_message, sign_up


def test_sign_up_create_room_and_post(client: GraphQLClient) -> None:
    alice = sign_up(client, "Alice")
    room = create_room(client, alice, "general")
    message = post_message(client, alice, room, "  hello  ")
    assert message["body"] == "hello"
    assert message["seq"] == 1
    assert client.data("{ me { id name } }", token=alice.token)["me"] == {"id": alice.id, "name": "Alice"}
