"""Every setting the service reads from the environment, read here and nowhere else.

Names follow Heroku's conventions (PORT, WEB_CONCURRENCY, DATABASE_URL, REDIS_URL) so the
same code runs on a laptop with no servers and on a dyno with add-ons attached.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

DEFAULT_SQLITE_URL = "sqlite:///chat.db"
MAX_WEBHOOK_URLS = 16


class _Environment:
    """Typed reads of one environment mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str, default: str = "") -> str:
        return self.environ.get(name, "").strip() or default

    def integer(self, name: str, default: int) -> int:
        raw = self.text(name)
        return int(raw) if raw else default

    def optional_integer(self, name: str) -> int | None:
        raw = self.text(name)
        return int(raw) if raw else None

    def number(self, name: str, default: float) -> float:
        raw = self.text(name)
        return float(raw) if raw else default

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name).lower()
        return raw in ("1", "true", "yes", "on") if raw else default


def normalize_database_url(url: str) -> str:
    """Accept Heroku's `postgres://...?sslmode=require` and speak asyncpg's dialect.

    `databases` reads only `ssl`, `min_size` and `max_size` from the query and silently
    ignores `sslmode`, so `sslmode` is translated to asyncpg's `ssl` here.
    """
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("postgres", "postgresql+asyncpg"):
        scheme = "postgresql"
    if scheme == "sqlite+aiosqlite":
        scheme = "sqlite"
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "sslmode":
            key = "ssl"
        query.append((key, value))
    return _join(scheme, parts.netloc, parts.path, query)


def sqlalchemy_url(url: str) -> str:
    """The same database as a SQLAlchemy async URL, for Alembic."""
    parts = urlsplit(url)
    driver = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}[parts.scheme]
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("min_size", "max_size")]
    return _join(driver, parts.netloc, parts.path, query)


def _join(scheme: str, netloc: str, path: str, query: list[tuple[str, str]]) -> str:
    """urlunsplit drops the `//` of `sqlite:///file.db`; this keeps it."""
    url = f"{scheme}://{netloc}{path}"
    return f"{url}?{urlencode(query)}" if query else url


class ConfigurationError(Exception):
    """A setting that cannot work; raised at start-up, before anything binds or connects."""


def pool_size_per_worker(
    limit: int | None,
    reserve: int,
    workers: int,
    dynos: int,
    requested: int | None,
    *,
    default: int = 5,
    least: int = 1,
    service: str = "DATABASE",
) -> int:
    """Each worker's share of the plan's connection limit, shared by every worker of every dyno.

    `reserve` is kept back for the release phase, one-off dynos and `heroku pg:psql` (or
    `redis-cli`); a worker needs at least `least` (Redis: its pub/sub connection and one more).
    """
    if limit is None:
        return requested or default
    share = (limit - reserve) // (workers * dynos)
    if share < least:
        each = "one connection" if least == 1 else f"{least} connections"
        raise ConfigurationError(
            f"{service}_CONNECTION_LIMIT={limit} with {service}_CONNECTION_RESERVE={reserve} cannot give "
            f"{each} to each of {workers} workers x {dynos} dynos "
            "(WEB_CONCURRENCY x WEB_DYNOS): raise the limit (a bigger plan), or lower WEB_CONCURRENCY, "
            "WEB_DYNOS or the reserve."
        )
    return min(share, requested) if requested else share


@dataclass(frozen=True)
class Rate:
    """At most `count` hits per `seconds`, written "count/seconds" in the environment."""

    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        count, _, seconds = text.partition("/")
        return cls(int(count), float(seconds or 60))


