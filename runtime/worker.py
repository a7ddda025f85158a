"""The worker process: loads one model, then serves requests from its pipe until told to stop.

Started by :mod:`runtime.manager` from a ``spawn`` context, so the child starts from a
clean interpreter and only it imports the ML library. It announces :class:`Ready` (or a
:class:`Failed` load), then steps its backend while any reply runs (the backend batches
them) and reads the pipe between steps, so a new request joins at the next step and an
:class:`Abort` ends one reply mid-stream.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from multiprocessing.connection import Connection

from runtime import backends
from runtime.backends.base import Backend
from runtime.errors import to_wire
from runtime.protocol import (
    LOAD_REQUEST_ID,
    Abort,
    CountTokens,
    Failed,
    Generate,
    Ready,
    Shutdown,
    TokenCount,
    ToWorker,
    WorkerSpec,
)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, even by ``kill -9``."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def main(spec: WorkerSpec, conn: Connection, parent_pid: int) -> None:
    """Entry point of the child process."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if spec.cuda_visible_devices is not None:
        # Before any backend import: CUDA reads it once, when it initialises.
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible_devices
    started = time.perf_counter()
    try:
        backend = backends.create(spec.backend)
        loaded = backend.load(spec)
    except BaseException as exc:  # noqa: BLE001 - everything is reported, nothing raised
        conn.send(Failed(LOAD_REQUEST_ID, *to_wire(exc)))
        return
    conn.send(
        Ready(
            LOAD_REQUEST_ID,
            pid=os.getpid(),
            backend=spec.backend,
            device="cuda" if loaded.device == "cuda" else "cpu",
            context_length=loaded.context_length,
            load_time_s=time.perf_counter() - started,
            has_chat_template=loaded.has_chat_template,
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            parallel=loaded.parallel,
        )
    )
    try:
        _Server(backend, conn).serve()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away: nothing left to serve
    finally:
        backend.close()


class _Server:
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
