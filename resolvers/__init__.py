"""The executable schema: `schema.graphql` plus the bindables in this package."""

from pathlib import Path

from ariadne import SchemaBindable, load_schema_from_path, make_executable_schema
from graphql import GraphQLSchema

from core.settings import MAX_WEBHOOK_URLS
from live.source import Audience, per_viewer
from resolvers.invite import invite_mutations, invite_type
from resolvers.lists import MAX_LIST
from resolvers.message import message_type, reaction_type, reactions_audience
from resolvers.mutation import mutation_type
from resolvers.presence import presence_type
from resolvers.query import query_type
from resolvers.room import MAX_PAGE, membership_type, room_type
from resolvers.room_event import room_event_interface, room_event_types
from resolvers.scalars import datetime_scalar
from resolvers.service import (
    service_message_type,
    service_mutations,
    service_queries,
    service_room_type,
    service_user_type,
)
from resolvers.subscription import subscription_type
from resolvers.typing import typing_type
from resolvers.user import user_type
from resolvers.webhook_status import webhook_status_query

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.graphql"

# Fields whose value depends on who asks, and what of an event tells viewers apart for them: the
# live engine executes a selection reading one once per distinct answer, not once per viewer.
VIEWER_FIELDS: dict[tuple[str, str], Audience] = {
    ("Query", "me"): per_viewer,
    # Each note is read for its viewer (membership, role, unread count: resolvers.room_changes).
    ("Subscription", "myRooms"): per_viewer,
    ("Room", "unreadCount"): per_viewer,
    ("Room", "lastReadCursor"): per_viewer,
    ("Room", "myRole"): per_viewer,
    ("Reaction", "mine"): reactions_audience,
    # Shown to the service and the user themselves (a room's: to its members).
    ("User", "externalId"): per_viewer,
    ("Room", "externalId"): per_viewer,
}

# Those of VIEWER_FIELDS, objects, whose value for one viewer differs from another's only in
# whether it is null and in the viewer fields under it: the live engine executes an event once
# for all of them and writes each viewer's own leaves in (live.engine). A `myRooms` note's room
# is each member's own row of one read for all of them (resolvers.sources.NoteListings): the
# same room and last message, their own role and read state (leaves above).
VIEWER_SHELLS: frozenset[tuple[str, str]] = frozenset({("Subscription", "myRooms")})

# The longest page of each bounded list, as its resolver serves it: the cost rule counts a list
# by its `first`, and an absent one as this.
LIST_BOUNDS: dict[tuple[str, str], int] = {
    ("Query", "rooms"): MAX_LIST,
    ("Query", "unreadCounts"): MAX_LIST,
    ("Room", "members"): MAX_LIST,
    ("Room", "memberships"): MAX_LIST,
    ("Query", "publicRooms"): MAX_LIST,
    ("Room", "messages"): MAX_PAGE,
    ("Room", "events"): MAX_PAGE,
    ("Query", "webhookStatus"): MAX_WEBHOOK_URLS,
}


def build_schema(subscription: SchemaBindable = subscription_type) -> GraphQLSchema:
    """`subscription`: the Subscription type's bindable (the naive baseline in bench/ brings its own)."""
    return make_executable_schema(
        load_schema_from_path(str(SCHEMA_PATH)),
        query_type,
        webhook_status_query,
        mutation_type,
        invite_mutations,
        invite_type,
        subscription,
        room_type,
        membership_type,
        message_type,
        reaction_type,
        typing_type,
        presence_type,
        user_type,
        room_event_interface,
        *room_event_types,
        datetime_scalar,
        service_mutations,
        service_queries,
        service_user_type,
        service_room_type,
        service_message_type,
    )
