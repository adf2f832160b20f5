"""The host's server (issue 27): what `Authorization: Bearer <SERVICE_KEY>` may do over plain
HTTP, and the fields that show the host's ids.

Who the service is is decided in identity.viewers (a SERVICE viewer, acting as the service's own
user, db.users.service_user); what it may do in rooms in resolvers.access. Every field here
but `createRoom`'s ordinary path and the three type fields is the service's alone: a user gets
FORBIDDEN (`access.require_service`). The service is trusted, so it is not rate limited, but
every list it sends is bounded (MAX_BATCH) and every id it names is checked: an unknown
externalId is NOT_FOUND.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import partial
from typing import Any

from ariadne import MutationType, ObjectType, QueryType
from graphql import GraphQLResolveInfo

from core.errors import BadUserInput, Forbidden, NotFound
from db import messages, rooms
from db import users as user_rows
from db.records import now
from identity import auth
from resolvers import access, room_changes
from resolvers.context import loaders_of, require_viewer, services_of, viewer_of
from resolvers.ids import parse_id
from resolvers.mutation import (
    MAX_BODY,
    MAX_NAME,
    MAX_TOPIC,
    REMOVED,
    _avatar_url,
    _kind,
    _removed,
    announce_joined,
    create_user_room,
    published_deletions,
)
from resolvers.services import Services
from resolvers.text_input import clean_body, clean_name, clean_topic
from resolvers.topics import room_topic

# The most users one upsertUsers takes, and members one createRoom adds.
MAX_BATCH = 100
MAX_EXTERNAL_ID = auth.MAX_EXTERNAL_ID
MIN_TOKEN_TTL, MAX_TOKEN_TTL = 60, 30 * 24 * 3600
USER_NOT_FOUND = "User not found."
DELETED = "Your account was deleted."

service_mutations = MutationType()
service_queries = QueryType()
service_user_type = ObjectType("User")
service_room_type = ObjectType("Room")
service_message_type = ObjectType("Message")


def external_id(value: Any, argument: str = "externalId") -> str:
    """A host's id: 1 to 255 printable characters (so never the service user's own)."""
    text = str(value)
    if not 0 < len(text) <= MAX_EXTERNAL_ID or not text.isprintable():
        raise BadUserInput(f"`{argument}` must be 1 to {MAX_EXTERNAL_ID} printable characters.", argument=argument)
    return text


async def _host_user(info: GraphQLResolveInfo, value: Any) -> dict:
    found = await user_rows.by_external_id(services_of(info).db, external_id(value))
    if found is None:
        raise NotFound(USER_NOT_FOUND)
    return found


# --- The type fields: the host's ids, to whom may see them -------------------------------------


@service_user_type.field("externalId")
async def resolve_user_external_id(user: dict, info: GraphQLResolveInfo) -> str | None:
    """The service and the user themselves see it; the service's own user has none."""
    viewer = viewer_of(info)
    if viewer is None or not (access.is_service(viewer) or viewer.id == int(user["id"])):
        return None
    value = user["external_id"] if "external_id" in user else await _loaded_external_id(info, int(user["id"]))
    return value if value is not None and value.isprintable() else None  # the service's, a tombstone


async def _loaded_external_id(info: GraphQLResolveInfo, user_id: int) -> str | None:
    found = await loaders_of(info).users.load(user_id)
    return found.get("external_id") if found is not None else None


@service_room_type.field("externalId")
async def resolve_room_external_id(room: dict, info: GraphQLResolveInfo) -> str | None:
    """The service and the room's members see it."""
    viewer = require_viewer(info)
    if not access.is_service(viewer) and await access.role_in(room, info) is None:
        return None
    if "external_id" in room:
        return room["external_id"]
    found = await rooms.room_by_id(services_of(info).db, int(room["id"]))
    return found["external_id"] if found is not None else None


@service_message_type.field("kind")
def resolve_message_kind(message: dict, _info: GraphQLResolveInfo) -> str:
    return message.get("kind") or messages.USER


# --- Queries -----------------------------------------------------------------------------------


@service_queries.field("roomByExternalId")
async def resolve_room_by_external_id(_root: None, info: GraphQLResolveInfo, externalId: str) -> dict:
    access.require_service(info)
    room = await rooms.room_by_external_id(services_of(info).db, external_id(externalId))
    if room is None:
        raise NotFound(access.ROOM_NOT_FOUND)
    return access.with_role(room, rooms.OWNER)


@service_queries.field("userByExternalId")
async def resolve_user_by_external_id(_root: None, info: GraphQLResolveInfo, externalId: str) -> dict:
    access.require_service(info)
    return await _host_user(info, externalId)


