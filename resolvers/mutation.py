"""Mutation root: accounts, rooms, messages and what happens to them. Each change commits
before it is announced."""

import re
import unicodedata
from datetime import timedelta
from functools import partial
from urllib.parse import urlsplit

import emoji as emoji_library
from ariadne import MutationType
from graphql import GraphQLError, GraphQLResolveInfo

from core.errors import BadUserInput, Forbidden, NotFound, Unauthenticated, format_error
from db import messages, read_state, room_events, rooms, users
from db.records import now
from identity import auth
from identity.auth import Viewer
from resolvers import access, room_changes, typing
from resolvers.context import (
    NOT_A_MEMBER,
    SIGN_IN_FIRST,
    client_address,
    db_of,
    loaders_of,
    require_viewer,
    services_of,
)
from resolvers.ids import decode_event_cursor, parse_id
from resolvers.services import Services
from resolvers.sources import room_access
from resolvers.text_input import clean_body, clean_name, clean_topic, has_lone_surrogate, has_unstorable
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
    if not access.is_service(viewer):  # the host's server is trusted; its lists are bounded
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


HOST_ACCOUNTS = "Accounts come from the host here (ACCOUNTS=host): sign in with its token."
NO_PASSWORD = "Your account has no password here: it signs in with the host's token."


def password_accounts(services: Services) -> None:
    """signUp, logIn and changePassword exist only with our own accounts (ACCOUNTS=password)."""
    if services.settings.accounts == "host":
        raise Forbidden(HOST_ACCOUNTS)


@mutation_type.field("signUp")
async def resolve_sign_up(_root: None, info: GraphQLResolveInfo, name: str, email: str, password: str) -> dict:
    services = services_of(info)
    password_accounts(services)
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
    password_accounts(services)
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
        # A host JWT cannot be deleted: those issued until now are refused from now on.
        await services.revocations.revoke_user(viewer.id, partial(users.revoke_jwts, services.db, viewer.id))
        return True
    digests = await users.token_and_sessions(services.db, viewer.token_hash)
    await services.revocations.revoke(digests, partial(users.delete_token, services.db, viewer.token_hash))
    return True


ROOM_KINDS = (rooms.PUBLIC, rooms.PRIVATE)  # DIRECT rooms come from openDirect alone
MAX_TOPIC = 500
MAX_MUTE_MINUTES = 366 * 24 * 60
BANNED = "You are banned from this room."
REMOVED = "You were removed from this room."


def _kind(kind: str, argument: str = "kind") -> str:
    if kind not in ROOM_KINDS:
        raise BadUserInput(
            "A room's kind is PUBLIC or PRIVATE here (DIRECT rooms are opened, not made).", argument=argument
        )
    return kind


async def create_user_room(info: GraphQLResolveInfo, name: str, kind: str, topic: str | None) -> dict:
    """A user's createRoom (resolvers.service binds the field: the service's has more): the
    creator is its OWNER; PRIVATE unless asked."""
    viewer = require_viewer(info)
    services = services_of(info)
    await services.limiter.check("rooms", str(viewer.id), services.settings.rate_rooms)
    name = clean_name(name, "name", MAX_NAME)
    kind = _kind(kind)
    cleaned_topic = clean_topic(topic, "topic", MAX_TOPIC) if topic is not None else None
    room, joined = await rooms.create_room(services.db, name, viewer.user, kind=kind, topic=cleaned_topic)
    await announce_joined(services, room["id"], joined, [viewer.id])
    return access.with_role(room, rooms.OWNER)


async def announce_joined(services: Services, room_id: int, joined: room_events.Event, people: list[int]) -> None:
    """After the commit of a change that put `people` in a room (its creation, a join, an add, an
    invite used): its event published as any logged event is (a new room's too: nobody listens
    yet, but the webhooks' doorbell hears it, so its `member.joined` goes out at once, not at the
    next poll), and the room lists of those people hear of the room."""
    await services.publisher.event(room_topic(room_id), joined)
    await room_changes.added(services, room_id, people)


async def member_joined(services: Services, room_id: int, joined: room_events.Event, user_id: int) -> None:
    """`announce_joined` for one member of a room that was there before them: their presence in
    it starts too."""
    await announce_joined(services, room_id, joined, [user_id])
    await services.presence.joined(user_id, room_id)


async def _roles_changed(services: Services, room_id: int, events: list[dict]) -> None:
    """Whose role changed (set, or handed on when the last OWNER left): their room lists hear it."""
    changed = [event["user"]["id"] for event in events if event.get("kind") == room_events.ROLE_CHANGED]
    if changed:
        await room_changes.updated(services, room_id, changed)


