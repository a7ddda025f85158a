"""The worker process: loads one model, then serves requests from its pipe until told to stop.

Started by :mod:`runtime.manager` from a ``spawn`` context, so the child starts from a
clean interpreter and only it imports the ML library. It announces :class:`Ready` (or a
:class:`Failed` load) and then handles one request at a time, checking the pipe between
tokens so an :class:`Abort` stops a generation mid-stream.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections import deque
from multiprocessing.connection import Connection

from runtime import backends
from runtime.backends.base import Backend, Usage
from runtime.errors import to_wire
from runtime.protocol import (
    LOAD_REQUEST_ID,
    Abort,
    CountTokens,
    Failed,
    Finished,
    Generate,
    GenerationMetrics,
    Ready,
    Shutdown,
    TokenChunk,
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
        )
    )
    try:
        _Server(backend, conn).serve()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away: nothing left to serve
    finally:
        backend.close()


class _Server:
    """Runs requests one after another; messages that arrive mid-generation are queued."""

    def __init__(self, backend: Backend, conn: Connection) -> None:
        self._backend = backend
        self._conn = conn
        self._backlog: deque[ToWorker] = deque()
        self._stopping = False

    def serve(self) -> None:
        while not self._stopping:
            message = self._backlog.popleft() if self._backlog else self._conn.recv()
            if isinstance(message, Shutdown):
                return
            if isinstance(message, Generate):
                self._generate(message)
            elif isinstance(message, CountTokens):
                self._count(message)
            # An Abort for a request that already ended needs no answer.

    def _count(self, request: CountTokens) -> None:
        try:
            count = self._backend.count_tokens(request.messages)
        except Exception as exc:  # noqa: BLE001
            self._conn.send(Failed(request.request_id, *to_wire(exc)))
            return
        self._conn.send(TokenCount(request.request_id, count))

    def _generate(self, request: Generate) -> None:
        usage = Usage()
        started = time.perf_counter()
        first_token_at: float | None = None
        aborted = False
        tokens = self._backend.stream(request.messages, request.params, usage)
        try:
            for text in tokens:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if text:
                    self._conn.send(TokenChunk(request.request_id, text))
                if self._abort_requested(request.request_id):
                    aborted = True
                    break
        except Exception as exc:  # noqa: BLE001 - reported to the parent; the worker lives on
            self._conn.send(Failed(request.request_id, *to_wire(exc)))
            return
        finally:
            tokens.close()  # type: ignore[attr-defined]
        finished = time.perf_counter()
        metrics = GenerationMetrics(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            time_to_first_token_s=(first_token_at or finished) - started,
            total_time_s=finished - started,
        )
        reason = "aborted" if aborted else usage.finish_reason
        self._conn.send(Finished(request.request_id, metrics, reason))

    def _abort_requested(self, request_id: str) -> bool:
        while self._conn.poll():
            message = self._conn.recv()
            if isinstance(message, Abort) and message.request_id == request_id:
                return True
            if isinstance(message, Shutdown):
                self._stopping = True
                return True
            if not isinstance(message, Abort):
                self._backlog.append(message)
        return False
