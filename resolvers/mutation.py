"""Mutation root: accounts, rooms, messages and what happens to them. Each change commits
before it is announced."""

import re
import unicodedata
from functools import partial
from urllib.parse import urlsplit

import emoji as emoji_library
from ariadne import MutationType
from graphql import GraphQLResolveInfo

from core.errors import BadUserInput, Forbidden, NotFound, Unauthenticated, format_error
from db import messages, read_state, rooms, users
from identity import auth
from identity.auth import Viewer
from resolvers import typing
from resolvers.context import (
    NOT_A_MEMBER,
    SIGN_IN_FIRST,
    client_address,
    db_of,
    loaders_of,
    require_member,
    require_viewer,
    services_of,
)
from resolvers.ids import decode_event_cursor, parse_id
from resolvers.sources import room_access
from resolvers.text_input import clean_body, clean_name, has_lone_surrogate, has_unstorable
from resolvers.topics import presence_topic, room_topic, topics_of

MAX_NAME = 100
MAX_EMAIL = 254
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
MAX_BODY = 4000
LEFT_THE_ROOM = "You left this room."

mutation_type = MutationType()


async def _act(info: GraphQLResolveInfo) -> Viewer:
    """The signed-in viewer, counted against RATE_LIMIT_ACTIONS: every change to a message, a
    reaction, a read position or a membership is a new event fanned out to the room, so each
    costs everyone in it. Checked before anything is read or written."""
    viewer = require_viewer(info)
    services = services_of(info)
    await services.limiter.check("actions", str(viewer.id), services.settings.rate_actions)
    return viewer


async def _signed_in(info: GraphQLResolveInfo, user: dict) -> dict:
    """A new token, expiring TOKEN_TTL_SECONDS from now unless use renews it (auth.py)."""
    token = auth.new_token()
    settings = services_of(info).settings
    expires_at = auth.TokenPolicy(settings.token_ttl_seconds).expiry()
    await users.prune_expired_tokens(db_of(info), user["id"])
    await users.create_token(db_of(info), user["id"], auth.token_digest(token), expires_at)
    return {"token": token, "user": {k: v for k, v in user.items() if k != "password_hash"}}


@mutation_type.field("signUp")
async def resolve_sign_up(_root: None, info: GraphQLResolveInfo, name: str, email: str, password: str) -> dict:
    services = services_of(info)
    await services.limiter.check("auth", client_address(info), services.settings.rate_auth)
    name = clean_name(name, "name", MAX_NAME)
    email = auth.normalize_email(email)
    local, _, domain = email.partition("@")
    if not local or "." not in domain or len(email) > MAX_EMAIL or " " in email or has_unstorable(email):
        raise BadUserInput("`email` is not a valid email address.", argument="email")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD or has_lone_surrogate(password):
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
    # And per account, whatever the address: guesses spread over many addresses add up. Keyed by
    # the email's digest (an unvalidated email can be long); counted before any hashing.
    await services.limiter.check("login-account", auth.email_hash(email), services.settings.rate_login_account)
    user = await users.user_with_password(services.db, auth.normalize_email(email))
    password_hash = user["password_hash"] if user else None
    if has_lone_surrogate(password):  # argon2 cannot hash it: no account has it
        raise Unauthenticated("Invalid email or password.")
    if not await auth.verify_password(password_hash, password) or user is None:
        raise Unauthenticated("Invalid email or password.")
    if auth.needs_rehash(user["password_hash"]):
        await users.set_password_hash(services.db, user["id"], await auth.hash_password(password))
    return await _signed_in(info, user)


@mutation_type.field("logOut")
async def resolve_log_out(_root: None, info: GraphQLResolveInfo, everywhere: bool = False) -> bool:
    """Every process hears the revocation: its cached viewer goes, its live subscriptions end.
    The token's SSE sessions go with it; `everywhere`: every token of the user goes.

    Not rate limited of its own: each call spends the token it is sent with (everywhere: all of
    them), and getting another is limited by sign-in's limits."""
    viewer = require_viewer(info)
    services = services_of(info)
    if everywhere:
        await services.revocations.revoke_user(viewer.id, partial(users.delete_tokens_of_user, services.db, viewer.id))
        return True
    digests = await users.token_and_sessions(services.db, viewer.token_hash)
    await services.revocations.revoke(digests, partial(users.delete_token, services.db, viewer.token_hash))
    return True


@mutation_type.field("createRoom")
async def resolve_create_room(_root: None, info: GraphQLResolveInfo, name: str) -> dict:
    viewer = require_viewer(info)
    services = services_of(info)
    await services.limiter.check("rooms", str(viewer.id), services.settings.rate_rooms)
    room, _joined = await rooms.create_room(services.db, clean_name(name, "name", MAX_NAME), viewer.user)
    return room  # nobody can be listening to a room that did not exist: nothing to announce


