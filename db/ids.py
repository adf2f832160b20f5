"""The ids of users, rooms and messages: random numbers, so that one reveals nothing.

An id is drawn uniformly from [2**32, 2**63) with `secrets` (the operating system's CSPRNG), so
it tells neither how many users, rooms or messages exist nor anything about any other id: there
is no order or step to count through, and an id next to a known one names nothing. The range
sits above every id of the sequential era (int4, below 2**31), so none of those can ever name a
row again (migration 0007_opaque_ids gave every existing row a new id), and below 2**63, so an
id fits Postgres' BIGINT and SQLite's 64-bit INTEGER PRIMARY KEY alike.

Every insert of a user, a room or a message takes its id from `new_id()`; the columns have no
default, so an insert that forgets it fails instead of taking a countable number.

A collision with an existing id is astronomically unlikely (with a billion rows, about one
chance in 10**10 per insert). Nobody retries it: the insert fails on the primary key like any
unique violation, its transaction rolls back, and the request errors (a sign-up reads it as a
taken email, an `openDirect` as a concurrent open it then fails to find); a repeat succeeds.
"""

import secrets

MIN_ID = 2**32
MAX_ID = 2**63 - 1


def new_id() -> int:
    """A fresh id for a user, a room or a message: uniform over [MIN_ID, MAX_ID]."""
    return MIN_ID + secrets.randbelow(MAX_ID - MIN_ID + 1)