@mutation_type.field("joinRoom")
async def resolve_join_room(_root: None, info: GraphQLResolveInfo, room: str) -> dict:
    """A PUBLIC room (NOT_FOUND for one I may not see); harmless for a room I am in, but
    FORBIDDEN in a DIRECT room (nobody joins one: its people are fixed); FORBIDDEN while I am
    banned from it."""
    viewer = await _act(info)
    services = services_of(info)
    found = await access.seen(services, viewer, parse_id(room, "Room", argument="room"))
    assert found.room is not None
    access.not_direct(found.room["kind"])
    if found.member:
        return access.with_role(found.room, found.role)
    if found.banned:
        raise Forbidden(BANNED)
    try:
        joined = await rooms.add_member(services.db, found.room, viewer.user)
    except rooms.Banned:
        raise Forbidden(BANNED) from None
    except rooms.Fixed:
        raise Forbidden(access.DIRECT_FIXED) from None
    if joined is not None:
        await member_joined(services, found.room["id"], joined, viewer.id)
    return access.with_role(
        {**found.room, "member_count": found.room["member_count"] + (joined is not None)}, rooms.MEMBER
    )


async def _removed(services: Services, room_id: int, user_id: int, events: list[dict], error: GraphQLError) -> None:
    """Someone left or was removed: their subscriptions to the room end first (its log, typing,
    presence; on every transport and process, retried until Redis takes it), so the others
    alone hear of it; their room list drops it (and hears nothing of it after); then the
    events; nor are they in its typing and presence lists any more."""
    ended = format_error(error)
    for topic in topics_of(room_id):
        await services.publisher.end(topic, user=user_id, error=ended)
    await room_changes.removed(services, room_id, [user_id])
    for event in events:
        await services.publisher.event(room_topic(room_id), event)
    await _roles_changed(services, room_id, events)
    await typing.stopped(services, room_id, user_id)
    await services.publisher.event(presence_topic(room_id), {"changed": True})


@mutation_type.field("leaveRoom")
async def resolve_leave_room(_root: None, info: GraphQLResolveInfo, room: str) -> bool:
    """True if I was a member. The last OWNER leaving hands the room on (a RoleChanged)."""
    viewer = await _act(info)
    services = services_of(info)
    found = await access.seen(services, viewer, parse_id(room, "Room", argument="room"))
    assert found.room is not None
    if not found.member:
        return False
    access.not_direct(found.room["kind"])
    events = await rooms.remove_member(services.db, found.room, viewer.user)
    if not events:
        return False
    await _removed(services, found.room["id"], viewer.id, events, Forbidden(LEFT_THE_ROOM))
    return True


@mutation_type.field("updateRoom")
async def resolve_update_room(
    _root: None,
    info: GraphQLResolveInfo,
    room: str,
    name: str | None = None,
    topic: str | None = None,
    kind: str | None = None,
) -> dict:
    """OWNER or MODERATOR; only what is given changes (`topic: ""` clears it); never to or from
    DIRECT. A kind change hides a PRIVATE room from outsiders, who hold no live subscription
    on it (subscribing takes membership): nothing of theirs to end."""
    viewer = await _act(info)
    services = services_of(info)
    room_id = parse_id(room, "Room", argument="room")
    mine = await access.member(services, viewer, room_id)
    changes: dict = {}
    if name is not None:
        changes["name"] = clean_name(name, "name", MAX_NAME)
    if topic is not None:
        changes["topic"] = clean_topic(topic, "topic", MAX_TOPIC)
    if kind is not None:
        changes["kind"] = _kind(kind)

    def check_kind(current: str) -> None:
        if kind is not None and current == rooms.DIRECT:
            raise BadUserInput("A direct room stays direct.", argument="kind")

    _before, after, events = await rooms.update_room(
        services.db,
        room_id,
        viewer.user,
        changes,
        decide=access.decider(viewer, access.may_moderate),
        check_kind=check_kind,
    )
    if after is None:
        raise NotFound(access.ROOM_NOT_FOUND)
    for event in events:
        await services.publisher.event(room_topic(room_id), event)
    if events:
        await room_changes.updated(services, room_id)
    return access.with_role(after, mine.role)


MAX_DIRECT_OTHERS = 9
USERS_NOT_FOUND = "User not found."


