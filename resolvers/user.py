"""User fields. Users are plain rows: id, name, avatar_url, gravatar and email_hash (never the
email). The email's hash reaches nobody but for a user who opted in to Gravatar."""

from collections.abc import Awaitable

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from identity import avatars
from resolvers.context import loaders_of

GRAVATAR = "https://www.gravatar.com/avatar/{hash}?s={size}&d=identicon"
PROFILE_KEYS = ("avatar_url", "gravatar")

user_type = ObjectType("User")


def avatar_of(user: dict, size: int) -> str:
    """Their own image; Gravatar if they opted in; else the identicon we draw from their id."""
    size = avatars.clamp_size(size)
    if user.get("avatar_url"):
        return user["avatar_url"]
    if user.get("gravatar") and user.get("email_hash"):
        return GRAVATAR.format(hash=user["email_hash"], size=size)
    return avatars.url(user["id"], size)


@user_type.field("avatar")
def resolve_avatar(user: dict, info: GraphQLResolveInfo, size: int = 80) -> str | Awaitable[str]:
    if all(key in user for key in PROFILE_KEYS):
        return avatar_of(user, size)
    return _loaded_avatar(user, info, size)  # a row read without the profile (a message's sender...)


async def _loaded_avatar(user: dict, info: GraphQLResolveInfo, size: int) -> str:
    found = await loaders_of(info).users.load(int(user["id"]))
    return avatar_of(found or {"id": user["id"]}, size)