# --- Users and their tokens ----------------------------------------------------------------------


@service_mutations.field("upsertUsers")
async def resolve_upsert_users(_root: None, info: GraphQLResolveInfo, users: list[dict]) -> list[dict]:
    """Each made on first sight, updated when its name or picture differ (no write otherwise);
    one call names a user once."""
    access.require_service(info)
    if not 0 < len(users) <= MAX_BATCH:
        raise BadUserInput(f"`users` takes 1 to {MAX_BATCH} users a call.", argument="users")
    cleaned = [
        (
            external_id(user["externalId"], "users"),
            clean_name(user["name"], "users", MAX_NAME),
            _avatar_url(user["avatarUrl"]) if user.get("avatarUrl") else None,
        )
        for user in users
    ]
    if len({ids for ids, _, _ in cleaned}) != len(cleaned):
        raise BadUserInput("`users` names someone twice.", argument="users")
    services = services_of(info)
    upserted = []
    for ids, name, avatar in cleaned:
        before = await user_rows.by_external_id(services.db, ids)
        row = await user_rows.upsert_external(services.db, ids, name, avatar)
        if before is not None and (before["name"], before["avatar_url"]) != (name, avatar):
            await services.revocations.forget_user(int(row["id"]))  # cached viewers show the old profile
        upserted.append(row)
    return upserted


@service_mutations.field("issueToken")
async def resolve_issue_token(_root: None, info: GraphQLResolveInfo, externalId: str, ttlSeconds: int = 3600) -> str:
    """A token of ours for the user (NOT_FOUND for an unknown one): it lives `ttlSeconds` and is
    never renewed by use."""
    access.require_service(info)
    if not MIN_TOKEN_TTL <= ttlSeconds <= MAX_TOKEN_TTL:
        raise BadUserInput(f"`ttlSeconds` is {MIN_TOKEN_TTL} to {MAX_TOKEN_TTL}.", argument="ttlSeconds")
    user = await _host_user(info, externalId)
    token = auth.new_token()
    expires_at = now() + timedelta(seconds=ttlSeconds)
    await user_rows.issue_token(services_of(info).db, int(user["id"]), auth.token_digest(token), expires_at)
    return token


@service_mutations.field("revokeTokens")
async def resolve_revoke_tokens(_root: None, info: GraphQLResolveInfo, externalId: str) -> int:
    """As logOut(everywhere: true) for the user: every token and session deleted, the host's
    JWTs issued until now refused, every process told, their live subscriptions ended. The
    number of tokens and sessions (host JWTs' included) it deleted."""
    access.require_service(info)
    services = services_of(info)
    user = await _host_user(info, externalId)
    user_id = int(user["id"])
    count = await user_rows.count_tokens_of_user(services.db, user_id)
    await services.revocations.revoke_user(user_id, partial(user_rows.revoke_jwts, services.db, user_id))
    return count


@service_mutations.field("deleteUser")
async def resolve_delete_user(_root: None, info: GraphQLResolveInfo, externalId: str, erase: bool = False) -> bool:
    """The user leaves every room (their subscriptions to each end; a last OWNER hands the room
    on), every token goes (live connections end), and what is kept of them is a nameless row
    their messages point at.

    With `erase`, those messages are then emptied and deleted as a moderator's deleteMessage
    deletes one: each gets its MessageDeleted event in its room's log, published live and
    delivered by webhook (`message.deleted`), `by` the service's own user (db.users.service_user,
    "System": the service did it; the erased user's row is nameless and no longer a member).
    ERASE_BATCH messages a transaction, each batch published after its commit, so no
    transaction and no publish grows with the user's history. True once every message is
    logged (each event then reaches webhooks at least once, and live subscribers or their
    resume): the erasure is not left to a background task that a crash would lose after the
    answer. False when ERASE_SECONDS ran out first (at least one batch is erased per call, so
    calls in a row finish it), answered before the router's 30 s cut an answer off. An answer
    that never came (a timeout, a crash midway) is made good by asking again: `erase` on an id
    whose user is already deleted erases what is left of their messages. Such a call may come
    while the first still runs: the two take their batches in turn (db.messages.erase_next), so
    nothing is erased twice and either answers true only once every message is a logged
    tombstone, whichever of them erased it (the other may still be publishing its last batch;
    its events are committed, so webhooks and resumes have them)."""
    access.require_service(info)
    services = services_of(info)
    viewer = require_viewer(info)
    found = await user_rows.by_external_id(services.db, external_id(externalId))
    if found is None:
        gone = await user_rows.deleted_user(services.db, externalId) if erase else None
        if gone is None:
            raise NotFound(USER_NOT_FOUND)
        return await _erase(services, int(gone["id"]), viewer.user)
    user_id = int(found["id"])
    for room_id, events in await rooms.remove_user_everywhere(services.db, found):
        if events:
            await _removed(services, room_id, user_id, events, Forbidden(REMOVED))
    delete = partial(user_rows.delete_user, services.db, user_id, found["external_id"])
    await services.revocations.revoke_user(user_id, delete)
    return await _erase(services, user_id, viewer.user) if erase else True


