"""Start and stop the real things the tests talk to. Only loopback addresses, only free ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SHARED_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LOG_DIR = ROOT / "test-artifacts" / "logs"
# Every test signs up from 127.0.0.1: limits high enough not to get in the way, unless a test
# sets its own (each Server's env overrides these). No worker recycling either: a session-long
# server would restart a worker mid-test (1012 to its WebSockets); the tests of recycling set it.
BASE_ENV = {
    "RATE_LIMIT_AUTH": "100000/60",
    "RATE_LIMIT_MESSAGES": "100000/10",
    "MAX_REQUESTS": "0",
    # [documents]
    # [lists and mutations]
    "RATE_LIMIT_ACTIONS": "100000/10",
    "RATE_LIMIT_ROOMS": "100000/3600",
    # [addresses and accounts]
    "RATE_LIMIT_LOGIN_ACCOUNT": "100000/300",
    "HEALTHZ_DETAILS": "1",  # tests/test_viewer_cache.py and others read a worker's pid and counters
    # [sessions and profiles]
    # [live bounds]
    # One user holds 24 connections in tests/test_live.py's races, 42 in tests/test_resume.py's burst.
    "MAX_CONNECTIONS_PER_USER": "50",
    # One user resumes thousands of events at once in tests/test_resume.py (3 x 2,999).
    "LIVE_REPLAY_BUDGET": "1000000/60",
    # [invites]
    "RATE_LIMIT_INVITE_JOINS": "100000/600",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def _admin(sql: str) -> None:
    subprocess.run(
        ["psql", POSTGRES_ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
    )


def create_database(name: str) -> str:
    """A fresh database on the shared server; returns its URL in Heroku's `postgres://` form."""
    _admin(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgres://", 1)
    return f"{base}/{name}"


def drop_database(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(env: Mapping[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "db.migrate"], cwd=ROOT, env={**os.environ, **env}, check=True)


@dataclass
class Server:
    """`gunicorn -c serving/gunicorn.conf.py app:app`, the Procfile's web command, on a free port."""

    env: dict[str, str]
    workers: int = 2
    port: int = field(default_factory=free_port)
    app: str = "app:app"
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def start(self, timeout: float = 30.0) -> Server:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"server-{self.port}.log"
        env = {**os.environ, **BASE_ENV, "PORT": str(self.port), "WEB_CONCURRENCY": str(self.workers), **self.env}
        command = ["gunicorn", "-c", "serving/gunicorn.conf.py", self.app]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            self._kill_group()
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._kill_group()

    def kill(self) -> None:
        """Every process of the server at once, as when a dyno dies: a SIGKILLed gunicorn master
        alone leaves its workers serving."""
        self._kill_group()
        if self.process is not None:
            self.process.wait(10)

    def _kill_group(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


@contextlib.contextmanager
def served_on(backend: str, env: Mapping[str, str], database_url: str, directory: Path) -> Iterator[Server]:
    """The server on one of the two backends every feature runs on, with `env` added: "postgres"
    (`database_url`, the shared Redis under a prefix of its own, two workers: what a dyno runs)
    or "sqlite" (the embedded default: a SQLite file in `directory`, migrated here, no Redis,
    one worker). Stopped after."""
    if backend == "postgres":
        database = {
            "DATABASE_URL": database_url,
            "REDIS_URL": SHARED_REDIS_URL,
            "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        }
        workers = 2
    else:
        database = {"DATABASE_URL": f"sqlite:///{directory / 'chat.db'}", "REDIS_URL": ""}
        migrate(database)
        workers = 1
    server = Server(env={**database, **env}, workers=workers).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def served_with_limits(prefix: str, limits: Mapping[str, str], workers: int = 2) -> Iterator[Server]:
    """gunicorn on a fresh database (migrated, dropped after), the shared Redis under a prefix of
    its own, and `limits` (rate-limit settings, say): what each rate-limit test module serves."""
    name = unique_name(prefix)
    url = create_database(name)
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        **limits,
    }
    server: Server | None = None
    try:
        migrate({"DATABASE_URL": url})
        server = Server(env=env, workers=workers).start()
        yield server
    finally:
        if server is not None:
            server.stop()
        drop_database(name)


def _as_postgres(*command: str) -> list[str]:
    """The server refuses to run as root; tests on CI run as root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@dataclass
class PrivatePostgres:
    """A throwaway Postgres cluster of our own, for tests that log, limit or stop Postgres:
    the shared server is never touched."""

    settings: tuple[str, ...] = ()
    # Not under pytest's tmp_path: the postgres user must be able to reach it.
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="chat-pg-")))
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def start(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        data = self.directory / "data"
        if not data.exists():
            subprocess.run(
                _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"),
                check=True,
                capture_output=True,
            )
        options = " ".join(
            [f"-p {self.port}", f"-k {self.directory}", "-c listen_addresses=127.0.0.1", "-c fsync=off"]
            + [f"-c {setting}" for setting in self.settings]
        )
        subprocess.run(
            _as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.log_path), "-w", "start"
            ),
            check=True,
            capture_output=True,
        )
        return self

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is a crash (no checkpoint, sessions just end); `fast` is an orderly
        shutdown that tells every session "terminating connection due to administrator command"."""
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", mode, "stop"),
            capture_output=True,
        )

    def sql(self, statement: str) -> str:
        """One statement as the superuser, over TCP; its output unaligned, without headers."""
        result = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-Atqc", statement],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def standby(self) -> PrivatePostgres:
        """A streaming replica of this running cluster (`pg_basebackup -R`) on a port of its own,
        started: what a high-availability plan keeps ready to promote."""
        replica = PrivatePostgres(settings=self.settings)
        if os.geteuid() == 0:
            shutil.chown(replica.directory, "postgres")
        subprocess.run(
            _as_postgres(
                *(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"),
                *("-D", str(replica.directory / "data"), "-R", "-X", "stream", "-c", "fast"),
            ),
            check=True,
            capture_output=True,
        )
        return replica.start()

    def promote(self) -> None:
        """End recovery on a standby: it takes writes from now on."""
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-w", "promote"),
            check=True,
            capture_output=True,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class PrivateRedis:
    """A redis-server of the test's own, to kill and restart; the shared one is never touched."""

    arguments: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    tls_port: int | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.tls_port is not None:
            return f"rediss://127.0.0.1:{self.tls_port}"
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> PrivateRedis:
        port = ["--port", str(self.port)]
        if self.tls_port is not None:
            port = ["--port", "0", "--tls-port", str(self.tls_port)]
        command = ["redis-server", *port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *self.arguments]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.tls_port or self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: nothing is refused, nothing answers, no connection drops (a hung Redis)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def cli(self, *command: str) -> str:
        tls = ["--tls", "--insecure"] if self.tls_port is not None else []
        port = str(self.tls_port or self.port)
        result = subprocess.run(["redis-cli", "-p", port, *tls, *command], capture_output=True, text=True, check=True)
        return result.stdout

    def connected_clients(self) -> int:
        """Clients connected now, redis-cli's own asking among them."""
        fields = dict(line.split(":", 1) for line in self.cli("info", "clients").split() if ":" in line)
        return int(fields["connected_clients"])
