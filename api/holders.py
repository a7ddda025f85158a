"""Whose hold on a worker a runtime holder name is: a chat's id, or ``openai/<user id>/<model>`` for /v1.

A holder holds at most one model (see :mod:`runtime.interface`). Chats hold under their id;
the OpenAI-compatible API holds a model for each of its users apart, under a name no chat
id can take ("/" is in none).
"""

from __future__ import annotations

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
