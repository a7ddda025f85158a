"""Logging: the UTF-8 application log, and one UTF-8 log file per chat under ``logs/``."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def configure_logging(logs_dir: Path) -> None:
    """Send the application log to ``logs/llmchat.log`` (UTF-8) and to stderr."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if any(getattr(h, "llmchat", False) for h in root.handlers):
        return
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in (logging.FileHandler(logs_dir / "llmchat.log", encoding="utf-8"), logging.StreamHandler()):
        handler.setFormatter(formatter)
        handler.llmchat = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)


class ChatLog:
    """Appends timestamped lines to ``logs/chats/<chat_id>.log``; writes happen off the event loop."""

    def __init__(self, logs_dir: Path) -> None:
        self._dir = logs_dir / "chats"

    def path(self, chat_id: str) -> Path:
        return self._dir / f"{_SAFE.sub('_', chat_id)}.log"

    async def write(self, chat_id: str, line: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        await asyncio.to_thread(self._append, self.path(chat_id), f"{stamp} {line}\n")

    async def delete(self, chat_id: str) -> None:
        await asyncio.to_thread(self.path(chat_id).unlink, missing_ok=True)

    def _append(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
