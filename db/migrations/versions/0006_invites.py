"""Invitations to a room: `room_invites`.

A code is never stored, only its SHA-256 (`code_hash`): whoever reads the table (a backup, a
replica, a stray query) holds no code that works. `uses_left` null: no limit of uses;
`expires_at` null: never expires. A revoked invite's row is deleted.

Revision ID: 0006_invites
Revises: 0006_direct
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_invites"
down_revision = "0006_direct"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "room_invites",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_by", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("uses_left", sa.Integer, nullable=True),
        sa.UniqueConstraint("code_hash", name="uq_room_invites_code_hash"),
    )
    op.create_index("ix_room_invites_room_id", "room_invites", ["room_id"])


def downgrade() -> None:
    op.drop_index("ix_room_invites_room_id", table_name="room_invites")
    op.drop_table("room_invites")