def _direct_name(people: list[dict]) -> str:
    """A DIRECT room's stored name: its people's names, sorted (case-blind), as they were when
    it was opened; the same for every viewer, at most MAX_NAME characters."""
    name = ", ".join(sorted((person["name"] for person in people), key=lambda n: (n.casefold(), n)))
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


@mutation_type.field("openDirect")
async def resolve_open_direct(_root: None, info: GraphQLResolveInfo, users: list[str]) -> dict:
    """The DIRECT room of the viewer and `users` (1 to 9 others; the viewer's own id among
    them is ignored; a repeated id, none but the viewer, or more than 9 is BAD_USER_INPUT), the
    same room for the same set of people whoever opens it and in whatever order, created once
    (db.rooms.open_direct: insert-or-fetch on a unique key). Everyone in it is a MEMBER.

    An id that names no user makes the whole call NOT_FOUND "User not found.", the same for
    one or several, without saying which (a user id reveals no more here than anywhere else).

    Every call counts against RATE_LIMIT_ACTIONS (before anything is read); one that creates
    the room counts against RATE_LIMIT_ROOMS too, as createRoom does. A created room is told as
    createRoom's is (announce_joined)."""
    viewer = await _act(info)
    services = services_of(info)
    if access.is_service(viewer):
        return await _open_direct_for(info, users)
    if len(users) > MAX_DIRECT_OTHERS + 1:  # before any parsing: a long list costs nothing
        raise BadUserInput(f"A direct room has 1 to {MAX_DIRECT_OTHERS} people besides you.", argument="users")
    ids = [parse_id(user, "User", argument="users") for user in users]
    if len(set(ids)) != len(ids):
        raise BadUserInput("`users` names someone twice.", argument="users")
    others = [user_id for user_id in ids if user_id != viewer.id]
    if not 1 <= len(others) <= MAX_DIRECT_OTHERS:
        raise BadUserInput(f"A direct room has 1 to {MAX_DIRECT_OTHERS} people besides you.", argument="users")
    found = await loaders_of(info).users.load_many(others)
    if any(user is None for user in found):
        raise NotFound(USERS_NOT_FOUND)
    people = [viewer.user, *found]
    existing = await rooms.direct_room(services.db, rooms.direct_key(person["id"] for person in people))
    if existing is not None:
        return access.with_role(existing, rooms.MEMBER)
    await services.limiter.check("rooms", str(viewer.id), services.settings.rate_rooms)
    room, first = await rooms.open_direct(services.db, _direct_name(people), viewer.user, list(found))
    if first is not None:
        await announce_joined(services, room["id"], first, [person["id"] for person in people])
    return access.with_role(room, rooms.MEMBER)


async def _open_direct_for(info: GraphQLResolveInfo, users: list[str]) -> dict:
    """The service opens the DIRECT room of `users`, who name everyone in it (2 to 10 people):
    the first of them is its opener (who added the others, on its log)."""
    services = services_of(info)
    if not 2 <= len(users) <= MAX_DIRECT_OTHERS + 1:
        raise BadUserInput(f"A direct room has 2 to {MAX_DIRECT_OTHERS + 1} people.", argument="users")
    ids = [parse_id(user, "User", argument="users") for user in users]
    if len(set(ids)) != len(ids):
        raise BadUserInput("`users` names someone twice.", argument="users")
    people = await loaders_of(info).users.load_many(ids)
    if any(person is None for person in people):
        raise NotFound(USERS_NOT_FOUND)
    opener, *others = people
    room, first = await rooms.open_direct(services.db, _direct_name(people), opener, others)
    if first is not None:
        await announce_joined(services, room["id"], first, ids)
    return access.with_role(room, rooms.MEMBER)


async def _user(info: GraphQLResolveInfo, user: str) -> dict:
    found = await loaders_of(info).users.load(parse_id(user, "User", argument="user"))
    if found is None:
        raise NotFound("User not found.")
    return found


@mutation_type.field("addMember")
async def resolve_add_member(_root: None, info: GraphQLResolveInfo, room: str, user: str) -> dict:
    """OWNER or MODERATOR, not in a DIRECT room; harmless for a member; FORBIDDEN for a banned
    user."""
    viewer = await _act(info)
    services = services_of(info)
    found = await access.moderator(services, viewer, parse_id(room, "Room", argument="room"))
    assert found.room is not None
    access.not_direct(found.room["kind"])
    target = await _user(info, user)
    try:
        joined = await rooms.add_member(
            services.db, found.room, target, by=viewer.user, decide=access.decider(viewer, access.may_moderate)
        )
    except rooms.Banned:
        raise Forbidden("That user is banned from this room: unban them first.") from None
    except rooms.Fixed:
        raise Forbidden(access.DIRECT_FIXED) from None
    if joined is not None:
        await member_joined(services, found.room["id"], joined, target["id"])
    return access.with_role(
        {**found.room, "member_count": found.room["member_count"] + (joined is not None)}, found.role
    )


