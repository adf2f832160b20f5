"""Sessions that end, and profiles that reveal no email.

Tokens get `expires_at` (each existing token gets the default 30 days from now: none dies at
deploy) and `parent_id`: an SSE cookie session is a token row of its own, made from a bearer
token and revoked with it. `tokens.user_id` gets an index, for revoking every token of a user.
Users get `avatar_url` (their own image, if they set one) and `gravatar` (opted in to Gravatar).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DEFAULT_TTL = timedelta(days=30)


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("parent_id", sa.Integer, nullable=True))
    tokens = sa.table("tokens", sa.column("expires_at", sa.DateTime(timezone=True)))
    op.execute(tokens.update().values(expires_at=datetime.now(UTC) + DEFAULT_TTL))
    with op.batch_alter_table("tokens") as batch:
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_foreign_key("fk_tokens_parent_id", "tokens", ["parent_id"], ["id"], ondelete="CASCADE")
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_index("ix_tokens_parent_id", "tokens", ["parent_id"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("avatar_url", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("gravatar", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("gravatar")
        batch.drop_column("avatar_url")
    op.drop_index("ix_tokens_parent_id", table_name="tokens")
    op.drop_index("ix_tokens_user_id", table_name="tokens")
    op.execute("DELETE FROM tokens WHERE parent_id IS NOT NULL")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_constraint("fk_tokens_parent_id", type_="foreignkey")
        batch.drop_column("parent_id")
        batch.drop_column("expires_at")
