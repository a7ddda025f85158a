"""Upgrading a database from before chats were trees: each chat becomes one branch, in the
order its messages were written, and its messages become searchable.

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
from runtime.fake import FakeRuntime, fake_model


async def test_existing_chats_become_single_branch_trees(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    before = tmp_path / "migrations" / "models"  # the migrations there were before trees
    before.mkdir(parents=True)
    for migration in sorted((MIGRATIONS / "models").glob("[0-5]_*.py")):
        shutil.copy(migration, before)

    async def upgrade_to_before() -> None:
        async with Command(tortoise_config=tortoise_config(db), app="models", location=str(before.parent)) as command:
            await command.init()
            await command.upgrade(run_in_transaction=True)

    await asyncio.create_task(upgrade_to_before())  # its own task: Tortoise's context stays in there
    with sqlite3.connect(db) as raw:
        raw.execute("INSERT INTO users (name, password_hash, role, disabled, created_at) "
                    "VALUES ('old', 'x', 'admin', 0, '2026-01-01')")
        owner = raw.execute("SELECT id FROM users WHERE role = 'admin'").fetchone()[0]
        for chat in ("one", "two"):
            raw.execute("INSERT INTO chats (id, title, created_at, updated_at, system_prompt, temperature, top_p, "
                        "max_new_tokens, owner_id) VALUES (?, ?, '2026-01-01', '2026-01-01', '', 0.7, 0.95, 64, ?)",
                        (chat, "Zanzibar trip" if chat == "one" else None, owner))
        for n, (chat, role, text) in enumerate([
            ("one", "user", "where is Zanzibar"), ("two", "user", "hello"), ("one", "assistant", "off Tanzania"),
            ("two", "assistant", "hi"), ("one", "user", "how warm is it"), ("one", "assistant", "warm"),
        ]):
            raw.execute("INSERT INTO messages (chat_id, role, text, created_at, status) VALUES (?, ?, ?, ?, 'complete')",
                        (chat, role, text, f"2026-01-01 00:00:0{n}"))
    settings = ApiSettings(models_dir=tmp_path / "models", db_path=db, logs_dir=tmp_path / "logs", state_dir=tmp_path)
    async with create_app(settings, runtime=FakeRuntime([fake_model("fake.gguf")])).test_app():
        pass  # starting applies the pending migrations
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT id, chat_id, parent_id FROM messages ORDER BY id").fetchall()
        ids = {chat: [r[0] for r in rows if r[1] == chat] for chat in ("one", "two")}
        parents = {r[0]: r[2] for r in rows}
        for chat in ("one", "two"):
            assert [parents[i] for i in ids[chat]] == [None, *ids[chat][:-1]]
        current = dict(raw.execute("SELECT id, current_message_id FROM chats WHERE id IN ('one', 'two')").fetchall())
        assert current == {"one": ids["one"][-1], "two": ids["two"][-1]}
        found = raw.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'zanzibar'").fetchall()
        assert found == [(ids["one"][0],)]
        titled = raw.execute("SELECT chat_id FROM chat_titles_fts WHERE chat_titles_fts MATCH 'zanzib*'").fetchall()
        assert titled == [("one",)]
