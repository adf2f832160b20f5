"""The process's `databases` connection, built from the settings (connected in the lifespan)."""

from databases import Database

from core.settings import Settings
from db.pool import ChatDatabase


def open_database(settings: Settings) -> Database:
    """Not connected yet: the app's lifespan connects it, so importing builds nothing."""
    if settings.is_sqlite:
        # sqlite3 waits this long for another writer's lock instead of failing at once.
        return Database(settings.database_url, timeout=15)
    return ChatDatabase(
        settings.database_url,
        min_size=1,
        max_size=settings.db_pool_max,
        acquire_timeout=settings.db_acquire_timeout,
    )