@mutation_type.field("removeMember")
async def resolve_remove_member(_root: None, info: GraphQLResolveInfo, room: str, user: str, ban: bool = False) -> bool:
    """OWNER: anyone; MODERATOR: MEMBERs. With `ban`, they cannot come back until unbanned (a
    non-member can be banned ahead). True when anything changed. Their live subscriptions to the
    room end, on every transport."""
    viewer = await _act(info)
    services = services_of(info)
    room_id = parse_id(room, "Room", argument="room")
    found = await access.member(services, viewer, room_id)
    assert found.room is not None
    access.not_direct(found.room["kind"])
    target = await _user(info, user)
    if target["id"] == viewer.id:
        raise BadUserInput("To leave a room, use leaveRoom.", argument="user")
    changed, events = await rooms.remove_by(
        services.db, room_id, viewer.user, target, ban=bool(ban), decide=access.decider(viewer, access.may_remove)
    )
    if events:
        await _removed(services, room_id, target["id"], events, Forbidden(REMOVED))
    return changed


@mutation_type.field("unbanMember")
async def resolve_unban_member(_root: None, info: GraphQLResolveInfo, room: str, user: str) -> bool:
    """OWNER or MODERATOR: true when they were banned."""
    viewer = await _act(info)
    services = services_of(info)
    room_id = parse_id(room, "Room", argument="room")
    await access.member(services, viewer, room_id)
    target = await _user(info, user)
    return await rooms.unban(
        services.db, room_id, viewer.user, target["id"], decide=access.decider(viewer, access.may_moderate)
    )


MEMBER_NOT_FOUND = "That user is not a member of this room."


@mutation_type.field("setRole")
async def resolve_set_role(_root: None, info: GraphQLResolveInfo, room: str, user: str, role: str) -> dict:
    """OWNER only; a room keeps at least one OWNER."""
    viewer = await _act(info)
    services = services_of(info)
    room_id = parse_id(room, "Room", argument="room")
    found = await access.member(services, viewer, room_id)
    assert found.room is not None
    access.not_direct(found.room["kind"])
    target = await _user(info, user)
    try:
        membership, events = await rooms.set_role(
            services.db, room_id, viewer.user, target["id"], role, decide=access.decider(viewer, access.may_set_role)
        )
    except rooms.LastOwner:
        raise BadUserInput("A room keeps at least one OWNER: make someone else one first.", argument="role") from None
    if membership is None:
        raise NotFound(MEMBER_NOT_FOUND)
    for event in events:
        await services.publisher.event(room_topic(room_id), event)
    await _roles_changed(services, room_id, events)
    return membership


@mutation_type.field("muteMember")
async def resolve_mute_member(_root: None, info: GraphQLResolveInfo, room: str, user: str, minutes: int) -> dict:
    """OWNER or MODERATOR, over MEMBERs: they cannot post, edit or react for `minutes` (0 lifts it)."""
    viewer = await _act(info)
    services = services_of(info)
    if not 0 <= minutes <= MAX_MUTE_MINUTES:
        raise BadUserInput(f"`minutes` must be between 0 and {MAX_MUTE_MINUTES}.", argument="minutes")
    room_id = parse_id(room, "Room", argument="room")
    await access.member(services, viewer, room_id)
    target = await _user(info, user)
    until = now() + timedelta(minutes=minutes) if minutes else None
    membership = await rooms.mute(
        services.db, room_id, viewer.user, target["id"], until, decide=access.decider(viewer, access.may_mute)
    )
    if membership is None:
        raise NotFound(MEMBER_NOT_FOUND)
    return membership


@mutation_type.field("createMessage")
async def resolve_create_message(_root: None, info: GraphQLResolveInfo, room: str, body: str) -> dict:
    viewer = require_viewer(info)
    services = services_of(info)
    await services.limiter.check("messages", str(viewer.id), services.settings.rate_messages)
    room_id = parse_id(room, "Room", argument="room")
    body = clean_body(body, "body", MAX_BODY)
    created = await messages.create_message(services.db, room_id, viewer.user, body)
    if created is None:  # not a member, or muted: resolvers.access says which (NOT_FOUND for a room unseen)
        raise access.poster_refusal(await access.read(services, viewer, room_id))
    # Only after the commit: a subscriber never hears of a message it could not read back.
    await services.publisher.event(room_topic(room_id), created)
    await room_changes.updated(services, room_id)  # one note for the whole room (resolvers.room_changes)
    await typing.stopped(services, room_id, viewer.id)  # posting ends typing, as in every chat
    return {**created["message"], "room": access.vouched(created["room"])}