async def _erase(services: Services, user_id: int, by: dict) -> bool:
    """Every message of the user not deleted yet, room by room, a batch at a time, logged and
    then published as deleteMessage's are (resolvers.mutation.published_deletions). False when
    ERASE_SECONDS ran out after a batch: the rest is left for the next call."""
    deadline = time.monotonic() + services.settings.erase_seconds
    for room_id in await messages.rooms_with_messages_of(services.db, user_id):
        # Until a batch finds none: a short one may only mean a moderator deleted some of it.
        while deleted := await messages.erase_next(services.db, room_id, user_id, by, messages.ERASE_BATCH):
            await published_deletions(services, room_id, deleted)
            if time.monotonic() >= deadline:
                return False
    return True


# --- Rooms -------------------------------------------------------------------------------------


@service_mutations.field("createRoom")
async def resolve_create_room(
    _root: None,
    info: GraphQLResolveInfo,
    name: str,
    kind: str = rooms.PRIVATE,
    topic: str | None = None,
    externalId: str | None = None,
    owner: str | None = None,
    members: list[str] | None = None,
) -> dict:
    """A user's createRoom (resolvers.mutation), or the service's: under its externalId
    (idempotent: the room that has it already comes back, unchanged), owned by `owner` (else
    the first of `members`), with `members` in it from the start, in one transaction."""
    if externalId is None and owner is None and members is None:
        if access.service_asks(info):
            raise BadUserInput("The service names the room's `owner` (or `members`).", argument="owner")
        return await create_user_room(info, name, kind, topic)
    access.require_service(info)
    services = services_of(info)
    ids = external_id(externalId) if externalId is not None else None
    if ids is not None:
        existing = await rooms.room_by_external_id(services.db, ids)
        if existing is not None:
            return access.with_role(existing, rooms.OWNER)
    name = clean_name(name, "name", MAX_NAME)
    kind = _kind(kind)
    cleaned_topic = clean_topic(topic, "topic", MAX_TOPIC) if topic is not None else None
    if members is not None and len(members) > MAX_BATCH:
        raise BadUserInput(f"`members` takes up to {MAX_BATCH} users.", argument="members")
    member_ids = [parse_id(member, "User", argument="members") for member in members or []]
    owner_id = parse_id(owner, "User", argument="owner") if owner is not None else None
    if owner_id is None and not member_ids:
        raise BadUserInput("Name the room's `owner` (or `members`).", argument="owner")
    wanted = list(dict.fromkeys([*([owner_id] if owner_id is not None else []), *member_ids]))
    found = await loaders_of(info).users.load_many(wanted)
    if any(user is None for user in found):
        raise NotFound(USER_NOT_FOUND)
    creator, *others = found
    service = require_viewer(info).user
    try:
        room, joined = await rooms.create_room(
            services.db, name, creator, kind=kind, topic=cleaned_topic, external_id=ids, members=others, by=service
        )
    except rooms.ExternalIdTaken:
        assert ids is not None
        raced = await rooms.room_by_external_id(services.db, ids)  # the concurrent create that won
        if raced is None:
            raise
        return access.with_role(raced, rooms.OWNER)
    await announce_joined(services, room["id"], joined, [user["id"] for user in found])
    return access.with_role(room, rooms.OWNER)


@service_mutations.field("postSystemMessage")
async def resolve_post_system_message(_root: None, info: GraphQLResolveInfo, room: str, body: str) -> dict:
    """A SYSTEM message in any room, published and counted as any message is."""
    viewer = access.require_service(info)
    services = services_of(info)
    room_id = parse_id(room, "Room", argument="room")
    body = clean_body(body, "body", MAX_BODY)
    created = await messages.create_system_message(services.db, room_id, viewer.user, body)
    if created is None:
        raise NotFound(access.ROOM_NOT_FOUND)
    await services.publisher.event(room_topic(room_id), created)
    await room_changes.updated(services, room_id)
    return {**created["message"], "room": access.vouched(created["room"])}
