"""Accounts: users and their passwords, sessions and API keys, and who a credential belongs to.

No HTTP here (that is :mod:`api.auth`). Passwords are Argon2id hashes (argon2-cffi),
verified in a thread so the event loop never waits on one. Sessions and API keys are
random 256-bit tokens of which only a SHA-256 is stored: the database never holds a
credential. A failed sign-in answers the same for a wrong password, an unknown name and a
disabled account, takes as long, and counts against both the name and the client's address
(:class:`FailureLimiter`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.errors import ApiError, Forbidden, TooManyAttempts, Unauthenticated
from api.store import ApiKey, AuditEntry, Chat, ServerSetting, User, UserSession

Role = Literal["admin", "user"]
SESSION_PREFIX, KEY_PREFIX = "llms_", "llmk_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_KEY_ID_CHARS = 16  # ApiKey.id's length
_SEEN_EVERY = timedelta(seconds=60)  # a session's last use is written at most this often
# Argon2id with 64 MiB and 3 passes (RFC 9106's low-memory profile), in one lane: with four,
# a hash took both cores of a 2-core machine for 0.1 s and stalled the event loop (streams
# too); one lane takes one core for 0.15 s. One hash at a time, so a core is always left.
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)
_hashing = threading.Lock()  # taken in the hashing thread: no event loop is tied to it
WRONG = "wrong user name or password"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts for, and by what credential."""

    user: User
    via: Literal["session", "key", "local"]
    session_id: int | None = None

    @property
    def admin(self) -> bool:
        return self.user.role == "admin"


class FailureLimiter:
    """Counts failed sign-ins per key (an account's name, a client's address): after
    ``max_failures`` within ``window_s`` the key waits until the oldest failure is that old.
    In memory: the API runs as one process. At most ``max_keys`` keys, oldest dropped."""

    def __init__(self, max_failures: int = 5, window_s: float = 60.0, max_keys: int = 10_000) -> None:
        self.max_failures, self.window_s, self.max_keys = max_failures, window_s, max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, *keys: str) -> float | None:
        """Seconds until every key may try again; None if they may now."""
        now = time.monotonic()
        waits = []
        for key in keys:
            times = self._failures.get(key)
            if times is None:
                continue
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if len(times) >= self.max_failures:
                waits.append(self.window_s - (now - times[0]))
        return max(waits) if waits else None

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            times = self._failures.setdefault(key, deque(maxlen=self.max_failures))
            times.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)


