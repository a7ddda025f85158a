"""The database choice: LLMCHAT_DB_URL read as SQLite or PostgreSQL, both migration chains, start-up
on a real PostgreSQL server (fresh, again, concurrent) and the refusal of a non-UTF-8 database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aerich.utils import compress_dict, decompress_dict, get_models_describe
from pydantic import ValidationError
from tortoise import Tortoise, connections

from api import accounts
from api.database import (
    MIGRATIONS,
    StartRefused,
    close_store,
    dialect_of,
    end_cut_replies,
    migrations_dir,
    open_store,
    redacted,
    setup_lock,
    tortoise_config,
)
from api.settings import ApiSettings
from api.store import Chat, Message
from runtime.settings import PROJECT_ROOT
from tests.pg import PgCluster


def test_a_path_or_an_sqlite_url_is_one_sqlite_file(tmp_path: Path) -> None:
    for url in (str(tmp_path / "a.sqlite3"), f"sqlite://{tmp_path}/a.sqlite3"):
        connection = tortoise_config(url)["connections"]["default"]
        assert connection["engine"] == "tortoise.backends.sqlite"
        assert connection["credentials"] == {
            "file_path": str(tmp_path / "a.sqlite3"), "journal_mode": "WAL", "foreign_keys": "ON"
        }
    assert tortoise_config("sqlite://rel/a.sqlite3")["connections"]["default"]["credentials"]["file_path"] == "rel/a.sqlite3"


def test_a_postgres_url_uses_asyncpg_with_the_pool_sizes() -> None:
    connection = tortoise_config("postgresql://u:p%40ss@db.example:5433/chats", pool_min=2, pool_max=7)
    connection = connection["connections"]["default"]
    assert connection["engine"] == "tortoise.backends.asyncpg"
    credentials = connection["credentials"]
    assert (credentials["host"], credentials["port"], credentials["database"]) == ("db.example", 5433, "chats")
    assert (credentials["user"], credentials["password"]) == ("u", "p@ss")
    assert (credentials["minsize"], credentials["maxsize"]) == (2, 7)
    # The URL's own pool sizes win over the settings'.
    url = "postgres://u:p@db/chats?minsize=3&maxsize=4"
    credentials = tortoise_config(url, pool_min=2, pool_max=7)["connections"]["default"]["credentials"]
    assert (int(credentials["minsize"]), int(credentials["maxsize"])) == (3, 4)


def test_settings_take_the_url_the_old_path_variable_and_refuse_other_schemes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLMCHAT_DB_PATH", str(tmp_path / "old.sqlite3"))
    assert ApiSettings().db_url == str(tmp_path / "old.sqlite3")
    monkeypatch.setenv("LLMCHAT_DB_URL", "postgres://llmchat@db/llmchat")
    assert ApiSettings().db_url == "postgres://llmchat@db/llmchat"
    assert ApiSettings(db_path=tmp_path / "x.sqlite3").db_url == str(tmp_path / "x.sqlite3")
    monkeypatch.setenv("LLMCHAT_DB_URL", "mysql://root@db/llmchat")
    with pytest.raises(ValidationError, match="mysql: is not a database this app uses"):
        ApiSettings()
    monkeypatch.setenv("LLMCHAT_DB_URL", "postgres://llmchat@db/llmchat")
    monkeypatch.setenv("LLMCHAT_DB_POOL_MIN", "5")
    monkeypatch.setenv("LLMCHAT_DB_POOL_MAX", "2")
    with pytest.raises(ValidationError, match="LLMCHAT_DB_POOL_MIN"):
        ApiSettings()


def test_logs_show_the_url_without_its_password() -> None:
    assert redacted("postgres://llmchat:s3cret@db:5432/llmchat") == "postgres://llmchat:***@db:5432/llmchat"
    assert redacted("postgres://llmchat@db/llmchat") == "postgres://llmchat@db/llmchat"
    assert redacted("sqlite:///var/lib/llmchat/x.sqlite3") == "/var/lib/llmchat/x.sqlite3"
    assert dialect_of("data/llmchat.sqlite3") == "sqlite"


def _last_state(folder: Path) -> dict[str, object]:
    import importlib.util

    last = max((folder / "models").glob("*.py"), key=lambda path: int(path.name.split("_", 1)[0]))
    spec = importlib.util.spec_from_file_location("last_migration", last)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return decompress_dict(module.MODELS_STATE)


async def test_both_migration_chains_end_in_the_models_of_today() -> None:
    """A model change needs a migration in each chain (python -m api.new_migration NAME)."""
    assert migrations_dir("sqlite") == MIGRATIONS
    await Tortoise.init(config=tortoise_config("sqlite://:memory:"))
    try:
        today = get_models_describe("models")
    finally:
        await Tortoise.close_connections()
        await Tortoise._reset_apps()
    sqlite, postgres = _last_state(migrations_dir("sqlite")), _last_state(migrations_dir("postgres"))
    assert sqlite == postgres
    assert sqlite == decompress_dict(compress_dict(today))  # as stored: lists for tuples


def test_writing_a_migration_writes_nothing_when_the_models_have_not_changed() -> None:
    done = subprocess.run([sys.executable, "-m", "api.new_migration", "nothing"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["sqlite: no changes", "postgres: no changes"]


async def test_a_fresh_postgres_database_is_migrated_and_stores_a_chat(pg_database: Callable[[], str]) -> None:
    url = pg_database()

    async def first_start() -> int:
        async with setup_lock(url):
            await open_store(url)
            admin, password = await accounts.bootstrap()
        try:
            assert password is not None
            chat = await Chat.create(id="c", owner=admin, system_prompt="", temperature=0.5, top_p=1, max_new_tokens=4)
            question = await Message.create(chat=chat, role="user", text="Ünïcode ✓")
            assert (await Message.get(id=question.id)).text == "Ünïcode ✓"
            assert connections.get("default").capabilities.dialect == "postgres"
            await Message.create(chat=chat, role="assistant", text="…", status="streaming", parent_id=question.id)
            return admin.id
        finally:
            await close_store()

    async def second_start() -> None:
        """Nothing to migrate, the account stays, and the reply the stop cut is an error."""
        async with setup_lock(url):
            await open_store(url)
            again, password = await accounts.bootstrap()
        await end_cut_replies()
        try:
            assert (again.id, password) == (admin_id, None)
            reply = await Message.get(role="assistant")
            assert (reply.status, reply.error) == ("error", "the server stopped during this reply")
        finally:
            await close_store()

    # Each start in a task of its own, as each process has its own Tortoise context.
    admin_id = await asyncio.create_task(first_start())
    await asyncio.create_task(second_start())


def test_processes_starting_together_on_one_postgres_database_take_turns(pg_database: Callable[[], str]) -> None:
    """Three API processes start at once on an empty database: one migrates and creates the
    administrator, the others wait for it and find both done."""
    url = pg_database()
    script = (
        "import asyncio\n"
        "from api import accounts\n"
        "from api.database import close_store, open_store, setup_lock\n"
        "async def main(url):\n"
        "    async with setup_lock(url):\n"
        "        await open_store(url)\n"
        "        _, password = await accounts.bootstrap()\n"
        "    await close_store()\n"
        "    print('created' if password else 'found')\n"
        f"asyncio.run(main({url!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    starts = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [start.communicate(timeout=120) for start in starts]
    assert [start.returncode for start in starts] == [0, 0, 0], [err[-2000:] for _, err in outcomes]
    assert sorted(out.strip() for out, _ in outcomes) == ["created", "found", "found"]


async def test_a_database_without_a_utf8_character_type_is_refused(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database("ascii_only", ctype="C")
    with pytest.raises(StartRefused, match="LC_CTYPE 'C'.*UTF-8"):
        await open_store(url)


async def test_an_unreachable_postgres_server_is_named_without_its_password() -> None:
    from tests.pg import free_port

    with pytest.raises(StartRefused, match=r"cannot connect to postgres://llmchat:\*\*\*@127.0.0.1") as refused:
        await open_store(f"postgres://llmchat:hunter2@127.0.0.1:{free_port()}/llmchat")
    assert "hunter2" not in str(refused.value)


def test_the_cli_works_on_postgres(pg_database: Callable[[], str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "LLMCHAT_DB_URL": pg_database()}
    for command in (["add", "ada", "--password-stdin"], ["list"]):
        done = subprocess.run([sys.executable, "-m", "api.users", *command], env=env, input="a long passphrase\n",
                              capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT, check=False)
        assert done.returncode == 0, done.stderr
    assert "ada" in done.stdout
