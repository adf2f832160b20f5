"""Rows come back from `databases` as Records; the rest of the app works with plain dicts."""

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from asyncpg import Record as PostgresRecord

from core.reaches import written_against

# A reach (core/reaches.py): asyncpg's Record taken as a Mapping, though iterating it yields its
# values, not its keys; tests/test_library_reaches.py fails loudly when asyncpg changes under it.
WRITTEN_AGAINST = written_against("asyncpg")

Row = dict[str, Any]
RowView = Mapping[str, Any]  # a row only read: a dict, or on Postgres the ReadOnlyRow asyncpg made


class ReadOnlyRow(PostgresRecord):
    """A row as asyncpg made it, for a list that is only read: a mapping of str keys to values as
    Postgres gave them, without a dict made of each. Registered as a Mapping, so graphql-core's
    default resolver and our code read it as they read a dict: by key (`[key]`, `get`, `in`,
    `keys()`, `dict(row)`). Iterating one yields its values (asyncpg's Record is a sequence):
    only code that reads by key may take it."""

    __slots__ = ()


Mapping.register(ReadOnlyRow)


def now() -> datetime:
    return datetime.now(UTC)


def as_row(record: Any) -> Row | None:
    """A `databases` Record (or any mapping) as a plain dict, or None. Postgres' rows are ready
    as they are: str keys, and timestamps with their zone."""
    if record is None:
        return None
    mapping = getattr(record, "_mapping", record)
    return dict(mapping.items()) if type(mapping) is PostgresRecord else _utc(dict(mapping))


def as_rows(records: Iterable[Any]) -> list[Row]:
    return [as_row(record) for record in records]  # type: ignore[misc]


def _utc(row: dict) -> Row:
    """SQLite hands back naive datetimes (every timestamp we store is UTC), and sometimes
    SQLAlchemy's `quoted_name` keys, which orjson refuses: a published event must have str keys."""
    return {
        str(key): value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value
        for key, value in row.items()
    }