@mutation_type.field("joinRoom")
async def resolve_join_room(_root: None, info: GraphQLResolveInfo, room: str) -> dict:
    viewer = await _act(info)
    found = await loaders_of(info).rooms.load(parse_id(room, "Room", argument="room"))
    if found is None:
        raise NotFound("Room not found.")
    services = services_of(info)
    joined = await rooms.add_member(services.db, found, viewer.user)
    if joined is not None:
        await services.publisher.event(room_topic(found["id"]), joined)
        await services.presence.joined(viewer.id, found["id"])
    return found


@mutation_type.field("leaveRoom")
async def resolve_leave_room(_root: None, info: GraphQLResolveInfo, room: str) -> bool:
    viewer = await _act(info)
    services = services_of(info)
    found = await loaders_of(info).rooms.load(parse_id(room, "Room", argument="room"))
    if found is None:
        raise NotFound("Room not found.")
    left = await rooms.remove_member(services.db, found, viewer.user)
    if left is None:
        return False
    # The leaver's subscriptions end first (the room's log, typing, presence), so the others
    # alone hear of the leave; nor are they in the room's typing and presence lists any more.
    ended = format_error(Forbidden(LEFT_THE_ROOM))
    for topic in topics_of(found["id"]):
        await services.publisher.end(topic, user=viewer.id, error=ended)
    await services.publisher.event(room_topic(found["id"]), left)
    await typing.stopped(services, found["id"], viewer.id)
    await services.publisher.event(presence_topic(found["id"]), {"changed": True})
    return True


@mutation_type.field("createMessage")
async def resolve_create_message(_root: None, info: GraphQLResolveInfo, room: str, body: str) -> dict:
    viewer = require_viewer(info)
    services = services_of(info)
    await services.limiter.check("messages", str(viewer.id), services.settings.rate_messages)
    room_id = parse_id(room, "Room", argument="room")
    body = clean_body(body, "body", MAX_BODY)
    created = await messages.create_message(services.db, room_id, viewer.user, body)
    if created is None:
        await require_member(info, room_id)  # raises NOT_FOUND, as `room(id)` does
        raise Forbidden(NOT_A_MEMBER)  # left just now
    # Only after the commit: a subscriber never hears of a message it could not read back.
    await services.publisher.event(room_topic(room_id), created)
    await typing.stopped(services, room_id, viewer.id)  # posting ends typing, as in every chat
    return {**created["message"], "room": created["room"]}


def _refused(refusal: messages.Refused) -> Exception:
    if refusal.reason == "not_found":
        return NotFound("Message not found.")
    if refusal.reason == "not_sender":
        return Forbidden("Only its sender may change a message.")
    if refusal.reason == "not_member":
        return Forbidden(NOT_A_MEMBER)
    return BadUserInput("The message is deleted.", argument="id")


@mutation_type.field("editMessage")
async def resolve_edit_message(_root: None, info: GraphQLResolveInfo, id: str, body: str) -> dict:
    """Sender only; the message keeps its place in the history, with `editedAt` set."""
    viewer = await _act(info)
    services = services_of(info)
    body = clean_body(body, "body", MAX_BODY)
    try:
        edited = await messages.edit_message(services.db, parse_id(id, "Message"), viewer.user, body)
    except messages.Refused as refusal:
        raise _refused(refusal) from None
    await services.publisher.event(room_topic(edited["room"]["id"]), edited)
    return {**edited["message"], "room": edited["room"]}


@mutation_type.field("deleteMessage")
async def resolve_delete_message(_root: None, info: GraphQLResolveInfo, id: str) -> bool:
    """Sender only: true when it is deleted now, false when it was already."""
    viewer = await _act(info)
    services = services_of(info)
    try:
        deleted = await messages.delete_message(services.db, parse_id(id, "Message"), viewer.user)
    except messages.Refused as refusal:
        if refusal.reason == "deleted":
            return False
        raise _refused(refusal) from None
    await services.publisher.event(room_topic(deleted["room"]["id"]), deleted)
    return True


EMOJI_NAME = re.compile(r":[a-z0-9_+-]{1,40}:")


def _emoji(value: str) -> str:
    """One emoji (a single grapheme: a flag, a skin tone, a family all count as one) or a
    `:short_name:`."""
    value = value.strip()
    if emoji_library.is_emoji(value) or EMOJI_NAME.fullmatch(value):
        return value
    raise BadUserInput("`emoji` must be one emoji, or a :short_name:.", argument="emoji")


async def _reaction(info: GraphQLResolveInfo, message: str, emoji: str, added: bool) -> dict:
    viewer = await _act(info)
    services = services_of(info)
    message_id = parse_id(message, "Message", argument="message")
    try:
        changed = await messages.react(
            services.db,
            message_id,
            viewer.user,
            _emoji(emoji),
            added=added,
            max_distinct=services.settings.max_reactions,
        )
    except messages.Refused as refusal:
        raise _refused(refusal) from None
    except messages.TooManyReactions as too_many:
        raise BadUserInput(f"At most {too_many.limit} different reactions on a message.", argument="emoji") from None
    if changed is None:  # idempotent: nothing to announce
        found = await messages.message_with_sender(services.db, message_id)
        assert found is not None
        return found
    await services.publisher.event(room_topic(changed["room"]["id"]), changed)
    return {**changed["message"], "room": changed["room"]}


