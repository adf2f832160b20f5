"""A user's memberships in the order they joined: `rooms` (a room list) reads its page, and the
page after a room, straight from this index, a page's worth of rows, instead of every one of a
user's memberships sorted to keep the first few. It serves every read by user alone too, so it
replaces `ix_memberships_user_id`.

Revision ID: 0010_room_list_index
Revises: 0009_webhooks
Create Date: 2026-12-07
"""

from alembic import op

revision = "0010_room_list_index"
down_revision = "0009_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_memberships_user_joined", "memberships", ["user_id", "joined_at", "room_id"])
    op.drop_index("ix_memberships_user_id", table_name="memberships")


def downgrade() -> None:
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    op.drop_index("ix_memberships_user_joined", table_name="memberships")
