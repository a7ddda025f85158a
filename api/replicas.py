"""This API process among its peers on one PostgreSQL database (the Ray runtime, several replicas).

- **Stop anywhere**: a reply streams from the replica that started it; a stop that reaches
  another replica is sent on the ``llmchat_stop`` channel (``NOTIFY``), and every replica stops
  the reply if it is streaming it (stored as ``stopped`` by its own replica, as on one process).
  Disabling a user stops that user's replies the same way.
- **Starting alone**: each replica holds a shared advisory lock for its life; one that starts
  while it can take the lock exclusively knows no other replica runs, and only then marks the
  replies a stopped server left ``streaming`` as cut (a starting replica must not cut a
  running one's replies).
- **Replies of a replica that died**: a replica holds an advisory lock on each reply it
  streams; every :data:`SWEEP_S` each replica marks ``streaming`` replies that no replica
  holds (and that are older than :data:`CLAIM_GRACE_S`) as errors.

Every lock goes with the replica's own connection, whatever ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from api.database import connect

log = logging.getLogger(__name__)

CHANNEL = "llmchat_stop"
REPLICAS_LOCK = 0x6C6C7270  # advisory key: shared by every running replica
REPLY_LOCKS = 0x6C6C7279  # advisory key space (with a message id): a reply being streamed
SWEEP_S = 2.0
CLAIM_GRACE_S = 5.0  # a reply row is claimed right after it is stored; older unclaimed ones are cut
CUT = "the API replica streaming this reply stopped"


class Replicas:
    """The link to the other replicas (see the module docstring)."""

    def __init__(self, connection: Any, alone: bool) -> None:
        self._connection = connection
        self._using = asyncio.Lock()  # one statement at a time on the connection
        self._sweeper: asyncio.Task[None] | None = None
        self.alone = alone  # no other replica ran when this one started

    @classmethod
    async def join(
        cls, url: str, stop_chat: Callable[[str, int | None], object], stop_user: Callable[[int], object]
    ) -> Replicas:
        connection = await connect(url, f"llmchat-api pid {os.getpid()} on {socket.gethostname()}")
        try:
            alone = bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", REPLICAS_LOCK))
            if not alone:
                await connection.execute("SELECT pg_advisory_lock_shared($1)", REPLICAS_LOCK)

            def heard(_: object, __: int, ___: str, payload: str) -> None:
                kind, _sep, rest = payload.partition(":")
                with contextlib.suppress(ValueError):
                    if kind == "user":
                        stop_user(int(rest))
                    elif kind == "chat":
                        chat_id, _sep, message = rest.rpartition(":")
                        stop_chat(chat_id, int(message) if message else None)

            await connection.add_listener(CHANNEL, heard)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, alone)

    async def started(self) -> None:
        """After the start-up work only a lone replica does: share the lock with the next ones,
        and begin sweeping the replies of replicas that die."""
        if self.alone:
            await self._run("SELECT pg_advisory_lock_shared($1)", REPLICAS_LOCK)
            await self._run("SELECT pg_advisory_unlock($1)", REPLICAS_LOCK)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _run(self, sql: str, *args: object) -> str:
        async with self._using:
            return str(await self._connection.execute(sql, *args))

    async def claim(self, message_id: int) -> None:
        """This replica streams reply ``message_id`` (held until :meth:`release` or its death)."""
        await self._run("SELECT pg_advisory_lock($1, $2)", REPLY_LOCKS, message_id)

    async def release(self, message_id: int) -> None:
        with contextlib.suppress(Exception):
            await self._run("SELECT pg_advisory_unlock($1, $2)", REPLY_LOCKS, message_id)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                done = await self._run(
                    "UPDATE messages SET status = 'error', error = $3 WHERE status = 'streaming' "
                    "AND created_at < now() - make_interval(secs => $2) AND id NOT IN (SELECT objid::int FROM "
                    "pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objsubid = 2 AND granted)",
                    REPLY_LOCKS, CLAIM_GRACE_S, CUT)
            except Exception:  # the database is away: try again at the next sweep
                log.warning("could not sweep the replies of stopped replicas", exc_info=True)
                continue
            if done != "UPDATE 0":
                log.warning("%s replies of a stopped API replica are now errors", done.split()[-1])

    async def stop_chat(self, chat_id: str, message_id: int | None) -> None:
        await self._run("SELECT pg_notify($1, $2)", CHANNEL, f"chat:{chat_id}:{'' if message_id is None else message_id}")

    async def stop_user(self, user_id: int) -> None:
        await self._run("SELECT pg_notify($1, $2)", CHANNEL, f"user:{user_id}")

    async def leave(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        with contextlib.suppress(Exception):
            await self._connection.close()
