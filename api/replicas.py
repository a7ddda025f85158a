"""This API process among its peers on one PostgreSQL database (the Ray runtime, several replicas).

- **Stop anywhere**: a reply streams from the replica that started it; a stop that reaches
  another replica is sent on the ``llmchat_stop`` channel (``NOTIFY``), and every replica stops
  the reply if it is streaming it (stored as ``stopped`` by its own replica, as on one process).
  Disabling a user stops that user's replies the same way.
- **Starting alone**: each replica holds a shared advisory lock for its life; one that starts
  while it can take the lock exclusively knows no other replica runs, and only then marks the
  replies a stopped server left ``streaming`` as cut (a starting replica must not cut a
  running one's replies).

Both go with the replica's own connection, whatever ends the process.
"""

from __future__ import annotations

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


class Replicas:
    """The link to the other replicas (see the module docstring)."""

    def __init__(self, connection: Any, alone: bool) -> None:
        self._connection = connection
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
        """After the start-up work only a lone replica does: share the lock with the next ones."""
        if self.alone:
            await self._connection.execute("SELECT pg_advisory_lock_shared($1)", REPLICAS_LOCK)
            await self._connection.execute("SELECT pg_advisory_unlock($1)", REPLICAS_LOCK)

    async def stop_chat(self, chat_id: str, message_id: int | None) -> None:
        await self._connection.execute("SELECT pg_notify($1, $2)", CHANNEL,
                                       f"chat:{chat_id}:{'' if message_id is None else message_id}")

    async def stop_user(self, user_id: int) -> None:
        await self._connection.execute("SELECT pg_notify($1, $2)", CHANNEL, f"user:{user_id}")

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await self._connection.close()
