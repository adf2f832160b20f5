"""The host's users and rooms: external ids, accounts without a password, system messages.

- `users.external_id` and `rooms.external_id`: the host's own id for a user (a JWT's `sub`, the
  service API's `externalId`) and for a room (an order, a match, a ticket). NULL for this
  service's own accounts and rooms; unique where set (an index, so NULLs never collide).
- `users.email`, `users.email_hash` and `users.password_hash` become nullable: a host's user has
  no email and no password here (they sign in with the host's token). `email` stays unique
  where present.
- `users.jwt_not_before`: the host's JWTs issued (`iat`) at or before it are refused (revokeTokens,
  logOut everywhere): a JWT cannot be deleted as our own tokens are.
- `messages.kind`: USER, or SYSTEM for a message the host's server posts (postSystemMessage);
  every existing message is a USER one.

Downgrading refuses (the NOT NULL fails) while any user without an email or password exists:
delete them first.

Revision ID: 0008_host
Revises: 0006_invites
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_host"
down_revision = "0007_opaque_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("external_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("jwt_not_before", sa.DateTime(timezone=True), nullable=True))
        batch.alter_column("email", existing_type=sa.String(320), nullable=True)
        batch.alter_column("email_hash", existing_type=sa.String(64), nullable=True)
        batch.alter_column("password_hash", existing_type=sa.String(255), nullable=True)
    op.create_index("uq_users_external_id", "users", ["external_id"], unique=True)
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("external_id", sa.String(255), nullable=True))
    op.create_index("uq_rooms_external_id", "rooms", ["external_id"], unique=True)
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="USER"))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("kind")
    op.drop_index("uq_rooms_external_id", table_name="rooms")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("external_id")
    op.drop_index("uq_users_external_id", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.alter_column("password_hash", existing_type=sa.String(255), nullable=False)
        batch.alter_column("email_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("email", existing_type=sa.String(320), nullable=False)
        batch.drop_column("jwt_not_before")
        batch.drop_column("external_id")
