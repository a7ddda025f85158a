"""Serving a loaded backend: step it while replies run, and read requests between steps.

:class:`StepLoop` is what a worker runs once its model is loaded, wherever it runs: in a
spawned worker process over its pipe (:mod:`runtime.worker`) or in a Ray actor over an
in-process queue (:mod:`runtime.ray_worker`). It needs of its connection only what
:class:`Connection` names.
"""

from __future__ import annotations

from typing import Protocol

from runtime.backends.base import Backend
from runtime.errors import to_wire
from runtime.protocol import Abort, CountTokens, Failed, FromWorker, Generate, Shutdown, TokenCount, ToWorker


class Connection(Protocol):
    """The stepping side of a worker's connection (a subset of ``multiprocessing.connection.Connection``)."""

    def poll(self) -> bool: ...

    def recv(self) -> ToWorker: ...

    def send(self, message: FromWorker) -> None: ...


class StepLoop:
    """Steps the backend while it has work, reading the pipe between steps.

    A request that arrives mid-generation joins at the next step; an abort ends its own
    request only; a token count is answered between two steps, never behind a reply.
    """

    def __init__(self, backend: Backend, conn: Connection) -> None:
        self._backend = backend
        self._conn = conn

    def serve(self) -> None:
        while True:
            # Wait for a message when idle; otherwise take only what has already arrived.
            while not self._backend.has_work or self._conn.poll():
                if not self._handle(self._conn.recv()):
                    return
            for output in self._backend.step():
                self._conn.send(output)

    def _handle(self, message: ToWorker) -> bool:
        """Act on one message; False once told to shut down."""
        if isinstance(message, Shutdown):
            return False
        if isinstance(message, Generate):
            try:
                self._backend.submit(message)
            except Exception as exc:  # noqa: BLE001 - reported to the parent; the worker lives on
                self._conn.send(Failed(message.request_id, *to_wire(exc)))
        elif isinstance(message, Abort):
            if (ended := self._backend.cancel(message.request_id)) is not None:
                self._conn.send(ended)
        elif isinstance(message, CountTokens):
            self._count(message)
        return True

    def _count(self, request: CountTokens) -> None:
        try:
            count = self._backend.count_tokens(request.messages)
        except Exception as exc:  # noqa: BLE001
            self._conn.send(Failed(request.request_id, *to_wire(exc)))
            return
        self._conn.send(TokenCount(request.request_id, count))