@mutation_type.field("react")
async def resolve_react(_root: None, info: GraphQLResolveInfo, message: str, emoji: str) -> dict:
    return await _reaction(info, message, emoji, added=True)


@mutation_type.field("unreact")
async def resolve_unreact(_root: None, info: GraphQLResolveInfo, message: str, emoji: str) -> dict:
    return await _reaction(info, message, emoji, added=False)


@mutation_type.field("markRead")
async def resolve_mark_read(_root: None, info: GraphQLResolveInfo, room: str, upTo: str) -> dict:
    """Never moves a read position backwards; the member's other devices see it live."""
    viewer = await _act(info)
    services = services_of(info)
    room_id = parse_id(room, "Room", argument="room")
    up_to = decode_event_cursor(upTo, room_id, argument="upTo")
    try:
        marked = await read_state.mark_read(services.db, room_id, viewer.user, up_to)
    except messages.Refused as refusal:
        raise (NotFound("Room not found.") if refusal.reason == "not_found" else Forbidden(NOT_A_MEMBER)) from None
    if marked is not None:
        await services.publisher.event(room_topic(room_id), marked)
    found = await loaders_of(info).rooms.load(room_id)
    assert found is not None
    return found


@mutation_type.field("typing")
async def resolve_typing(_root: None, info: GraphQLResolveInfo, room: str) -> bool:
    """A heartbeat while the user types (every few seconds): cheap, and rate limited."""
    viewer = require_viewer(info)
    services = services_of(info)
    await services.limiter.check("typing", str(viewer.id), services.settings.rate_typing)
    found = await room_access(services, viewer, parse_id(room, "Room", argument="room"))
    await typing.started(services, found["id"], viewer.id)
    return True


# Sessions and profiles (issue 24).

MAX_AVATAR_URL = 2048
_REFUSED_IN_URLS = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def _avatar_url(value: str) -> str | None:
    """An absolute http(s) URL of at most MAX_AVATAR_URL characters, or None for "" (unset)."""
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_AVATAR_URL:
        raise BadUserInput(f"`avatarUrl` must be at most {MAX_AVATAR_URL} characters.", argument="avatarUrl")
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or unicodedata.category(c) in _REFUSED_IN_URLS for c in value)
    ):
        raise BadUserInput("`avatarUrl` must be an http(s) URL.", argument="avatarUrl")
    return value


@mutation_type.field("changePassword")
async def resolve_change_password(_root: None, info: GraphQLResolveInfo, current: str, new: str) -> dict:
    """Limited as sign-in is: its `auth` limit keyed by the user, and the same per-account
    budget as logIn's guesses at this account's email (RATE_LIMIT_LOGIN_ACCOUNT), so a stolen
    token adds no guesses of its own; every token of the user is revoked, the one sent
    included, and their live subscriptions end; a fresh token comes back."""
    viewer = require_viewer(info)
    services = services_of(info)
    await services.limiter.check("auth", f"user:{viewer.id}", services.settings.rate_auth)
    if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
        raise BadUserInput(f"`new` must be {MIN_PASSWORD} to {MAX_PASSWORD} characters.", argument="new")
    user = await users.user_with_password_by_id(services.db, viewer.id)
    if user is None:
        raise Unauthenticated(SIGN_IN_FIRST)
    await services.limiter.check("login-account", user["email_hash"], services.settings.rate_login_account)
    stored = user["password_hash"] if len(current) <= MAX_PASSWORD else None  # a dummy hash, same time
    if not await auth.verify_password(stored, current):
        raise BadUserInput("`current` is not your password.", argument="current")
    new_hash = await auth.hash_password(new)
    # Postgres first (the new password, every token gone), then announced to every process.
    await services.revocations.revoke_user(viewer.id, partial(users.replace_password, services.db, viewer.id, new_hash))
    return await _signed_in(info, user)


@mutation_type.field("updateProfile")
async def resolve_update_profile(
    _root: None,
    info: GraphQLResolveInfo,
    name: str | None = None,
    avatarUrl: str | None = None,
    gravatar: bool | None = None,
) -> dict:
    """Only what is given changes; `avatarUrl: ""` removes the image; a name is checked as
    signUp's is. Rate limited
    (RATE_LIMIT_PROFILE, per user)."""
    viewer = require_viewer(info)
    services = services_of(info)
    await services.limiter.check("profile", str(viewer.id), services.settings.rate_profile)
    values: dict = {}
    if name is not None:
        values["name"] = clean_name(name, "name", MAX_NAME)
    if avatarUrl is not None:
        values["avatar_url"] = _avatar_url(avatarUrl)
    if gravatar is not None:
        values["gravatar"] = gravatar
    user = await users.update_profile(services.db, viewer.id, values)
    if user is None:
        raise Unauthenticated(SIGN_IN_FIRST)
    await services.revocations.forget_user(viewer.id)  # `me` is read from cached viewers
    return user
