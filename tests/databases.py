"""Raw access to a test's database, SQLite or PostgreSQL, from beside the app (as another writer would)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from api.database import dialect_of, placeholders, sqlite_path


async def raw_rows(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of one statement written with ``?`` parameters, on its own connection."""
    if dialect_of(url) == "sqlite":
        with sqlite3.connect(sqlite_path(url)) as db:
            return list(db.execute(sql, params))
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await connection.fetch(placeholders(sql, "postgres"), *params)]
    finally:
        await connection.close()


async def raw_write(url: str, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """One statement run for each row of parameters, committed."""
    if dialect_of(url) == "sqlite":
        with sqlite3.connect(sqlite_path(url)) as db:
            db.executemany(sql, rows)
        return
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.executemany(placeholders(sql, "postgres"), rows)
    finally:
        await connection.close()


async def everything_stored(url: str) -> bytes:
    """All the database holds, as bytes to search: the SQLite files, or every row of every table."""
    if dialect_of(url) == "sqlite":
        path = sqlite_path(url)
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    tables = await raw_rows(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    dump = []
    for (table,) in tables:
        dump += [row[0] for row in await raw_rows(url, f'SELECT t::text FROM "{table}" t')]
    return "\n".join(dump).encode()
