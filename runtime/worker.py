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
from runtime.errors import to_wire
from runtime.protocol import LOAD_REQUEST_ID, Failed, Ready, WorkerSpec
from runtime.serving import StepLoop

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
        StepLoop(backend, conn).serve()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away: nothing left to serve
    finally:
        backend.close()
