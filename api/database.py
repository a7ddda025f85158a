"""Which database the API stores in: ``LLMCHAT_DB_URL`` read as SQLite or PostgreSQL, its Tortoise
configuration, its migrations folder, and opening it.

- A file path or ``sqlite:///absolute/path`` (``sqlite://relative/path``): one SQLite file in WAL
  mode, the embedded default that needs no server.
- ``postgres://user:password@host:port/database`` (or ``postgresql://``): PostgreSQL through
  Tortoise's asyncpg backend, a pool of ``LLMCHAT_DB_POOL_MIN``..``LLMCHAT_DB_POOL_MAX``
  connections per API process (``?minsize=&maxsize=`` in the URL win). The database must use a
  UTF-8 ``LC_CTYPE``: search folds case and finds non-ASCII words only then.

Each dialect has its own chain of aerich migrations (``api/migrations/models`` for SQLite,
``api/migrations/postgres/models`` for PostgreSQL) that ends in the same models; a test keeps
them in step, and ``python -m api.migrations new NAME`` writes the next step of both.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from tortoise import BaseDBAsyncClient, Tortoise
from tortoise.backends.base.config_generator import expand_db_url

Dialect = Literal["sqlite", "postgres"]


class StartRefused(Exception):
    """The API cannot start as configured; the message says why and what to do (no traceback needed)."""

MIGRATIONS = Path(__file__).parent / "migrations"
SETUP_LOCK = 0x6C6C6D6D  # a PostgreSQL advisory lock key: one process at a time migrates and bootstraps


def dialect_of(url: str) -> Dialect:
    """``sqlite`` for a path or an ``sqlite:`` URL, ``postgres`` for ``postgres(ql):``; else ValueError."""
    scheme = urlsplit(url).scheme
    if scheme in ("", "sqlite") or len(scheme) == 1:  # "" or a Windows drive letter: a path
        return "sqlite"
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    raise ValueError(
        f"LLMCHAT_DB_URL: {scheme}: is not a database this app uses; give a file path, "
        "sqlite:///path/to/file.sqlite3 or postgres://user:password@host:5432/database"
    )


def sqlite_path(url: str) -> Path:
    """The file of an SQLite URL or path."""
    return Path(url.removeprefix("sqlite://"))


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    if dialect_of(url) == "sqlite":
        return str(sqlite_path(url))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=netloc[0].split(":", 1)[0] + ":***@" + netloc[1]))


def migrations_dir(dialect: Dialect) -> Path:
    """The folder aerich's ``location`` names for a dialect (the app's migrations are in ``<it>/models``)."""
    return MIGRATIONS / "postgres" if dialect == "postgres" else MIGRATIONS


def tortoise_config(url: str | Path, pool_min: int = 1, pool_max: int = 10) -> dict[str, Any]:
    """The Tortoise (and aerich) configuration for a database URL (or an SQLite file's path)."""
    url = str(url)
    if dialect_of(url) == "sqlite":
        connection: dict[str, Any] = {
            "engine": "tortoise.backends.sqlite",
            "credentials": {"file_path": str(sqlite_path(url)), "journal_mode": "WAL", "foreign_keys": "ON"},
        }
    else:
        connection = expand_db_url(url.replace("postgresql://", "postgres://", 1))
        credentials = connection["credentials"]
        credentials.setdefault("minsize", pool_min)
        credentials.setdefault("maxsize", pool_max)
        credentials.setdefault("application_name", "llmchat")
    return {
        "connections": {"default": connection},
        "apps": {"models": {"models": ["api.store", "aerich.models"], "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


def dialect_of_connection(db: BaseDBAsyncClient) -> Dialect:
    """The dialect of an open connection (or transaction)."""
    return "postgres" if db.capabilities.dialect == "postgres" else "sqlite"


@contextlib.asynccontextmanager
async def setup_lock(url: str) -> AsyncIterator[None]:
    """Held while a process migrates the database and creates the first account.

    On PostgreSQL several API processes may start at once: a session advisory lock on a
    connection of its own makes them take turns. On SQLite one process serves: nothing to do.
    """
    if dialect_of(url) == "sqlite":
        yield
        return
    connection = await connect(url)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", SETUP_LOCK)
        yield
    finally:
        await connection.close()  # ends the session, and with it the lock


async def open_store(url: str | Path, pool_min: int = 1, pool_max: int = 10) -> None:
    """Apply pending migrations, then open Tortoise on the database at ``url``.

    Requests run in tasks other than the one that opens the store, so the context is made
    the process-wide fallback (what Tortoise's own ASGI integrations do); one app per
    process opens it at a time.
    """
    from aerich import Command

    url = str(url)
    dialect = dialect_of(url)
    if dialect == "sqlite":
        sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
    else:
        await _check_postgres(url)
    config = tortoise_config(url, pool_min, pool_max)
    async with Command(tortoise_config=config, app="models", location=str(migrations_dir(dialect))) as command:
        await command.init()
        await command.upgrade(run_in_transaction=True)
    await Tortoise.init(config=config, _enable_global_fallback=True)


async def end_cut_replies() -> None:
    """Replies left ``streaming`` by a server that stopped will never finish: they become errors.
    Only for a process that knows no other one streams them (see :mod:`api.replicas`)."""
    from api.store import Message

    await Message.filter(status="streaming").update(status="error", error="the server stopped during this reply")


async def close_store() -> None:
    await Tortoise.close_connections()
    # Tortoise caches each table's INSERT/DELETE statements by connection name, not by dialect:
    # a process that opens another database next (tests do) must not reuse the last one's SQL.
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    EXECUTOR_CACHE.clear()


async def connect(url: str, name: str = "llmchat") -> Any:
    """A connection of its own to the PostgreSQL database at ``url`` (outside Tortoise's pool,
    for session locks), or :class:`StartRefused` naming the server without the password."""
    import asyncpg

    dsn = urlunsplit(urlsplit(url)._replace(scheme="postgresql", query=""))  # the pool sizes are Tortoise's
    try:
        return await asyncpg.connect(dsn, server_settings={"application_name": name[:63]})
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartRefused(f"LLMCHAT_DB_URL: cannot connect to {redacted(url)}: {exc}") from exc


async def _check_postgres(url: str) -> None:
    """Refuse a database whose character type is not UTF-8, with what to do instead."""
    connection = await connect(url)
    try:
        ctype, provider = await connection.fetchrow(
            "SELECT datctype, datlocprovider FROM pg_database WHERE datname = current_database()"
        )
    finally:
        await connection.close()
    if provider != "i" and "utf" not in ctype.lower().replace("-", ""):
        raise StartRefused(
            f"LLMCHAT_DB_URL: the database {redacted(url)} has LC_CTYPE {ctype!r}, so PostgreSQL would neither "
            "fold the case of non-ASCII letters nor find words such as 'αθηνα' or 'x²'. Create it with a UTF-8 "
            "character type: CREATE DATABASE llmchat OWNER llmchat ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' "
            "LC_CTYPE 'C.UTF-8' TEMPLATE template0"
        )


def placeholders(sql: str, dialect: Dialect) -> str:
    """Raw SQL written with ``?`` parameters, as the dialect takes them (``$1``, ``$2``… on PostgreSQL).

    For the few statements written by hand (bulk import and export); the statements contain
    no ``?`` of their own."""
    if dialect == "sqlite":
        return sql
    numbers = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)


def stored_time(value: datetime, dialect: Dialect) -> datetime | str:
    """A time as a raw statement passes it: ISO text in UTC as Tortoise stores it in SQLite (so that
    stored times sort as text), an aware datetime for PostgreSQL's timestamptz."""
    value = value.astimezone(UTC)
    return value.isoformat(" ") if dialect == "sqlite" else value
