"""Process supervision: start a worker process, wait for its READY, watch for its death, stop it.

Every worker is a ``spawn``-ed child with one duplex pipe. A reader thread per worker hands
whatever arrives to the event loop, so the loop never blocks on a pipe; sends go through a
one-thread executor for the same reason. EOF on the pipe means the process is gone: the
exit is reported once, after the process has been reaped. :func:`shutdown` ends a group of
workers: ask, wait a bounded time, kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import psutil

from runtime import worker
from runtime.errors import ModelLoadFailed, ModelRuntimeError, WorkerDied, from_wire
from runtime.protocol import LOAD_REQUEST_ID, Failed, FromWorker, Ready, Shutdown, ToWorker, WorkerSpec

log = logging.getLogger(__name__)


def pid_running(pid: int) -> bool:
    """Running, as opposed to gone or exited and waiting to be reaped (blocking: call off the loop)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (blocking: call off the loop)."""
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return None


class WorkerProcess:
    """One worker process: start with a READY handshake, send, receive, stop.

    ``on_message`` gets every message after READY; ``on_exit`` is called once, on the loop,
    with the reason, when the process has ended (whether asked to or not).
    """

    def __init__(
        self,
        spec: WorkerSpec,
        name: str,
        on_message: Callable[[FromWorker], None],
        on_exit: Callable[[WorkerDied], None],
    ) -> None:
        self.name = name
        self._on_message = on_message
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._sender = ThreadPoolExecutor(1, thread_name_prefix=f"send-{name}")
        self._ready: asyncio.Future[Ready] = self._loop.create_future()
        self.exited: asyncio.Event = asyncio.Event()
        context = multiprocessing.get_context("spawn")
        self._conn, self._child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=worker.main, args=(spec, self._child_conn, os.getpid()), name=f"llmchat-worker[{name}]", daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    async def start(self, timeout_s: float) -> Ready:
        """Start the process and wait for its READY; a failed or slow load ends it."""
        await asyncio.to_thread(self.process.start)
        self._child_conn.close()  # so EOF is seen when the child dies
        threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True).start()
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)
        except TimeoutError:
            await self.stop(1.0)
            raise ModelLoadFailed(f"loading {self.name} took longer than {timeout_s:.0f} s; the worker was stopped") from None
        except WorkerDied as exc:
            raise ModelLoadFailed(f"loading {self.name} failed: {exc}") from exc
        except BaseException:  # a failed load, or the start was cancelled: no process is left behind
            await asyncio.shield(self.stop(1.0))
            raise

    async def send(self, message: ToWorker) -> None:
        """Send one message; :class:`WorkerDied` if the pipe is gone."""
        try:
            await self._loop.run_in_executor(self._sender, self._conn.send, message)
        except (OSError, RuntimeError) as exc:
            raise WorkerDied(f"the worker for {self.name} is no longer running") from exc

    def send_soon(self, message: ToWorker) -> None:
        """Send without waiting, ignoring a closed pipe (for aborts from ``finally`` blocks)."""
        if self.alive:
            with contextlib.suppress(RuntimeError):  # the executor is already shut down
                self._sender.submit(self._send_quietly, message)

    async def stop(self, timeout_s: float) -> tuple[bool, int | None]:
        """Ask the worker to exit, kill it after ``timeout_s``; return (exited, exit code).

        Returns only once the process is gone (or could not be killed) and its exit reported.
        """
        pid = self.process.pid
        if pid is None:
            return True, None
        children = await asyncio.to_thread(_children, pid)
        if self.alive:
            with contextlib.suppress(ModelRuntimeError):
                await self.send(Shutdown())
        await asyncio.to_thread(self.process.join, timeout_s)
        if self.process.is_alive():
            log.warning("worker %s (pid %s) ignored shutdown; killing it", self.name, pid)
            self.process.kill()
            await asyncio.to_thread(self.process.join, timeout_s)
        await asyncio.to_thread(_kill_all, children)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited.wait(), timeout_s)  # the reader saw EOF and reported
        self._sender.shutdown(wait=False)
        exited = not await asyncio.to_thread(pid_running, pid)
        return exited, self.process.exitcode

    # Reader thread and its hand-over to the loop.

    def _send_quietly(self, message: ToWorker) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(message)

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            self._call(self._dispatch, message)
        self.process.join(5.0)  # reap it, so the exit code can be reported and the pid is gone
        self._call(self._on_eof, self.process.exitcode)

    def _call(self, callback: Callable[..., None], arg: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(callback, arg)

    def _dispatch(self, message: FromWorker) -> None:
        if message.request_id != LOAD_REQUEST_ID:
            self._on_message(message)
        elif not self._ready.done():
            if isinstance(message, Ready):
                self._ready.set_result(message)
            elif isinstance(message, Failed):
                self._ready.set_exception(from_wire(message.kind, message.message))

    def _on_eof(self, exit_code: int | None) -> None:
        self._conn.close()
        how = f"was killed by signal {-exit_code}" if exit_code and exit_code < 0 else f"exited (code {exit_code})"
        error = WorkerDied(f"the worker for {self.name} {how}")
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # mark retrieved: start() may already have given up
        self.exited.set()
        self._on_exit(error)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_all(processes: Iterable[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()


async def shutdown(processes: Iterable[WorkerProcess], timeout_s: float) -> None:
    """End every given worker: ask, wait up to ``timeout_s``, kill. Returns when all are gone."""
    await asyncio.gather(*(p.stop(timeout_s) for p in processes), return_exceptions=True)
