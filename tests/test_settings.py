"""Settings come from the environment, Heroku's way, with an embedded default."""

from __future__ import annotations

import pytest

from core import settings as settings_module
from core.settings import ConfigurationError, Rate, load, normalize_database_url, pool_size_per_worker, sqlalchemy_url

HEROKU_VARIABLES = ["DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY", "PORT", "DATABASE_CONNECTION_LIMIT"]


def test_with_nothing_set_it_runs_on_sqlite_and_in_process_broadcast(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HEROKU_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    loaded = settings_module.load()
    assert loaded.database_url == "sqlite:///chat.db" and loaded.is_sqlite
    assert loaded.redis_url is None
    assert loaded.web_concurrency == 1  # one process: the in-process broadcast reaches every subscriber
    assert loaded.port == 8000


def test_heroku_style_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db.example:5432/d?sslmode=require")
    monkeypatch.setenv("REDIS_URL", "rediss://:pw@redis.example:6380")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("PORT", "5123")
    monkeypatch.setenv("DATABASE_CONNECTION_LIMIT", "20")
    loaded = settings_module.load()
    assert loaded.database_url == "postgresql://u:p@db.example:5432/d?ssl=require"
    assert loaded.redis_url == "rediss://:pw@redis.example:6380"
    assert (loaded.web_concurrency, loaded.port) == (3, 5123)
    assert loaded.db_pool_max == (20 - 3) // 3


def test_database_urls_are_translated_for_each_driver() -> None:
    assert normalize_database_url("postgres://u@h/d?sslmode=require") == "postgresql://u@h/d?ssl=require"
    assert normalize_database_url("sqlite:///chat.db") == "sqlite:///chat.db"
    assert sqlalchemy_url("postgresql://u@h/d?ssl=require&max_size=3") == "postgresql+asyncpg://u@h/d?ssl=require"
    assert sqlalchemy_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"


def test_the_connection_budget_is_shared_by_every_worker_of_every_dyno() -> None:
    assert pool_size_per_worker(limit=20, reserve=3, workers=2, dynos=1, requested=None) == 8
    assert pool_size_per_worker(limit=20, reserve=3, workers=2, dynos=2, requested=None) == 4
    assert pool_size_per_worker(limit=20, reserve=3, workers=2, dynos=1, requested=5) == 5
    assert pool_size_per_worker(limit=None, reserve=3, workers=2, dynos=1, requested=None) == 5
    with pytest.raises(ConfigurationError, match="DATABASE_CONNECTION_LIMIT=4"):
        pool_size_per_worker(limit=4, reserve=3, workers=3, dynos=1, requested=None)


def test_redis_connections_are_budgeted_alike_with_two_for_each_worker_at_least() -> None:
    assert load({"REDIS_URL": "redis://localhost"}).redis_pool_max == 10
    assert load({"REDIS_URL": "redis://localhost", "REDIS_CONNECTION_LIMIT": "20"}).redis_pool_max == 9
    both = {"REDIS_URL": "redis://localhost", "REDIS_CONNECTION_LIMIT": "40", "WEB_CONCURRENCY": "3", "WEB_DYNOS": "2"}
    assert load(both).redis_pool_max == 6
    assert load({**both, "REDIS_POOL_MAX": "4"}).redis_pool_max == 4
    with pytest.raises(ConfigurationError, match=r"REDIS_CONNECTION_LIMIT=12 .* cannot give 2 connections"):
        load({**both, "REDIS_CONNECTION_LIMIT": "12"})


def test_rates_are_written_count_per_seconds() -> None:
    assert Rate.parse("30/10") == Rate(30, 10.0)
    assert Rate.parse("5") == Rate(5, 60.0)


def test_host_accounts_jwts_and_service_keys() -> None:
    """ACCOUNTS is `password` (the default) or `host`; SERVICE_KEY holds comma-separated keys
    (a rotation), each long and dotless (a dot marks a JWT); the JWT settings are optional."""
    assert load({}).accounts == "password" and load({}).service_keys == ()
    assert load({}).auth_jwt_secret is None and load({}).auth_jwks_url is None
    assert load({"ACCOUNTS": "Host"}).accounts == "host"
    with pytest.raises(ConfigurationError, match="ACCOUNTS"):
        load({"ACCOUNTS": "ldap"})
    old, new = "o" * 32, "n" * 40
    assert load({"SERVICE_KEY": f" {old}, {new} ,"}).service_keys == (old, new)
    for bad in ("short", "a.b" + "c" * 40):
        with pytest.raises(ConfigurationError, match="SERVICE_KEY"):
            load({"SERVICE_KEY": bad})
    loaded = load({"AUTH_JWT_SECRET": "s", "AUTH_JWT_AUDIENCE": "chat", "AUTH_JWT_LEEWAY_SECONDS": "5"})
    assert (loaded.auth_jwt_secret, loaded.auth_jwt_audience, loaded.auth_jwt_leeway_seconds) == ("s", "chat", 5.0)


def test_webhook_settings() -> None:
    settings = load({"WEBHOOK_URL": "https://a.example/hook, http://b.example/x  ", "WEBHOOK_SECRET": "old new"})
    assert settings.webhook_urls == ("https://a.example/hook", "http://b.example/x")
    assert settings.webhook_secrets == ("old", "new")
    assert settings.webhook_in_web and settings.webhook_lease_seconds >= 2 * settings.webhook_timeout_seconds + 5
    assert load({}).webhook_urls == ()
    with pytest.raises(ConfigurationError, match="without WEBHOOK_SECRET"):
        load({"WEBHOOK_URL": "https://a.example/hook"})
    with pytest.raises(ConfigurationError, match="not an http"):
        load({"WEBHOOK_URL": "ftp://a.example/hook", "WEBHOOK_SECRET": "s"})
    # A mistyped URL's credential never reaches the error (the start-up log).
    for mistyped in ("https//hooks:k3y-in-url@a.example/x?token=t0ken", "hooks:k3y-in-url@a.example/x?token=t0ken"):
        with pytest.raises(ConfigurationError, match="endpoint 2 is not an http") as refused:
            load({"WEBHOOK_URL": f"https://a.example/ok {mistyped}", "WEBHOOK_SECRET": "s"})
        assert "k3y-in-url" not in str(refused.value) and "t0ken" not in str(refused.value)
    with pytest.raises(ConfigurationError, match="WEBHOOK_LEASE_SECONDS"):
        load(
            {
                "WEBHOOK_URL": "https://a/",
                "WEBHOOK_SECRET": "s",
                "WEBHOOK_TIMEOUT_SECONDS": "30",
                "WEBHOOK_LEASE_SECONDS": "40",
            }
        )
    with pytest.raises(ConfigurationError, match="at most 16"):
        load({"WEBHOOK_URL": " ".join(f"https://h{n}.example/" for n in range(17)), "WEBHOOK_SECRET": "s"})
