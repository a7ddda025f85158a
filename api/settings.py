"""API settings, read from ``LLMCHAT_*`` environment variables (pydantic-settings).

They extend the runtime's settings (models folder, threads, time-outs), so one prefix
configures the whole server. The README lists every variable.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from api.database import dialect_of
from runtime.protocol import Device
from runtime.settings import PROJECT_ROOT, RuntimeSettings


class ApiSettings(RuntimeSettings):
    """Where the API keeps its data and how it limits requests."""

    db_url: str = Field(
        str(PROJECT_ROOT / "data" / "llmchat.sqlite3"),
        validation_alias=AliasChoices("LLMCHAT_DB_URL", "LLMCHAT_DB_PATH", "db_url", "db_path"),
        description=(
            "The database: an SQLite file's path (or sqlite:///path), or postgres://user:password@host:5432/name "
            "(LLMCHAT_DB_PATH is the old name)."
        ),
    )
    db_pool_min: int = Field(1, ge=1, description="PostgreSQL: connections each API process keeps open.")
    db_pool_max: int = Field(10, ge=1, description="PostgreSQL: most connections each API process opens.")
    logs_dir: Path = Field(PROJECT_ROOT / "logs", description="Application log and one log per chat.")
    host: str = Field("127.0.0.1", description="Address the API binds to (loopback by default).")
    port: int = Field(
        8000, ge=1, le=65535, validation_alias=AliasChoices("LLMCHAT_PORT", "PORT"),
        description="API port (LLMCHAT_PORT, else the platform's PORT).",
    )
    auth: Literal["on", "off"] = Field(
        "on", description="Accounts: 'off' is a single-user mode for one machine, allowed on loopback only."
    )
    session_idle_s: float = Field(12 * 3600, gt=0, description="A session ends after this long unused.")
    session_max_s: float = Field(30 * 86400, gt=0, description="A session ends after this long, however used.")
    cookie_secure: bool = Field(False, description="Mark the session cookie Secure (serve over TLS).")
    metrics_token: SecretStr | None = Field(None, description="A bearer token that may read /metrics (a scraper's).")
    forwarded_allow_ips: list[str] = Field(
        ["127.0.0.1", "::1"], description="Peers trusted to name the client in X-Forwarded-For (the dashboard)."
    )
    limit_loaded_models: int = Field(4, ge=0, description="Models one user may hold loaded at once (0: no limit).")
    limit_concurrent_replies: int = Field(8, ge=0, description="Replies one user may have generated at once (0: no limit).")
    limit_tokens_per_day: int = Field(0, ge=0, description="Tokens one user may generate a UTC day (0: no limit).")
    machine_sample_s: float = Field(
        5.0, ge=0.5, le=60, description="How often the Machine page's figures are sampled (seconds); 15 minutes are kept."
    )
    max_message_chars: int = Field(32_000, ge=1, description="Longest accepted chat message.")
    max_import_bytes: int = Field(
        50_000_000, ge=1024, description="Largest accepted chat archive (POST /chats/import), in bytes."
    )
    default_max_new_tokens: int = Field(256, ge=1, le=32_768, description="Reply length for new chats.")
    default_temperature: float = Field(0.7, ge=0, le=2, description="Temperature for new chats.")
    default_top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling for new chats.")
    default_device: Device = Field("auto", description="Device when none is given.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Names requests may call the API by (Host header) besides localhost, 127.0.0.1, ::1 and a "
            "specific LLMCHAT_HOST, e.g. the public name a proxy serves it under (JSON list)."
        ),
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Origins of other sites whose pages may call the API from a browser, e.g. "
            "https://chat.example.org (JSON list); the API's own origin always may."
        ),
    )

    @field_validator("db_url", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, os.PathLike) else value

    @field_validator("db_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        dialect_of(value)  # ValueError naming what is accepted
        return value

    @model_validator(mode="after")
    def _pool_in_order(self) -> ApiSettings:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError(f"LLMCHAT_DB_POOL_MIN ({self.db_pool_min}) exceeds LLMCHAT_DB_POOL_MAX ({self.db_pool_max})")
        return self

    def refuse_open_local_mode(self) -> None:
        """Without accounts, anyone who reaches the port reads every chat: bind loopback only."""
        if self.auth == "off" and not is_loopback(self.host):
            raise SystemExit(
                f"LLMCHAT_AUTH=off serves every chat to whoever reaches the port, so it binds loopback "
                f"only, and LLMCHAT_HOST is {self.host}: bind 127.0.0.1, or leave authentication on"
            )


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
