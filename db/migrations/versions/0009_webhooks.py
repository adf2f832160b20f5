"""Webhooks: `webhook_endpoints` and `webhook_deliveries`, the outbox.

The outbox holds no copy of any event: a row per endpoint and room is that endpoint's position
in the room's log (`room_events`), with the next event's retry state and the lease of the one
process delivering the room now. Every logged event is committed with the change it records, so
nothing is lost between a commit and a delivery.

Revision ID: 0009_webhooks
Revises: 0008_host
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_webhooks"
down_revision = "0008_host"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("label", sa.String(2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "endpoint", sa.String(64), sa.ForeignKey("webhook_endpoints.key", ondelete="CASCADE"), primary_key=True
        ),
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


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
