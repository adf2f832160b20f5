"""Mutation root: accounts, rooms and messages."""

from functools import partial

from ariadne import MutationType
from graphql import GraphQLResolveInfo

import auth
from db import messages, rooms, users
from errors import BadUserInput, NotFound, Unauthenticated
from limits.rate import limiter
from realtime import events
from realtime.revocations import revocations
from resolvers.context import client_address, loaders_of, require_member, require_viewer
from resolvers.ids import parse_id
from settings import settings

MAX_NAME = 100
MAX_EMAIL = 254
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
MAX_BODY = 4000

mutation_type = MutationType()


def _trimmed(value: str, argument: str, limit: int) -> str:
    value = value.strip()
    if not 1 <= len(value) <= limit:
        raise BadUserInput(f"`{argument}` must be 1 to {limit} characters.", argument=argument)
    return value


async def _signed_in(user: dict) -> dict:
    token = auth.new_token()
    await users.create_token(user["id"], auth.token_digest(token))
    return {"token": token, "user": {k: user[k] for k in ("id", "name", "email_hash")}}


@mutation_type.field("signUp")
async def resolve_sign_up(_root: None, info: GraphQLResolveInfo, name: str, email: str, password: str) -> dict:
    await limiter.check("auth", client_address(info), settings.rate_auth)
    name = _trimmed(name, "name", MAX_NAME)
    email = auth.normalize_email(email)
    local, _, domain = email.partition("@")
    if not local or "." not in domain or len(email) > MAX_EMAIL or " " in email:
        raise BadUserInput("`email` is not a valid email address.", argument="email")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadUserInput(f"`password` must be {MIN_PASSWORD} to {MAX_PASSWORD} characters.", argument="password")
    try:
        user = await users.create_user(name, email, auth.email_hash(email), await auth.hash_password(password))
    except users.EmailTaken:
        raise BadUserInput("An account with this email already exists.", argument="email") from None
    return await _signed_in(user)


@mutation_type.field("logIn")
async def resolve_log_in(_root: None, info: GraphQLResolveInfo, email: str, password: str) -> dict:
    await limiter.check("auth", client_address(info), settings.rate_auth)
    user = await users.user_with_password(auth.normalize_email(email))
    password_hash = user["password_hash"] if user else None
    if not await auth.verify_password(password_hash, password) or user is None:
        raise Unauthenticated("Invalid email or password.")
    if auth.needs_rehash(user["password_hash"]):
        await users.set_password_hash(user["id"], await auth.hash_password(password))
    return await _signed_in(user)


@mutation_type.field("logOut")
async def resolve_log_out(_root: None, info: GraphQLResolveInfo) -> bool:
    viewer = require_viewer(info)
    await revocations.revoke(viewer.token_hash, partial(users.delete_token, viewer.token_hash))
    await events.publish_token_revoked(await rooms.rooms_of_user(viewer.id), viewer.token_hash)
    return True


@mutation_type.field("createRoom")
async def resolve_create_room(_root: None, info: GraphQLResolveInfo, name: str) -> dict:
    viewer = require_viewer(info)
    return await rooms.create_room(_trimmed(name, "name", MAX_NAME), viewer.id)


@mutation_type.field("joinRoom")
async def resolve_join_room(_root: None, info: GraphQLResolveInfo, room: str) -> dict:
    viewer = require_viewer(info)
    found = await loaders_of(info).rooms.load(parse_id(room, "Room"))
    if found is None:
        raise NotFound("Room not found.")
    await rooms.add_member(found["id"], viewer.id)
    return found


@mutation_type.field("leaveRoom")
async def resolve_leave_room(_root: None, info: GraphQLResolveInfo, room: str) -> bool:
    viewer = require_viewer(info)
    room_id = parse_id(room, "Room")
    if await rooms.room_by_id(room_id) is None:
        raise NotFound("Room not found.")
    left = await rooms.remove_member(room_id, viewer.id)
    if left:
        await events.publish_member_left(room_id, viewer.id)
    return left


@mutation_type.field("createMessage")
async def resolve_create_message(_root: None, info: GraphQLResolveInfo, room: str, body: str) -> dict:
    viewer = require_viewer(info)
    await limiter.check("messages", str(viewer.id), settings.rate_messages)
    found = await require_member(info, parse_id(room, "Room"))
    body = _trimmed(body, "body", MAX_BODY)
    message = await messages.create_message(found["id"], viewer.id, body)
    # Only after the commit: a subscriber never hears of a message it could not read back.
    await events.publish_message(message, room=found, sender=viewer.user)
    return message
