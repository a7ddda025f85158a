"""Whose hold on a worker a runtime holder name is: a chat's id, or ``openai/<user id>/<model>`` for /v1.

A holder holds at most one model (see :mod:`runtime.interface`). Chats hold under their id;
the OpenAI-compatible API holds a model for each of its users apart, under a name no chat
id can take ("/" is in none).
"""

from __future__ import annotations

from api.schemas import Holder
from api.store import Chat, User
from runtime.interface import WorkerInfo

OPENAI_PREFIX = "openai/"


def openai_holder(user_id: int, model: str = "") -> str:
    """The /v1 holder of ``model`` for the user; without a model, the prefix of all of theirs."""
    return f"{OPENAI_PREFIX}{user_id}/{model}"


def openai_user(holder: str) -> int | None:
    """The user a /v1 holder belongs to; None for a chat's holder."""
    if not holder.startswith(OPENAI_PREFIX):
        return None
    user_id = holder[len(OPENAI_PREFIX):].partition("/")[0]
    return int(user_id) if user_id.isdigit() else None


async def holders_of(info: WorkerInfo) -> list[Holder]:
    """Who holds a worker: each chat with its owner and title, each /v1 user by name (for
    administrators' eyes only)."""
    chats = {c.id: c for c in await Chat.filter(id__in=list(info.holders)).select_related("owner")}
    user_ids = {uid for h in info.holders if (uid := openai_user(h)) is not None}
    names = dict(await User.filter(id__in=list(user_ids)).values_list("id", "name"))
    holders = []
    for holder in info.holders:
        if (uid := openai_user(holder)) is not None:
            holders.append(Holder(user=names.get(uid), chat_id=None))
        elif (chat := chats.get(holder)) is not None:
            owner = chat.owner.name if chat.owner else None
            holders.append(Holder(user=owner, chat_id=chat.id, title=chat.title))
        else:
            holders.append(Holder(user=None, chat_id=holder))
    return holders
