"""Prototype of the proposed api/store.py change: LLMCHAT_DB_URL -> a Tortoise (and aerich) config.

- a plain path or ``sqlite:///abs/path`` -> today's SQLite config (WAL, foreign keys on)
- ``postgres://`` / ``postgresql://`` -> Tortoise's asyncpg backend, pool ``minsize``/``maxsize``
The migrations folder is chosen by dialect: api/migrations/models (SQLite, as today) or
api/migrations/postgres/models (PostgreSQL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from tortoise.backends.base.config_generator import expand_db_url

Dialect = Literal["sqlite", "postgres"]


def dialect_of(db_url: str) -> Dialect:
    scheme = urlsplit(db_url).scheme
    if scheme in ("", "sqlite"):
        return "sqlite"
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    raise ValueError(f"LLMCHAT_DB_URL: unsupported scheme {scheme!r}; use a file path, sqlite:///… or postgres://…")


def tortoise_config(db_url: str, pool_min: int = 1, pool_max: int = 10, models: list[str] | None = None) -> dict[str, Any]:
    if dialect_of(db_url) == "sqlite":
        path = urlsplit(db_url).path if db_url.startswith("sqlite:") else db_url
        connection: dict[str, Any] = {
            "engine": "tortoise.backends.sqlite",
            "credentials": {"file_path": str(Path(path)), "journal_mode": "WAL", "foreign_keys": "ON"},
        }
    else:
        connection = expand_db_url(db_url.replace("postgresql://", "postgres://", 1))
        credentials = connection["credentials"]
        # URL query parameters win (?maxsize=…); else the settings' pool size.
        credentials.setdefault("minsize", pool_min)
        credentials.setdefault("maxsize", pool_max)
        credentials.setdefault("application_name", "llmchat")
    return {
        "connections": {"default": connection},
        "apps": {"models": {"models": models or ["api.store", "aerich.models"], "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }
