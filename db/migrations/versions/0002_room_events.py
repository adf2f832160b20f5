"""The room's event log: one gap-free sequence per room for every logged event.

Existing messages become its first events, in their order (before this log, messages were a
room's only events, so a message's event seq is its seq).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("last_event_seq", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("event_seq", sa.Integer, nullable=True))
    op.create_table(
        "room_events",
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
        sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=True),
        sa.Column("data", sa.Text, nullable=True),
    )
    op.execute(
        "INSERT INTO room_events (room_id, seq, kind, at, user_id, message_id) "
        "SELECT room_id, seq, 'message_created', created_at, sender_id, id FROM messages"
    )
    op.execute("UPDATE messages SET event_seq = seq")
    op.execute("UPDATE rooms SET last_event_seq = last_seq")


def downgrade() -> None:
    op.drop_table("room_events")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("event_seq")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("last_event_seq")
