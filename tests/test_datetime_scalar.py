"""The DateTime scalar's output: ISO 8601 in UTC, whatever zone (or none) a value came with."""

from datetime import UTC, datetime, timedelta, timezone

from resolvers.scalars import serialize_datetime


def test_every_instant_is_written_in_utc_alike() -> None:
    """A Postgres row's timestamp (zone UTC, written at once), the same instant in another zone,
    and SQLite's naive UTC one: one string. A string (an event from the broadcast) as it is."""
    at = datetime(2026, 12, 7, 18, 30, 5, 120000, tzinfo=UTC)
    elsewhere = at.astimezone(timezone(timedelta(hours=-5)))
    assert serialize_datetime(at) == "2026-12-07T18:30:05.120000+00:00"
    assert serialize_datetime(elsewhere) == serialize_datetime(at)
    assert serialize_datetime(at.replace(tzinfo=None)) == serialize_datetime(at)
    assert serialize_datetime(at.replace(microsecond=0)) == "2026-12-07T18:30:05+00:00"
    assert serialize_datetime("2026-12-07T18:30:05+00:00") == "2026-12-07T18:30:05+00:00"
