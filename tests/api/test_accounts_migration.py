"""Upgrading a database from before accounts: its chats go to the first administrator.

Its own module: it opens the store itself, and one app per process holds the store at a time.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from aerich import Command

from api.app import create_app
from api.database import MIGRATIONS, tortoise_config
from api.settings import ApiSettings
from api.store import User
from runtime.fake import FakeRuntime, fake_model


async def test_chats_from_before_accounts_go_to_the_first_administrator(tmp_path: Path) -> None:
    """A database at the migration before accounts, with a chat in it, upgraded by a start."""
    db = tmp_path / "old.sqlite3"
    before = tmp_path / "migrations" / "models"  # the migrations there were before accounts
    before.mkdir(parents=True)
    for migration in sorted((MIGRATIONS / "models").glob("[01]_*.py")):
        shutil.copy(migration, before)

    async def upgrade_to_before() -> None:
        async with Command(tortoise_config=tortoise_config(db), app="models", location=str(before.parent)) as command:
            await command.init()
            await command.upgrade(run_in_transaction=True)

    await asyncio.create_task(upgrade_to_before())  # its own task: Tortoise's context stays in there
    with sqlite3.connect(db) as raw:
        assert "users" not in {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        raw.execute("INSERT INTO chats (id, created_at, updated_at, system_prompt, temperature, top_p, "
                    "max_new_tokens) VALUES ('old-chat', '2026-01-01', '2026-01-01', '', 0.7, 0.95, 64)")
    settings = ApiSettings(models_dir=tmp_path / "models", db_path=db, logs_dir=tmp_path / "logs", state_dir=tmp_path)
    async with create_app(settings, runtime=FakeRuntime([fake_model("fake.gguf")])).test_app():
        admin = await User.get(role="admin")
        assert admin.name == "admin"
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT owner_id FROM chats WHERE id = 'old-chat'").fetchone() == (admin.id,)
