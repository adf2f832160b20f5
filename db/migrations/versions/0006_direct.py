"""DIRECT rooms: each has the key of its set of people, so there is one room per set.

`rooms.direct_key` is the canonical form of a DIRECT room's members (their ids sorted, joined
by commas), NULL for every other room; a unique index over it makes opening the same direct
room twice at the same moment create it once (the second insert fails and fetches the first).

Revision ID: 0006_direct
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_direct"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("direct_key", sa.String(200), nullable=True))
    op.create_index("uq_rooms_direct_key", "rooms", ["direct_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_rooms_direct_key", table_name="rooms")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("direct_key")
