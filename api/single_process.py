"""One API process per state folder and per database, held by locks, unless replicas can share
(the Ray runtime on PostgreSQL, see :mod:`api.replicas`).

Model workers are children of the API process that started them, and only it can reach them,
so a second API process (Hypercorn ``--workers 2``, a second ``python -m api``, or another host
on the same PostgreSQL database) would see chats whose models it cannot serve, and would end
the first one's workers as strays when it starts. :func:`hold` refuses it with the reason:

- an exclusive ``flock`` on ``<state folder>/api.lock`` (the file names the holder's pid);
- on PostgreSQL, a session advisory lock of the database, held on a connection of its own.

Both go when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Any

from api.database import StartRefused, connect, dialect_of, redacted

LOCAL_RUNTIME_LOCK = 0x6C6C6C72  # PostgreSQL advisory lock key: an API process with the local runtime


class ProcessLocks:
    """The locks this API process holds; :meth:`release` lets go of them."""

    def __init__(self, lock_file: Any, connection: Any | None) -> None:
        self._file, self._connection = lock_file, connection

    async def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # a connection already gone released its lock
                await self._connection.close()
        self._file.close()


def _refusal(where: str, holder: str, runtime: str) -> StartRefused:
    why = (
        "The local runtime keeps each model's worker inside the API process that loaded it, so one API "
        "process serves a state folder and a database"
        if runtime == "local" else "With SQLite one API process serves the database"
    )
    return StartRefused(
        f"another API process ({holder}) already serves {where}. {why}: run a single one (Hypercorn with "
        "one worker), or give each its own LLMCHAT_STATE_DIR and LLMCHAT_DB_URL. Several API processes "
        "sharing chats need PostgreSQL (LLMCHAT_DB_URL=postgres://...) and LLMCHAT_RUNTIME=ray."
    )


async def hold(state_dir: Path, db_url: str, runtime: str = "local") -> ProcessLocks:
    """Take both locks, or raise :class:`StartRefused` saying which other process holds one."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "api.lock"
    lock_file = path.open("a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "pid unknown"
        lock_file.close()
        raise _refusal(f"the state folder {state_dir}", holder, runtime) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"pid {os.getpid()} on {socket.gethostname()}")
    lock_file.flush()
    if dialect_of(db_url) == "sqlite":
        return ProcessLocks(lock_file, None)
    try:
        connection = await connect(db_url, f"llmchat-api pid {os.getpid()} on {socket.gethostname()}")
        taken = await connection.fetchval("SELECT pg_try_advisory_lock($1)", LOCAL_RUNTIME_LOCK)
        if not taken:
            holder = await connection.fetchval(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.objid = $1 AND l.granted LIMIT 1",
                LOCAL_RUNTIME_LOCK & 0xFFFFFFFF,
            )
            await connection.close()
            raise _refusal(f"the database {redacted(db_url)}", holder or "on another host", runtime)
    except BaseException:
        lock_file.close()
        raise
    return ProcessLocks(lock_file, connection)
