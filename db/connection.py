"""The process-wide `databases` connection, built from the settings."""

from databases import Database

from settings import settings


def _database() -> Database:
    if settings.is_sqlite:
        # sqlite3 waits this long for another writer's lock instead of failing at once.
        return Database(settings.database_url, timeout=15)
    return Database(settings.database_url, min_size=1, max_size=settings.db_pool_max)


database = _database()
