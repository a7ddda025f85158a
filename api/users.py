"""Manage accounts from the command line: ``python -m api.users add|list|reset-password|disable|enable|add-key``.

Works on the database ``LLMCHAT_DB_URL`` names (the server may be running: SQLite in WAL
mode and PostgreSQL take both). A password is read from standard input with ``--password-stdin``, else
a random one is made and printed once; a new key is printed once. Nothing is logged.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

from api import accounts
from api.database import StartRefused, close_store, open_store, setup_lock
from api.errors import ApiError
from api.settings import ApiSettings
from api.store import User


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password to set, and whether it was made here (then it is printed)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    return secrets.token_urlsafe(12), True


async def _user(name: str) -> User:
    user = await User.get_or_none(name=accounts.normalise_name(name))
    if user is None:
        raise ApiError(f"no user named {name!r}")
    return user


async def _run(args: argparse.Namespace) -> None:
    if args.command == "list":
        for user in await User.all().order_by("id"):
            state = " (disabled)" if user.disabled else ""
            print(f"{user.name}\t{user.role}{state}")
        return
    if args.command == "add":
        password, made = _password(args)
        user = await accounts.create_user(args.name, password, args.role)
        print(f"added {user.name} ({user.role})" + (f"; password: {password}" if made else ""))
    elif args.command == "reset-password":
        user = await _user(args.name)
        password, made = _password(args)
        await accounts.set_password(user, password)
        print(f"password of {user.name} reset; their sessions ended" + (f"; password: {password}" if made else ""))
    elif args.command in ("disable", "enable"):
        user = await _user(args.name)
        await accounts.set_disabled(user, args.command == "disable")
        print(f"{user.name} {args.command}d")
    else:
        user = await _user(args.name)
    if getattr(args, "key", None):
        _, secret = await accounts.create_key(user, args.key)
        print(f"key: {secret}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.users", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every account, its role, whether it is disabled")
    add = commands.add_parser("add", help="a new account")
    add.add_argument("name")
    add.add_argument("--role", choices=["user", "admin"], default="user")
    reset = commands.add_parser("reset-password", help="a new password (ends the user's sessions)")
    reset.add_argument("name")
    for command in (add, reset):
        command.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    for name in ("disable", "enable"):
        commands.add_parser(name, help=f"{name} an account").add_argument("name")
    key = commands.add_parser("add-key", help="a new API key for the account")
    key.add_argument("name")
    key.add_argument("--label", dest="key", default="cli")
    add.add_argument("--key", metavar="LABEL", help="also make an API key with this label")
    args = parser.parse_args(argv)

    async def run() -> None:
        settings = ApiSettings()
        async with setup_lock(settings.db_url):
            await open_store(settings.db_url, settings.db_pool_min, settings.db_pool_max)
        try:
            await _run(args)
        finally:
            await close_store()

    try:
        asyncio.run(run())
    except ApiError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    except StartRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
