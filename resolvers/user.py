"""User fields. Users are plain rows: id, name, email_hash (never the email)."""

from ariadne import ObjectType

GRAVATAR = "https://www.gravatar.com/avatar/{hash}?s={size}&d=identicon"

user_type = ObjectType("User")


@user_type.field("avatar")
def resolve_avatar(user: dict, _info: object, size: int = 80) -> str:
    return GRAVATAR.format(hash=user["email_hash"], size=min(max(size, 1), 2048))
