"""Rooms people control: kinds, topics, roles, bans and mutes.

Rooms get `kind` (every existing room becomes PUBLIC, so whoever could join one before still
can), `topic` and `member_count` (a counter kept with every join and leave, filled here once).
Memberships get `role` (each room's creator, when still a member, becomes its OWNER, else its
longest-standing member does, as when the last owner leaves now; everyone else is a MEMBER)
and `muted_until`. `room_bans` records who may not come back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="PUBLIC"))
        batch.add_column(sa.Column("topic", sa.String(500), nullable=True))
        batch.add_column(sa.Column("member_count", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_rooms_kind_member_count", "rooms", ["kind", "member_count"])
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="MEMBER"))
        batch.add_column(sa.Column("muted_until", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE rooms SET member_count = (SELECT COUNT(*) FROM memberships WHERE memberships.room_id = rooms.id)"
    )
    op.execute(
        "UPDATE memberships SET role = 'OWNER' WHERE EXISTS (SELECT 1 FROM rooms "
        "WHERE rooms.id = memberships.room_id AND rooms.created_by = memberships.user_id)"
    )
    # A room its creator left: its longest-standing member becomes OWNER, as a leave does now.
    op.execute(
        "UPDATE memberships SET role = 'OWNER' WHERE NOT EXISTS (SELECT 1 FROM memberships AS owner "
        "WHERE owner.room_id = memberships.room_id AND owner.role = 'OWNER') AND NOT EXISTS (SELECT 1 "
        "FROM memberships AS earlier WHERE earlier.room_id = memberships.room_id AND (earlier.joined_at < "
        "memberships.joined_at OR (earlier.joined_at = memberships.joined_at "
        "AND earlier.user_id < memberships.user_id)))"
    )
    op.create_table(
        "room_bans",
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("banned_by", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("banned_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_room_bans_user_id", "room_bans", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_room_bans_user_id", table_name="room_bans")
    op.drop_table("room_bans")
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("muted_until")
        batch.drop_column("role")
    op.drop_index("ix_rooms_kind_member_count", table_name="rooms")
    with op.batch_alter_table("rooms") as batch:
        for column in ("member_count", "topic", "kind"):
            batch.drop_column(column)
