"""The worker pid file: records live workers so a restarted runtime can end the ones an
earlier run left behind (Linux's parent-death signal covers most cases; this covers the rest).

Entries are ``pid:parent:created``; a process is ended only if it still has the recorded
start time, so a pid the OS has since reused is never touched. Every method reads or writes
the file and asks the OS about processes: call them off the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

import psutil

from runtime.supervisor import pid_running

log = logging.getLogger(__name__)


class PidFile:
    """This process's workers, kept in a file shared with other runtimes on the machine."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pids: dict[int, float] = {}  # pid -> process start time
        self._lock = threading.Lock()  # calls come from worker threads

    def reap_orphans(self) -> None:
        """End workers whose recorded parent is gone, and forget them."""
        with self._lock:
            try:
                lines = self._path.read_text().split()
            except OSError:
                return
            kept = []
            for entry in lines:
                try:
                    pid, parent, created = entry.split(":")
                    process_id, parent_id, started = int(pid), int(parent), float(created)
                except ValueError:
                    continue
                if pid_running(parent_id) and parent_id != os.getpid():
                    kept.append(entry)  # another live runtime's worker: not ours to end
                    continue
                with contextlib.suppress(psutil.Error):
                    process = psutil.Process(process_id)
                    if abs(process.create_time() - started) < 0.01 and "multiprocessing" in " ".join(process.cmdline()):
                        log.warning("ending worker pid %s left behind by an earlier run", process_id)
                        process.kill()
            self._write(kept)

    def add(self, pid: int) -> None:
        with self._lock, contextlib.suppress(psutil.Error):
            self._pids[pid] = psutil.Process(pid).create_time()
            self._save()

    def discard(self, pid: int) -> None:
        with self._lock:
            if self._pids.pop(pid, None) is not None:
                self._save()

    def _save(self) -> None:
        try:
            others = [e for e in self._path.read_text().split() if e.split(":")[1:2] != [str(os.getpid())]]
        except OSError:
            others = []
        mine = [f"{pid}:{os.getpid()}:{created}" for pid, created in sorted(self._pids.items())]
        self._write(others + mine)

    def _write(self, entries: list[str]) -> None:
        with contextlib.suppress(OSError):
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.write_text("\n".join(entries) + ("\n" if entries else ""))
