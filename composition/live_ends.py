"""What a revocation this process hears does to the live engine: the token's (or the user's)
subscriptions end with UNAUTHENTICATED; after a reconnect, when revocations may have been
missed, every subscription is re-checked (identity.revocations)."""

from __future__ import annotations

from core.errors import Unauthenticated
from live.engine import Engine

SIGNED_OUT = "Signed out."


class SubscriptionEnds:
    """The revocations' listener (identity.revocations.RevocationListener) for one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def token_revoked(self, digest: str) -> None:
        self._engine.end_token(digest, Unauthenticated(SIGNED_OUT))

    def user_revoked(self, user_id: int) -> None:
        """Every live subscription of the user ends (all their tokens are revoked)."""
        self._engine.end_user(user_id, Unauthenticated(SIGNED_OUT))

    def resync(self) -> None:
        self._engine.recheck_all()