def normalise_name(name: str) -> str:
    """A user name as stored: trimmed, lower-case; raises if it is not a valid name."""
    cleaned = name.strip().lower()
    if not _NAME.match(cleaned):
        raise ApiError("a user name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return cleaned


def check_password(password: str) -> None:
    if len(password) < 8:
        raise ApiError("a password has at least 8 characters")
    if len(password) > 1024:
        raise ApiError("a password has at most 1024 characters")


async def hash_password(password: str) -> str:
    def hash_alone() -> str:
        with _hashing:
            return _hasher.hash(password)

    return await asyncio.to_thread(hash_alone)


async def _verify(stored_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        with _hashing:
            try:
                return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
            except (VerificationError, InvalidHashError):
                return False

    return await asyncio.to_thread(verify)


@functools.cache
def _dummy_hash() -> str:
    """Verified against for an unknown name, so it costs what a wrong password does."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


# Users


async def create_user(name: str, password: str, role: Role = "user") -> User:
    name = normalise_name(name)
    check_password(password)
    if await User.exists(name=name):
        raise ApiError(f"a user named {name!r} already exists")
    return await User.create(name=name, password_hash=await hash_password(password), role=role)


async def set_password(user: User, password: str) -> None:
    """A new password ends every session of the user."""
    check_password(password)
    user.password_hash = await hash_password(password)
    await user.save(update_fields=["password_hash"])
    await UserSession.filter(user_id=user.id).delete()


async def set_disabled(user: User, disabled: bool) -> None:
    """A disabled user's sessions end; their keys stop working while disabled."""
    user.disabled = disabled
    await user.save(update_fields=["disabled"])
    if disabled:
        await UserSession.filter(user_id=user.id).delete()


async def bootstrap() -> tuple[User, str | None]:
    """The first administrator, created with a random password on an empty database (the
    password is returned to be shown once), and every chat without an owner given to it."""
    password = None
    first = await User.filter(role="admin").order_by("id").first()
    if first is None:
        password = secrets.token_urlsafe(12)
        first = await User.create(name="admin", password_hash=await hash_password(password), role="admin")
    await Chat.filter(owner_id=None).update(owner_id=first.id)
    return first, password


# Settings administrators change at run time


async def open_signup() -> bool:
    found = await ServerSetting.get_or_none(key="open_signup")
    return bool(found.value) if found is not None else False


async def set_open_signup(value: bool) -> None:
    await ServerSetting.update_or_create(key="open_signup", defaults={"value": value})


async def sign_up(limiter: FailureLimiter, name: str, password: str, client: str, max_s: float) -> tuple[User, str]:
    """A new ``user`` account and its first session, when sign-up is open. Every attempt
    counts against the client's address, as a failed sign-in does, so one address cannot
    make accounts by the hundred."""
    key = f"addr:{client}"
    if (wait := limiter.retry_after(key)) is not None:
        raise TooManyAttempts(f"too many attempts from your address; try again in {max(1, round(wait))} s", wait)
    limiter.fail(key)
    if not await open_signup():
        raise Forbidden("sign-up is closed: ask an administrator for an account")
    user = await create_user(name, password, "user")
    await audit("signed_up", user, target=user.name, client=client)
    return user, await _new_session(user, max_s)


# The audit log


async def audit(action: str, actor: User | None = None, *, actor_name: str | None = None,
                target: str | None = None, client: str | None = None, detail: dict[str, object] | None = None) -> None:
    """Record an action. ``actor_name`` defaults to the actor's; it is what was typed for a failed sign-in."""
    await AuditEntry.create(action=action, actor=actor, actor_name=(actor_name or (actor.name if actor else None)),
                            target=target[:200] if target else None, client=client[:64] if client else None,
                            detail=detail)


# Sessions


async def check_credentials(limiter: FailureLimiter, name: str, password: str, client: str) -> User:
    """The user a right name and password belong to; :class:`Unauthenticated` (the same for
    every wrong case, recorded) or :class:`TooManyAttempts` otherwise."""
    keys = (f"user:{name.strip().lower()[:64]}", f"addr:{client}")
    if (wait := limiter.retry_after(*keys)) is not None:
        raise TooManyAttempts(f"too many failed sign-ins; try again in {max(1, round(wait))} s", wait)
    user = await User.get_or_none(name=name.strip().lower()[:64])
    right = await _verify(user.password_hash if user else None, password)
    if user is None or not right or user.disabled:
        limiter.fail(*keys)
        await audit("sign_in_failed", user, actor_name=name.strip()[:64], client=client)
        raise Unauthenticated(WRONG)
    limiter.clear(keys[0])
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
        await user.save(update_fields=["password_hash"])
    return user


async def sign_in(limiter: FailureLimiter, name: str, password: str, client: str, max_s: float) -> tuple[User, str]:
    """A new session token for a right name and password (see :func:`check_credentials`)."""
    user = await check_credentials(limiter, name, password, client)
    await audit("sign_in", user, client=client)
    return user, await _new_session(user, max_s)


async def _new_session(user: User, max_s: float) -> str:
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    now = _now()
    await UserSession.create(token_hash=_digest(token), user=user, last_seen_at=now,
                             expires_at=now + timedelta(seconds=max_s))
    return token


async def sign_out(identity: Identity) -> None:
    if identity.session_id is not None:
        await UserSession.filter(id=identity.session_id).delete()


async def identify(token: str, idle_s: float) -> Identity | None:
    """Whose session or API key ``token`` is; None if it is nobody's (any more)."""
    if token.startswith(KEY_PREFIX):
        return await _key_identity(token)
    if not token.startswith(SESSION_PREFIX):
        return None
    session = await UserSession.get_or_none(token_hash=_digest(token)).select_related("user")
    now = _now()
    if session is None:
        return None
    if session.user.disabled or now >= session.expires_at or now - session.last_seen_at >= timedelta(seconds=idle_s):
        await session.delete()
        return None
    if now - session.last_seen_at >= _SEEN_EVERY:
        await UserSession.filter(id=session.id).update(last_seen_at=now)
    return Identity(session.user, "session", session.id)


# API keys


async def create_key(user: User, name: str) -> tuple[ApiKey, str]:
    """A new key for ``user``: the key itself is returned once and never stored."""
    key_id = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    key = await ApiKey.create(id=key_id, user=user, name=name.strip()[:100] or "key", secret_hash=_digest(secret))
    return key, secret


async def revoke_key(user: User, key_id: str) -> bool:
    if len(key_id) > _KEY_ID_CHARS:
        return False
    updated = await ApiKey.filter(id=key_id, user_id=user.id, revoked_at=None).update(revoked_at=_now())
    return updated > 0


async def _key_identity(secret: str) -> Identity | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or len(parts[1]) > _KEY_ID_CHARS:
        return None
    key = await ApiKey.get_or_none(id=parts[1]).select_related("user")
    if key is None or key.revoked_at is not None or key.user.disabled:
        return None
    if not hmac.compare_digest(key.secret_hash, _digest(secret)):
        return None
    if key.last_used_at is None or _now() - key.last_used_at >= _SEEN_EVERY:
        await ApiKey.filter(id=key.id).update(last_used_at=_now())
    return Identity(key.user, "key")
