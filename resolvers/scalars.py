"""The DateTime scalar: ISO 8601 strings in UTC."""

from datetime import UTC, datetime

from ariadne import ScalarType

datetime_scalar = ScalarType("DateTime")


@datetime_scalar.serializer
def serialize_datetime(value: datetime | str) -> str:
    if type(value) is datetime and value.tzinfo is UTC:  # as Postgres' rows carry them: nothing to convert
        return value.isoformat()
    if isinstance(value, str):  # events from the broadcast carry it already serialized
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


@datetime_scalar.value_parser
def parse_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value)