@dataclass(frozen=True)
class Settings:
    database_url: str = field(repr=False)  # credentials: out of any printed settings
    redis_url: str | None = field(repr=False)
    channel_prefix: str
    port: int
    web_concurrency: int
    db_pool_max: int
    db_acquire_timeout: float
    redis_pool_max: int
    redis_acquire_timeout: float
    redis_command_timeout: float
    redis_ssl_cert_reqs: str
    ws_keepalive_seconds: float
    ws_init_timeout_seconds: float
    ws_max_size: int
    ws_max_subscriptions: int
    ws_send_queue: int
    max_requests: int
    max_requests_jitter: int
    graceful_timeout: int
    log_level: str
    debug: bool
    max_body_bytes: int
    query_max_depth: int
    query_max_fields: int
    query_max_aliases: int
    query_max_cost: int
    introspection: bool
    explorer: bool
    cors_origins: tuple[str, ...]
    rate_messages: Rate
    rate_auth: Rate
    rate_typing: Rate
    max_reactions: int
    typing_seconds: float
    presence_seconds: float
    presence_offline_after: float
    sse_heartbeat_seconds: float
    multipart_heartbeat_seconds: float
    persisted_queries_max: int
    persisted_queries_ttl_seconds: int
    # Issue 24, one block per part (kept apart so the parts merge without conflicts).
    # [documents]
    max_query_bytes: int
    max_response_bytes: int
    query_max_subscription_cost: int
    query_max_introspection_cost: int
    persisted_queries_max_bytes: int
    # [lists and mutations]
    rate_actions: Rate  # per user: edits, deletes, reactions, read positions, joins and leaves
    rate_rooms: Rate  # per user: rooms created
    # [addresses and accounts]
    forwarded_allow_ips: tuple[str, ...]
    rate_login_account: Rate
    password_hash_threads: int
    password_hash_queue: int
    healthz_details: bool
    # [sessions and profiles]
    token_ttl_seconds: int
    token_renew_seconds: int
    rate_profile: Rate
    # [live bounds]
    max_subscriptions_per_user: int
    max_connections_per_user: int
    live_lease_seconds: float
    replay_budget: Rate
    live_feed_queue: int
    # [invites]
    rate_invite_joins: Rate  # joinByInvite per user, and apart per address: against code guessing
    # [host identity and the service API]
    accounts: str  # "password" (signUp, logIn, changePassword) or "host" (only the host's tokens)
    auth_jwt_secret: str | None = field(repr=False)  # HS256
    auth_jwks_url: str | None  # RS256 and ES256
    auth_jwt_issuer: str | None
    auth_jwt_audience: str | None
    auth_jwt_leeway_seconds: float
    auth_jwks_refetch_seconds: float  # at most one fetch of the JWKS URL per this, whatever kids come
    auth_jwks_cache_seconds: float  # keys older than this are fetched again at their next use
    service_keys: tuple[str, ...] = field(repr=False)
    erase_seconds: float  # deleteUser(erase) answers false past this, the rest left for its next call
    # [telemetry]
    # The standard OTEL_* variables, as set (telemetry.running); out of the repr: the exporter's
    # headers carry the backend's API key.
    otel: tuple[tuple[str, str], ...] = field(repr=False)
    dyno: str  # Heroku's DYNO ("web.1"), or "local"
    worker_slot: str  # CHAT_WORKER_SLOT, which serving/gunicorn.conf.py sets in each worker
    release_version: str | None  # HEROKU_RELEASE_VERSION (runtime-dyno-metadata)
    log_format: str  # "text" (the default) or "json": one object per line
    # [webhooks]
    # Every logged room event is POSTed to each URL (transports.webhooks), signed with each secret
    # (rotation: old and new at once); both may hold credentials, so neither is printed.
    webhook_urls: tuple[str, ...] = field(default=(), repr=False)
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    webhook_in_web: bool = True  # the web workers deliver; off when a `worker:` process does
    webhook_timeout_seconds: float = 10.0
    webhook_concurrency: int = 4  # rooms delivered at once per process
    webhook_retry_base_seconds: float = 2.0
    webhook_retry_max_seconds: float = 600.0
    webhook_retry_for_seconds: float = 3 * 24 * 3600.0
    webhook_poll_seconds: float = 2.0
    webhook_lease_seconds: float = 60.0

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings in `environ` (the process's environment by default)."""
    env = _Environment(os.environ if environ is None else environ)
    redis_url = env.text("REDIS_URL") or None
    # Without Redis the broadcast is in-process: only one worker can see every message.
    workers = max(1, env.integer("WEB_CONCURRENCY", 2)) if redis_url else 1
    dynos = max(1, env.integer("WEB_DYNOS", 1))
    return Settings(
        database_url=normalize_database_url(env.text("DATABASE_URL", DEFAULT_SQLITE_URL)),
        redis_url=redis_url,
        channel_prefix=env.environ.get("CHANNEL_PREFIX", "chat:"),
        port=env.integer("PORT", 8000),
        web_concurrency=workers,
        db_pool_max=pool_size_per_worker(
            limit=env.optional_integer("DATABASE_CONNECTION_LIMIT"),
            reserve=env.integer("DATABASE_CONNECTION_RESERVE", 3),
            workers=workers,
            dynos=dynos,
            requested=env.optional_integer("DATABASE_POOL_MAX"),
        ),
        db_acquire_timeout=env.number("DATABASE_ACQUIRE_TIMEOUT", 5.0),
        redis_pool_max=pool_size_per_worker(
            limit=env.optional_integer("REDIS_CONNECTION_LIMIT"),
            reserve=env.integer("REDIS_CONNECTION_RESERVE", 2),
            workers=workers,
            dynos=dynos,
            requested=env.optional_integer("REDIS_POOL_MAX"),
            default=10,
            least=2,
            service="REDIS",
        ),
        redis_acquire_timeout=env.number("REDIS_ACQUIRE_TIMEOUT", 5.0),
        # What a request waits for Redis (a rate limit, a publish...) before it does without.
        redis_command_timeout=env.number("REDIS_COMMAND_TIMEOUT", 0.5),
        redis_ssl_cert_reqs=env.text("REDIS_SSL_CERT_REQS", "none"),
        ws_keepalive_seconds=env.number("WS_KEEPALIVE_SECONDS", 20.0),
        ws_init_timeout_seconds=env.number("WS_INIT_TIMEOUT_SECONDS", 10.0),
        ws_max_size=env.integer("WS_MAX_SIZE", 64 * 1024),
        ws_max_subscriptions=env.integer("WS_MAX_SUBSCRIPTIONS", 20),
        ws_send_queue=env.integer("WS_SEND_QUEUE", 256),
        max_requests=env.integer("MAX_REQUESTS", 1000),
        max_requests_jitter=env.integer("MAX_REQUESTS_JITTER", 200),
        graceful_timeout=env.integer("GRACEFUL_TIMEOUT", 20),
        log_level=env.text("LOG_LEVEL", "info").upper(),
        debug=env.flag("DEBUG", False),
        max_body_bytes=env.integer("MAX_BODY_BYTES", 1_000_000),
        # Introspection is measured like any query: these admit the standard introspection
        # query (depth 15, 220 to 232 fields) and every document of the web client and tests.
        query_max_depth=env.integer("QUERY_MAX_DEPTH", 15),
        query_max_fields=env.integer("QUERY_MAX_FIELDS", 300),
        query_max_aliases=env.integer("QUERY_MAX_ALIASES", 30),
        query_max_cost=env.integer("QUERY_MAX_COST", 20_000),
        # Off on a Heroku dyno (DYNO is set there), on for `make run`.
        introspection=env.flag("INTROSPECTION", not env.text("DYNO")),
        explorer=env.flag("EXPLORER", not env.text("DYNO")),
        cors_origins=tuple(o.strip() for o in env.text("CORS_ORIGINS").split(",") if o.strip()),
        rate_messages=Rate.parse(env.text("RATE_LIMIT_MESSAGES", "30/10")),
        rate_auth=Rate.parse(env.text("RATE_LIMIT_AUTH", "10/60")),
        rate_typing=Rate.parse(env.text("RATE_LIMIT_TYPING", "10/10")),
        max_reactions=env.integer("MAX_REACTIONS", 20),
        typing_seconds=env.number("TYPING_SECONDS", 6.0),
        presence_seconds=env.number("PRESENCE_SECONDS", 45.0),
        presence_offline_after=env.number("PRESENCE_OFFLINE_AFTER", 5.0),
        # Heroku's router cuts a response that sends nothing for 55 s; Apollo's clients expect
        # multipart heartbeats every 5 s.
        sse_heartbeat_seconds=env.number("SSE_HEARTBEAT_SECONDS", 15.0),
        multipart_heartbeat_seconds=env.number("MULTIPART_HEARTBEAT_SECONDS", 5.0),
        persisted_queries_max=env.integer("PERSISTED_QUERIES_MAX", 10_000),
        persisted_queries_ttl_seconds=env.integer("PERSISTED_QUERIES_TTL_SECONDS", 7 * 24 * 3600),
        # [documents]
        max_query_bytes=env.integer("MAX_QUERY_BYTES", 32 * 1024),
        max_response_bytes=env.integer("MAX_RESPONSE_BYTES", 4 * 1024 * 1024),
        query_max_subscription_cost=env.integer("QUERY_MAX_SUBSCRIPTION_COST", 500),
        query_max_introspection_cost=env.integer("QUERY_MAX_INTROSPECTION_COST", 10_000),
        persisted_queries_max_bytes=env.integer("PERSISTED_QUERIES_MAX_BYTES", 2 * 1024 * 1024),
        # [lists and mutations]
        rate_actions=Rate.parse(env.text("RATE_LIMIT_ACTIONS", "60/10")),
        rate_rooms=Rate.parse(env.text("RATE_LIMIT_ROOMS", "20/3600")),
        # [addresses and accounts]
        # Peers whose X-Forwarded-For/-Proto are believed (addresses, networks or "*"). On a dyno
        # every peer is Heroku's router ("*", as the Python buildpack sets); elsewhere only this
        # machine, so a client reaching `make run` directly is known by its own address.
        forwarded_allow_ips=tuple(
            entry.strip()
            for entry in env.text("FORWARDED_ALLOW_IPS", "*" if env.text("DYNO") else "127.0.0.1,::1").split(",")
            if entry.strip()
        ),
        rate_login_account=Rate.parse(env.text("RATE_LIMIT_LOGIN_ACCOUNT", "10/300")),
        # argon2id takes 64 MiB per hash: at most this many at once per worker, and this many waiting.
        password_hash_threads=max(1, env.integer("PASSWORD_HASH_THREADS", 2)),
        password_hash_queue=max(0, env.integer("PASSWORD_HASH_QUEUE", 64)),
        healthz_details=env.flag("HEALTHZ_DETAILS", False),
        # [sessions and profiles]
        # A token lives this long after it was issued or last renewed; use renews it (sliding
        # expiry) at most once per TOKEN_RENEW_SECONDS, so a request costs no write; 0: never renewed.
        token_ttl_seconds=max(1, env.integer("TOKEN_TTL_SECONDS", 30 * 24 * 3600)),
        token_renew_seconds=max(0, env.integer("TOKEN_RENEW_SECONDS", 24 * 3600)),
        rate_profile=Rate.parse(env.text("RATE_LIMIT_PROFILE", "10/60")),
        # [live bounds]
        # Live delivery per user, across transports, workers and dynos (live.quota).
        max_subscriptions_per_user=env.integer("MAX_SUBSCRIPTIONS_PER_USER", 100),
        max_connections_per_user=env.integer("MAX_CONNECTIONS_PER_USER", 20),
        # How long a process's counts outlive it in Redis (renewed every third of it).
        live_lease_seconds=env.number("LIVE_LEASE_SECONDS", 30.0),
        # Historical events a user's resumes may execute outside their group's shared results.
        replay_budget=Rate.parse(env.text("LIVE_REPLAY_BUDGET", "5000/60")),
        # Messages waiting between Redis and one topic's feed; past it the feed resyncs from the log.
        live_feed_queue=env.integer("LIVE_FEED_QUEUE", 1000),
        # [invites]
        # joinByInvite attempts, counted per user and apart per client address (a guesser with
        # many accounts behind one address, or one account behind many, is held by one of them).
        rate_invite_joins=Rate.parse(env.text("RATE_LIMIT_INVITE_JOINS", "10/600")),
        # [host identity and the service API]
        accounts=_accounts(env.text("ACCOUNTS", "password").lower()),
        auth_jwt_secret=env.text("AUTH_JWT_SECRET") or None,
        auth_jwks_url=env.text("AUTH_JWKS_URL") or None,
        auth_jwt_issuer=env.text("AUTH_JWT_ISSUER") or None,
        auth_jwt_audience=env.text("AUTH_JWT_AUDIENCE") or None,
        auth_jwt_leeway_seconds=max(0.0, env.number("AUTH_JWT_LEEWAY_SECONDS", 30.0)),
        auth_jwks_refetch_seconds=max(0.0, env.number("AUTH_JWKS_REFETCH_SECONDS", 30.0)),
        auth_jwks_cache_seconds=max(1.0, env.number("AUTH_JWKS_CACHE_SECONDS", 3600.0)),
        service_keys=_service_keys(env.text("SERVICE_KEY")),
        # Under Heroku's router, which answers 503 to a request still running at 30 s.
        erase_seconds=max(0.0, env.number("ERASE_SECONDS", 20.0)),
        # [telemetry]
        # Exported only when an OTEL_EXPORTER_OTLP_*ENDPOINT is set; the SDK reads the others too.
        otel=tuple(sorted((name, value) for name, value in env.environ.items() if name.startswith("OTEL_"))),
        dyno=env.text("DYNO", "local"),
        worker_slot=env.text("CHAT_WORKER_SLOT", "0"),
        release_version=env.text("HEROKU_RELEASE_VERSION") or None,
        log_format=_log_format(env.text("LOG_FORMAT", "text").lower()),
        **_webhooks(env),
    )


def _accounts(value: str) -> str:
    if value not in ("password", "host"):
        raise ConfigurationError(f"ACCOUNTS={value!r}: use `password` (the default) or `host`.")
    return value


# A service key is a bearer credential with every power over every room: a short one is guessable.
MIN_SERVICE_KEY = 32


def _service_keys(value: str) -> tuple[str, ...]:
    """SERVICE_KEY's keys (comma-separated: several during a rotation)."""
    keys = tuple(key.strip() for key in value.split(",") if key.strip())
    for key in keys:
        if len(key) < MIN_SERVICE_KEY or key.startswith("sse.") or "." in key:
            raise ConfigurationError(
                f"SERVICE_KEY: each key needs at least {MIN_SERVICE_KEY} characters and no `.` "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
            )
    return keys


def _webhooks(env: _Environment) -> dict:
    """The [webhooks] settings. A URL without a secret, or a lease too short to outlast a
    delivery's timeout (two holders of one room at once would break its order), cannot work."""
    urls = tuple(_words(env.text("WEBHOOK_URL")))
    secrets = tuple(_words(env.text("WEBHOOK_SECRET")))
    for number, url in enumerate(urls, 1):
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            # Named by its place, not its text: a mistyped URL ("https//user:key@host") may still
            # hold a credential, and this message goes to the start-up log.
            raise ConfigurationError(f"WEBHOOK_URL: endpoint {number} is not an http(s) URL with a host.")
    if len(urls) > MAX_WEBHOOK_URLS:
        raise ConfigurationError(f"WEBHOOK_URL names {len(urls)} endpoints: at most {MAX_WEBHOOK_URLS}.")
    if urls and not secrets:
        raise ConfigurationError("WEBHOOK_URL is set without WEBHOOK_SECRET: every delivery is signed.")
    timeout = env.number("WEBHOOK_TIMEOUT_SECONDS", 10.0)
    lease = env.number("WEBHOOK_LEASE_SECONDS", max(60.0, 4 * timeout))
    if lease < 2 * timeout + 5:
        raise ConfigurationError("WEBHOOK_LEASE_SECONDS must be at least twice WEBHOOK_TIMEOUT_SECONDS plus 5.")
    base = env.number("WEBHOOK_RETRY_BASE_SECONDS", 2.0)
    return {
        "webhook_urls": urls,
        "webhook_secrets": secrets,
        "webhook_in_web": env.flag("WEBHOOK_IN_WEB", True),
        "webhook_timeout_seconds": timeout,
        "webhook_concurrency": max(1, env.integer("WEBHOOK_CONCURRENCY", 4)),
        "webhook_retry_base_seconds": base,
        "webhook_retry_max_seconds": max(base, env.number("WEBHOOK_RETRY_MAX_SECONDS", 600.0)),
        "webhook_retry_for_seconds": env.number("WEBHOOK_RETRY_FOR_SECONDS", 3 * 24 * 3600.0),
        "webhook_poll_seconds": env.number("WEBHOOK_POLL_SECONDS", 2.0),
        "webhook_lease_seconds": lease,
    }


def _words(text: str) -> list[str]:
    """Comma- or space-separated values."""
    return [word for word in text.replace(",", " ").split() if word]


def _log_format(value: str) -> str:
    if value not in ("text", "json"):
        raise ConfigurationError(f"LOG_FORMAT={value!r}: use text or json.")
    return value
