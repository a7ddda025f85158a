"""Write the next schema migration for both databases: ``python -m api.new_migration NAME``.

The models in ``api/store.py`` are the truth; aerich compares them with the last migration of
each chain (offline: no database is needed) and writes ``api/migrations/models/<n>_<ts>_NAME.py``
for SQLite and ``api/migrations/postgres/models/<n>_<ts>_NAME.py`` for PostgreSQL. Read both
before committing: aerich writes SQLite foreign keys as ``ALTER TABLE … ADD CONSTRAINT``, which
SQLite refuses (add the column with an inline ``REFERENCES`` instead), and neither chain
gets the hand-written parts (indexes the models do not declare, search tables and triggers).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from api.database import migrations_dir, tortoise_config

# Offline mode reads no database; these URLs only choose each dialect's DDL.
DIALECT_URLS = {"sqlite": "sqlite:///nowhere.sqlite3", "postgres": "postgres://nobody@127.0.0.1:1/none"}


async def write_both(name: str) -> list[str]:
    from aerich import Command

    written = []
    for dialect, url in DIALECT_URLS.items():
        location = migrations_dir(dialect)  # type: ignore[arg-type]
        command = Command(tortoise_config=tortoise_config(url), app="models", location=str(location))
        await command.init(offline=True)  # not `async with`: that connects
        written.append(f"{dialect}: {await command.migrate(name, offline=True, no_input=True) or 'no changes'}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.new_migration", description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a short name for the change, e.g. pinned_chats")
    args = parser.parse_args(argv)
    for line in asyncio.run(write_both(args.name)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
