"""The one place free text from clients is checked before it is stored or looked up: names (of
users and rooms), message bodies and emails.

Refused, not removed: a client that sent an invisible character learns it with BAD_USER_INPUT
and the argument's name, and what we store is exactly what its author typed. Silently removing
would turn "Ann<U+200B>" into "Ann" behind the author's back, and a name that looks like
another's is the very thing refused here.

- A name (`clean_name`) may hold no control character (Unicode category Cc, NUL included), no
  format character (Cf: the bidirectional marks, embeddings, overrides and isolates U+200E,
  U+200F, U+061C, U+202A..U+202E, U+2066..U+2069; the zero-width U+200B..U+200D, U+2060,
  U+FEFF, U+180E; soft hyphens and tag characters), no line or paragraph separator (U+2028,
  U+2029) and no lone surrogate (which no database can store). These are what lets one user
  pass for another: the name shows as something other than its characters. The price: a
  zero-width joiner in an emoji sequence (👩‍💻) is refused in a name too.
- A body (`clean_body`) keeps newlines, carriage returns and tabs, and everything a script or an
  emoji needs (the joiner, right-to-left marks), but no other control character and no lone
  surrogate. NUL is the one Postgres cannot store at all: before this it was an
  INTERNAL_SERVER_ERROR with a traceback in the log.
- An email (`has_unstorable`) is refused when it holds any control character: it is looked up
  and stored as it is. A password may hold anything UTF-8 can encode (`has_lone_surrogate`).
"""

from __future__ import annotations

import unicodedata

from core.errors import BadUserInput

_NAME_REFUSED = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_BODY_KEPT = frozenset("\n\r\t")
_BODY_REFUSED = frozenset({"Cc", "Cs"})


def first_refused_in_name(value: str) -> str | None:
    """The first character a name may not hold, or None."""
    for character in value:
        if unicodedata.category(character) in _NAME_REFUSED:
            return character
    return None


def first_refused_in_body(value: str) -> str | None:
    """The first character a message body may not hold, or None."""
    for character in value:
        if character not in _BODY_KEPT and unicodedata.category(character) in _BODY_REFUSED:
            return character
    return None


def has_unstorable(value: str) -> bool:
    """Whether `value` holds a control character or a lone surrogate (what an email, a
    password-free lookup key, must never hold)."""
    return any(unicodedata.category(character) in _BODY_REFUSED for character in value)


def has_lone_surrogate(value: str) -> bool:
    """Whether `value` cannot be encoded as UTF-8 (JSON's `\\ud800` escapes can send one): what a
    password may hold is anything else."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def _trimmed(value: str, argument: str, limit: int) -> str:
    value = value.strip()
    if not 1 <= len(value) <= limit:
        raise BadUserInput(f"`{argument}` must be 1 to {limit} characters.", argument=argument)
    return value


def _refusal(argument: str, character: str, what: str) -> BadUserInput:
    return BadUserInput(
        f"`{argument}` may not contain {what} (U+{ord(character):04X}).", argument=argument, character=ord(character)
    )


def clean_name(value: str, argument: str, limit: int) -> str:
    """A user's or a room's name: nothing invisible or direction-changing anywhere in it (its
    ends included), then trimmed of spaces to 1 to `limit` characters. BAD_USER_INPUT (naming
    `argument` and the first such character) otherwise."""
    refused = first_refused_in_name(value)  # anywhere, the ends included: not trimmed away unseen
    if refused is not None:
        raise _refusal(argument, refused, "control, invisible or text-direction characters")
    return _trimmed(value, argument, limit)


def clean_body(value: str, argument: str, limit: int) -> str:
    """A message body: trimmed, 1 to `limit` characters, newlines and tabs kept, no other control
    character. BAD_USER_INPUT otherwise."""
    refused = first_refused_in_body(value)
    if refused is not None:
        raise _refusal(argument, refused, "control characters other than newlines and tabs")
    return _trimmed(value, argument, limit)


def clean_topic(value: str, argument: str, limit: int) -> str | None:
    """A room's topic, checked as a name is; "" (or only spaces) clears it (None)."""
    if not value.strip():
        return None
    return clean_name(value, argument, limit)


def clean_search(value: str, argument: str, limit: int) -> str | None:
    """Text searched for in names, checked as a name is (nothing a name may not hold could match
    one); "" searches for nothing in particular (None)."""
    if not value.strip():
        return None
    return clean_name(value, argument, limit)
