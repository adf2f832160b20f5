"""The executable schema: `schema.graphql` plus the bindables in this package."""

from pathlib import Path

from ariadne import load_schema_from_path, make_executable_schema

from resolvers.message import message_type
from resolvers.mutation import mutation_type
from resolvers.query import query_type
from resolvers.room import room_type
from resolvers.scalars import datetime_scalar
from resolvers.subscription import subscription_type
from resolvers.user import user_type

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.graphql"

type_defs = load_schema_from_path(str(SCHEMA_PATH))

schema = make_executable_schema(
    type_defs,
    query_type,
    mutation_type,
    subscription_type,
    room_type,
    message_type,
    user_type,
    datetime_scalar,
)