async def _refused(info: GraphQLResolveInfo, viewer: Viewer, message_id: int, refusal: messages.Refused) -> Exception:
    explained = await access.message_refusal(services_of(info), viewer, message_id, refusal.reason)
    if explained is not None:
        return explained
    if refusal.reason == "not_found":
        return NotFound(access.MESSAGE_NOT_FOUND)
    if refusal.reason == "not_sender":
        return Forbidden("Only its sender may change a message.")
    return BadUserInput("The message is deleted.", argument="id")


@mutation_type.field("editMessage")
async def resolve_edit_message(_root: None, info: GraphQLResolveInfo, id: str, body: str) -> dict:
    """Sender only (not while muted); the message keeps its place in the history, with `editedAt` set."""
    viewer = await _act(info)
    services = services_of(info)
    body = clean_body(body, "body", MAX_BODY)
    message_id = parse_id(id, "Message")
    try:
        edited = await messages.edit_message(services.db, message_id, viewer.user, body)
    except messages.Refused as refusal:
        raise await _refused(info, viewer, message_id, refusal) from None
    await services.publisher.event(room_topic(edited["room"]["id"]), edited)
    await room_changes.updated(services, edited["room"]["id"])  # it may be the room's last message
    return {**edited["message"], "room": access.vouched(edited["room"])}


@mutation_type.field("deleteMessage")
async def resolve_delete_message(_root: None, info: GraphQLResolveInfo, id: str) -> bool:
    """Its sender, or an OWNER or MODERATOR of its room (the tombstone's `by`): true when it is
    deleted now, false when it was already."""
    viewer = await _act(info)
    services = services_of(info)
    message_id = parse_id(id, "Message")
    try:
        try:
            deleted = await messages.delete_message(services.db, message_id, viewer.user)
        except messages.Refused as refusal:
            if refusal.reason != "not_sender":
                raise
            deleted = await messages.delete_message(
                services.db, message_id, viewer.user, moderating=tuple(access.MODERATING)
            )
    except messages.Refused as refusal:
        if refusal.reason == "deleted":
            return False
        raise await _refused(info, viewer, message_id, refusal) from None
    await published_deletions(services, deleted["room"]["id"], [deleted])
    return True


async def published_deletions(services: Services, room_id: int, deleted: list[room_events.Event]) -> None:
    """After their commit, a room's `message_deleted` events (in log order) to its live
    subscribers, and one note to room lists (one of them may have been the room's last message):
    a moderator's deleteMessage and the service's erasure (deleteUser) alike. The webhooks'
    doorbell hears them through the publisher."""
    for event in deleted:
        await services.publisher.event(room_topic(room_id), event)
    await room_changes.updated(services, room_id)


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
        raise await _refused(info, viewer, message_id, refusal) from None
    except messages.TooManyReactions as too_many:
        raise BadUserInput(f"At most {too_many.limit} different reactions on a message.", argument="emoji") from None
    if changed is None:  # idempotent: nothing to announce
        found = await messages.message_with_sender(services.db, message_id)
        assert found is not None
        return found
    await services.publisher.event(room_topic(changed["room"]["id"]), changed)
    return {**changed["message"], "room": access.vouched(changed["room"])}


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
    found = await access.room_of_member(services, viewer, room_id)
    try:
        marked = await read_state.mark_read(services.db, room_id, viewer.user, up_to)
    except messages.Refused:  # left or was removed just now
        raise Forbidden(NOT_A_MEMBER) from None
    if marked is not None:
        await services.publisher.event(room_topic(room_id), marked)
        await room_changes.updated(services, room_id, [viewer.id])  # my unread count
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
    password_accounts(services)
    await services.limiter.check("auth", f"user:{viewer.id}", services.settings.rate_auth)
    if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
        raise BadUserInput(f"`new` must be {MIN_PASSWORD} to {MAX_PASSWORD} characters.", argument="new")
    user = await users.user_with_password_by_id(services.db, viewer.id)
    if user is None:
        raise Unauthenticated(SIGN_IN_FIRST)
    if user["password_hash"] is None:
        raise Forbidden(NO_PASSWORD)
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
