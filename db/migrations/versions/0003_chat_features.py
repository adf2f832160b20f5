"""Edits, deletes, reactions and read positions.

A member's read position is kept as three numbers, so that unread counts never count history:
the log position read up to, the message seq it stands for, and how many of the member's own
messages were at or before it; with the room's message head and the member's own message count,
unread = (head - read) - (own - own at read). Each message keeps its sender's running count.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sender_seq", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_messages_room_event_seq", "messages", ["room_id", "event_seq"])
    op.create_index("ix_messages_room_sender_seq", "messages", ["room_id", "sender_id", "seq"])
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(sa.Column("read_event_seq", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("read_seq", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("own_count", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("own_at_read", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "reactions",
        sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("emoji", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Existing messages: each sender's running count, and each member's total (a one-off count).
    op.execute(
        "UPDATE messages SET sender_seq = (SELECT COUNT(*) FROM messages AS earlier "
        "WHERE earlier.room_id = messages.room_id AND earlier.sender_id = messages.sender_id "
        "AND earlier.seq <= messages.seq)"
    )
    op.execute(
        "UPDATE memberships SET own_count = (SELECT COUNT(*) FROM messages "
        "WHERE messages.room_id = memberships.room_id AND messages.sender_id = memberships.user_id)"
    )


def downgrade() -> None:
    op.drop_table("reactions")
    with op.batch_alter_table("memberships") as batch:
        for column in ("own_at_read", "own_count", "read_seq", "read_event_seq"):
            batch.drop_column(column)
    op.drop_index("ix_messages_room_sender_seq", table_name="messages")
    op.drop_index("ix_messages_room_event_seq", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        for column in ("sender_seq", "deleted_at", "edited_at"):
            batch.drop_column(column)
