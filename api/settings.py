"""API settings, read from ``LLMCHAT_*`` environment variables (pydantic-settings).

They extend the runtime's settings (models folder, threads, time-outs), so one prefix
configures the whole server. The README lists every variable.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from runtime.protocol import Device
from runtime.settings import PROJECT_ROOT, RuntimeSettings


class ApiSettings(RuntimeSettings):
    """Where the API keeps its data and how it limits requests."""

    db_path: Path = Field(PROJECT_ROOT / "data" / "llmchat.sqlite3", description="SQLite database file.")
    logs_dir: Path = Field(PROJECT_ROOT / "logs", description="Application log and one log per chat.")
    host: str = Field("127.0.0.1", description="Address the API binds to (loopback by default).")
    port: int = Field(
        8000, ge=1, le=65535, validation_alias=AliasChoices("LLMCHAT_PORT", "PORT"),
        description="API port (LLMCHAT_PORT, else the platform's PORT).",
    )
    max_message_chars: int = Field(32_000, ge=1, description="Longest accepted chat message.")
    default_max_new_tokens: int = Field(256, ge=1, le=32_768, description="Reply length for new chats.")
    default_temperature: float = Field(0.7, ge=0, le=2, description="Temperature for new chats.")
    default_top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling for new chats.")
    default_device: Device = Field("auto", description="Device when none is given.")
