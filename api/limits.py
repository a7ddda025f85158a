"""Per-user limits: models held loaded at once, replies generated at once, tokens generated a day.

Each limit is a setting (``LLMCHAT_LIMIT_*``; 0 means none) that an administrator may
override per user. Over a limit, a request gets 429 with a message that names the limit and
says when it frees up (``Retry-After`` where that is a time). Usage is counted per UTC day
in ``usage_days``: replies, prompt tokens and generated tokens, whether through ``/chat``
or ``/v1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise.expressions import F

from api.errors import LimitExceeded
from api.holders import openai_user
from api.settings import ApiSettings
from api.store import Chat, UsageDay, User
from runtime.interface import ModelRuntime


@dataclass(frozen=True, slots=True)
class Effective:
    """The limits that apply to one user (0: none)."""

    loaded_models: int
    concurrent_replies: int
    tokens_per_day: int


def _today() -> datetime:
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _until_midnight() -> float:
    return (_today() + timedelta(days=1) - datetime.now(UTC)).total_seconds()


class Limits:
    """Checks a user's limits before a load or a reply, and counts what they used."""

    def __init__(self, settings: ApiSettings, runtime: ModelRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self._replies: dict[int, int] = {}  # user id -> replies being generated now

    def effective(self, user: User) -> Effective:
        s = self.settings

        def pick(override: int | None, default: int) -> int:
            return default if override is None else override

        return Effective(pick(user.limit_loaded_models, s.limit_loaded_models),
                         pick(user.limit_concurrent_replies, s.limit_concurrent_replies),
                         pick(user.limit_tokens_per_day, s.limit_tokens_per_day))

    # Models held

    async def held_models(self, user: User, except_holder: str | None = None) -> set[tuple[str, str]]:
        """(model, requested device) of every worker the user holds, through chats or /v1."""
        holders = {h: w for w in await self.runtime.workers() for h in w.holders if h != except_holder}
        own = set(await Chat.filter(owner_id=user.id, id__in=list(holders)).values_list("id", flat=True))
        return {(w.key.model, w.key.requested_device) for h, w in holders.items()
                if h in own or openai_user(h) == user.id}

    async def check_load(self, user: User, holder: str, model: str, device: str) -> None:
        """429 if holding ``model`` for ``holder`` would take the user past their models limit."""
        limit = self.effective(user).loaded_models
        if limit <= 0:
            return
        held = await self.held_models(user, except_holder=holder)
        if (model, device) not in held and len(held) >= limit:
            raise LimitExceeded(
                f"you hold {len(held)} models loaded, your limit; unload one (POST /unload) to load another"
            )

    # Replies at once

    def begin_reply(self, user: User) -> None:
        """Count a reply starting (synchronously: two requests cannot both pass); 429 over the limit."""
        limit = self.effective(user).concurrent_replies
        running = self._replies.get(user.id, 0)
        if 0 < limit <= running:
            raise LimitExceeded(
                f"you have {running} replies being generated, your limit; wait for one to finish", retry_after_s=2
            )
        self._replies[user.id] = running + 1

    def end_reply(self, user_id: int) -> None:
        left = self._replies.get(user_id, 0) - 1
        if left > 0:
            self._replies[user_id] = left
        else:
            self._replies.pop(user_id, None)

    def replies_running(self, user_id: int) -> int:
        return self._replies.get(user_id, 0)

    # Tokens a day

    async def tokens_left(self, user: User) -> int | None:
        """Tokens the user may still generate today (None: no limit); 429 when none are left."""
        limit = self.effective(user).tokens_per_day
        if limit <= 0:
            return None
        used = await self.used_today(user.id)
        left = limit - used.completion_tokens
        if left <= 0:
            wait = _until_midnight()
            raise LimitExceeded(
                f"you have generated your {limit} tokens for today; the count starts again at 00:00 UTC, "
                f"in {max(1, round(wait))} s", retry_after_s=wait,
            )
        return left

    async def used_today(self, user_id: int) -> UsageDay:
        found = await UsageDay.get_or_none(user_id=user_id, day=_today().date())
        return found or UsageDay(user_id=user_id, day=_today().date())

    async def record(self, user_id: int, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one reply's tokens in today's usage."""
        day = _today().date()
        updated = await UsageDay.filter(user_id=user_id, day=day).update(
            replies=F("replies") + 1, prompt_tokens=F("prompt_tokens") + prompt_tokens,
            completion_tokens=F("completion_tokens") + completion_tokens,
        )
        if not updated:
            _, created = await UsageDay.get_or_create(
                user_id=user_id, day=day,
                defaults={"replies": 1, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
            )
            if not created:  # another reply made the row meanwhile
                await self.record(user_id, prompt_tokens, completion_tokens)
