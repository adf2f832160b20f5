"""Table definitions (SQLAlchemy Core), shared by the queries and by Alembic."""

import sqlalchemy as sa

metadata = sa.MetaData()

# The type of a user's, a room's and a message's id and of every column that refers to one: a
# random 63-bit number (db/ids.py). BIGINT on Postgres; on SQLite plain INTEGER, which is 64-bit
# and keeps the primary key the table's rowid.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

users = sa.Table(
    "users",
    metadata,
    # Never a default: every insert draws one (db.ids.new_id).
    sa.Column("id", Id, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), nullable=False),
    # Email and password are NULL for a host's user (migration 0008_host), who signs in with the
    # host's token; an email is unique where present.
    sa.Column("email", sa.String(320), nullable=True, unique=True),
    sa.Column("email_hash", sa.String(64), nullable=True),
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # The user's own image (http(s)), and whether they opted in to Gravatar: neither set, the
    # avatar is generated from the id alone (resolvers/user.py).
    sa.Column("avatar_url", sa.String(2048), nullable=True),
    sa.Column("gravatar", sa.Boolean, nullable=False, server_default=sa.false()),
    # The host's id for this user (a JWT's `sub`, the service API's externalId); NULL for this
    # service's own accounts, unique where set.
    sa.Column("external_id", sa.String(255), nullable=True),
    # The host's JWTs issued (`iat`) at or before this are refused (revokeTokens, logOut everywhere).
    sa.Column("jwt_not_before", sa.DateTime(timezone=True), nullable=True),
    sa.Index("uq_users_external_id", "external_id", unique=True),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Refused from then on; renewed by use (auth.py). A session's never outlives its parent's.
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    # Set for an SSE cookie session: the bearer token it was made from, revoked with it.
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("tokens.id", ondelete="CASCADE", name="fk_tokens_parent_id")),
    sa.Index("ix_tokens_user_id", "user_id"),
    sa.Index("ix_tokens_parent_id", "parent_id"),
)

rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("created_by", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("last_seq", sa.Integer, nullable=False, server_default="0"),
    # The room's event log: every logged event (messages, joins, leaves...) takes the next one.
    sa.Column("last_event_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # PUBLIC (anyone may find and join it), PRIVATE (invisible to non-members) or DIRECT.
    sa.Column("kind", sa.String(16), nullable=False, server_default="PUBLIC"),
    sa.Column("topic", sa.String(500), nullable=True),
    # Kept with every join and leave, so room lists and the public directory count nothing.
    sa.Column("member_count", sa.Integer, nullable=False, server_default="0"),
    # A DIRECT room's people, canonically (db.rooms.direct_key); NULL for other rooms. Unique: one
    # room per set of people, however many open it at once. 200 holds the longest: 10 people's ids
    # of 19 digits each and 9 commas.
    sa.Column("direct_key", sa.String(200), nullable=True),
    sa.Index("ix_rooms_kind_member_count", "kind", "member_count"),
    # The host's id for the room (an order, a match...), set by the service; unique where set.
    sa.Column("external_id", sa.String(255), nullable=True),
    sa.Index("uq_rooms_direct_key", "direct_key", unique=True),
    sa.Index("uq_rooms_external_id", "external_id", unique=True),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("room_id", Id, sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
    # The read position (see db/read_state.py) and the member's own message count.
    sa.Column("read_event_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("read_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("own_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("own_at_read", sa.Integer, nullable=False, server_default="0"),
    # OWNER, MODERATOR or MEMBER; a muted member cannot post, edit or react until `muted_until`.
    sa.Column("role", sa.String(16), nullable=False, server_default="MEMBER"),
    sa.Column("muted_until", sa.DateTime(timezone=True), nullable=True),
    # A user's rooms in the order they joined (`rooms` pages read from it): migration 0010.
    sa.Index("ix_memberships_user_joined", "user_id", "joined_at", "room_id"),
)

# Who may not come back to a room until unbanned (by joinRoom, addMember, or any later route).
room_bans = sa.Table(
    "room_bans",
    metadata,
    sa.Column("room_id", Id, sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("banned_by", Id, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    sa.Column("banned_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_room_bans_user_id", "user_id"),
)

# Invitations to a room (migration 0006_invites): only each code's SHA-256 is kept. `uses_left`
# null: no limit of uses; `expires_at` null: never expires. Revoking deletes the row.
room_invites = sa.Table(
    "room_invites",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("room_id", Id, sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_by", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("uses_left", sa.Integer, nullable=True),
    sa.UniqueConstraint("code_hash", name="uq_room_invites_code_hash"),
    sa.Index("ix_room_invites_room_id", "room_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=False),
    sa.Column("room_id", Id, sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("sender_id", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # The seq of its `message_created` event in the room's log, where a resume after it starts.
    sa.Column("event_seq", sa.Integer, nullable=True),
    sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True),
    # A deleted message keeps its place: its body is emptied.
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    # The sender's running count of messages in the room (1 for their first).
    sa.Column("sender_seq", sa.Integer, nullable=False, server_default="0"),
    # USER, or SYSTEM for one the host's server posted (postSystemMessage).
    sa.Column("kind", sa.String(16), nullable=False, server_default="USER"),
    sa.UniqueConstraint("room_id", "seq", name="uq_messages_room_seq"),
    sa.Index("ix_messages_room_event_seq", "room_id", "event_seq"),
    sa.Index("ix_messages_room_sender_seq", "room_id", "sender_id", "seq"),
)

reactions = sa.Table(
    "reactions",
    metadata,
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("emoji", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

room_events = sa.Table(
    "room_events",
    metadata,
    sa.Column("room_id", Id, sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    # Who the event is about (the member who joined, the reactor...), and the message, if any.
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=True),
    # The kind's own fields, as JSON text.
    sa.Column("data", sa.Text, nullable=True),
)

# Webhooks (migration 0009_webhooks; transports.webhooks). An endpoint is known by `key`, a hash
# of its URL (the URL itself may carry a credential: only `label`, its scheme, host and path, is
# stored). Registering one records every room's log position at that moment: the endpoint hears
# what happens from then on, not the history before it.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("label", sa.String(2048), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# The outbox: one row per endpoint and room, its position in the room's log (room_events), not a
# copy of any event. `delivered_seq`: every event up to it was acknowledged (or refused with a
# 4xx, or given up on); the next is `delivered_seq + 1`. A room without a row for an endpoint is
# at 0 (a room made after the endpoint was registered). `lease_owner`/`lease_until`: the one
# process delivering this room to this endpoint now; `next_attempt_at`: the next event's retry.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("endpoint", sa.String(64), sa.ForeignKey("webhook_endpoints.key", ondelete="CASCADE"), primary_key=True),
    sa.Column("room_id", sa.BigInteger, sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("delivered_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
)
