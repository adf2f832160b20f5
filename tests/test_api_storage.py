"""What the database holds: password hashes and token digests, never the secrets themselves."""

from __future__ import annotations

import hashlib
import subprocess

from tests.support.graphql import GraphQLClient, sign_up
from tests.support.processes import Server


def psql(database_url: str, sql: str) -> str:
    url = database_url.replace("postgres://", "postgresql://", 1)
    return subprocess.run(["psql", url, "-At", "-c", sql], check=True, capture_output=True, text=True).stdout


def test_passwords_are_argon2_hashes_and_tokens_are_stored_as_digests(server: Server, database_url: str) -> None:
    client = GraphQLClient(server.url)
    account = sign_up(client, "Hal")
    password_hash = psql(database_url, f"SELECT password_hash FROM users WHERE id = {int(account.id)}").strip()
    assert password_hash.startswith("$argon2id$")
    assert account.password not in password_hash
    stored = psql(database_url, f"SELECT token_hash FROM tokens WHERE user_id = {int(account.id)}").split()
    assert stored == [hashlib.sha256(account.token.encode()).hexdigest()]
    everything = psql(
        database_url, "SELECT t.token_hash, u.email, u.password_hash FROM tokens t JOIN users u ON u.id = t.user_id"
    )
    assert account.token not in everything
    assert psql(database_url, f"SELECT email FROM users WHERE id = {int(account.id)}").strip() == account.email.lower()
