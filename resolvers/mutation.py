"""Mutation root: accounts, rooms and messages. Each change commits before it is announced."""

from functools import partial

from ariadne import MutationType
from graphql import GraphQLResolveInfo

import auth
from db import messages, rooms, users
from errors import BadUserInput, Forbidden, NotFound, Unauthenticated, format_error
from resolvers.context import (
    NOT_A_MEMBER,
    client_address,
    db_of,
    loaders_of,
    require_member,
    require_viewer,
    services_of,
)
from resolvers.ids import parse_id
from resolvers.topics import room_topic

MAX_NAME = 100
MAX_EMAIL = 254
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
MAX_BODY = 4000
LEFT_THE_ROOM = "You left this room."

mutation_type = MutationType()


def _trimmed(value: str, argument: str, limit: int) -> str:
    value = value.strip()
    if not 1 <= len(value) <= limit:
        raise BadUserInput(f"`{argument}` must be 1 to {limit} characters.", argument=argument)
    return value


async def _signed_in(info: GraphQLResolveInfo, user: dict) -> dict:
    token = auth.new_token()
    await users.create_token(db_of(info), user["id"], auth.token_digest(token))
    return {"token": token, "user": {k: user[k] for k in ("id", "name", "email_hash")}}


@mutation_type.field("signUp")
async def resolve_sign_up(_root: None, info: GraphQLResolveInfo, name: str, email: str, password: str) -> dict:
    services = services_of(info)
    await services.limiter.check("auth", client_address(info), services.settings.rate_auth)
    name = _trimmed(name, "name", MAX_NAME)
    email = auth.normalize_email(email)
    local, _, domain = email.partition("@")
    if not local or "." not in domain or len(email) > MAX_EMAIL or " " in email:
        raise BadUserInput("`email` is not a valid email address.", argument="email")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadUserInput(f"`password` must be {MIN_PASSWORD} to {MAX_PASSWORD} characters.", argument="password")
    try:
        user = await users.create_user(
            services.db, name, email, auth.email_hash(email), await auth.hash_password(password)
        )
    except users.EmailTaken:
        raise BadUserInput("An account with this email already exists.", argument="email") from None
    return await _signed_in(info, user)


@mutation_type.field("logIn")
async def resolve_log_in(_root: None, info: GraphQLResolveInfo, email: str, password: str) -> dict:
    services = services_of(info)
    await services.limiter.check("auth", client_address(info), services.settings.rate_auth)
    user = await users.user_with_password(services.db, auth.normalize_email(email))
    password_hash = user["password_hash"] if user else None
    if not await auth.verify_password(password_hash, password) or user is None:
        raise Unauthenticated("Invalid email or password.")
    if auth.needs_rehash(user["password_hash"]):
        await users.set_password_hash(services.db, user["id"], await auth.hash_password(password))
    return await _signed_in(info, user)


@mutation_type.field("logOut")
async def resolve_log_out(_root: None, info: GraphQLResolveInfo) -> bool:
    """Every process hears the revocation: its cached viewer goes, its live subscriptions end."""
    viewer = require_viewer(info)
    services = services_of(info)
    await services.revocations.revoke(viewer.token_hash, partial(users.delete_token, services.db, viewer.token_hash))
    return True


@mutation_type.field("createRoom")
async def resolve_create_room(_root: None, info: GraphQLResolveInfo, name: str) -> dict:
    viewer = require_viewer(info)
    room, _joined = await rooms.create_room(db_of(info), _trimmed(name, "name", MAX_NAME), viewer.user)
    return room  # nobody can be listening to a room that did not exist: nothing to announce


@mutation_type.field("joinRoom")
async def resolve_join_room(_root: None, info: GraphQLResolveInfo, room: str) -> dict:
    viewer = require_viewer(info)
    found = await loaders_of(info).rooms.load(parse_id(room, "Room"))
    if found is None:
        raise NotFound("Room not found.")
    joined = await rooms.add_member(db_of(info), found, viewer.user)
    if joined is not None:
        await services_of(info).publisher.event(room_topic(found["id"]), joined)
    return found


@mutation_type.field("leaveRoom")
async def resolve_leave_room(_root: None, info: GraphQLResolveInfo, room: str) -> bool:
    viewer = require_viewer(info)
    services = services_of(info)
    found = await loaders_of(info).rooms.load(parse_id(room, "Room"))
    if found is None:
        raise NotFound("Room not found.")
    left = await rooms.remove_member(services.db, found, viewer.user)
    if left is None:
        return False
    topic = room_topic(found["id"])
    # The leaver's subscriptions end first, so the others alone hear of the leave.
    ended = format_error(Forbidden(LEFT_THE_ROOM))
    await services.publisher.end(topic, user=viewer.id, error=ended)
    await services.publisher.event(topic, left)
    return True


@mutation_type.field("createMessage")
async def resolve_create_message(_root: None, info: GraphQLResolveInfo, room: str, body: str) -> dict:
    viewer = require_viewer(info)
    services = services_of(info)
    await services.limiter.check("messages", str(viewer.id), services.settings.rate_messages)
    room_id = parse_id(room, "Room")
    body = _trimmed(body, "body", MAX_BODY)
    created = await messages.create_message(services.db, room_id, viewer.user, body)
    if created is None:
        await require_member(info, room_id)  # raises NOT_FOUND or FORBIDDEN, as for any room
        raise Forbidden(NOT_A_MEMBER)  # left just now
    # Only after the commit: a subscriber never hears of a message it could not read back.
    await services.publisher.event(room_topic(room_id), created)
    return {**created["message"], "room": created["room"]}
