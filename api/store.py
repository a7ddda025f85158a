"""Durable storage: the Tortoise ORM models (tables) of users, chats and messages.

Schema changes go through aerich migrations, one chain per database (``api/database.py``);
the app applies pending ones at start, so an upgrade keeps every user's history.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

TITLE_CHARS = 60


class User(Model):
    """An account. Users are disabled, never deleted, so their chats keep an owner."""

    id = fields.IntField(pk=True)
    name = fields.CharField(max_length=64, unique=True)  # lower-case, see api.accounts.normalise_name
    password_hash = fields.CharField(max_length=255)  # an Argon2id PHC string; never the password
    role = fields.CharField(max_length=8, default="user")  # admin, user
    disabled = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    # An administrator's overrides of the LLMCHAT_LIMIT_* settings (None: the setting; 0: no limit).
    limit_loaded_models = fields.IntField(null=True)
    limit_concurrent_replies = fields.IntField(null=True)
    limit_tokens_per_day = fields.IntField(null=True)

    class Meta:
        table = "users"


class UsageDay(Model):
    """What one user generated on one UTC day (replies through /chat and /v1)."""

    id = fields.IntField(pk=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="usage", on_delete=fields.CASCADE
    )
    day = fields.DateField()
    replies = fields.IntField(default=0)
    prompt_tokens = fields.IntField(default=0)
    completion_tokens = fields.IntField(default=0)

    class Meta:
        table = "usage_days"
        unique_together = (("user", "day"),)


class UserSession(Model):
    """A signed-in session: only the token's SHA-256 is stored."""

    id = fields.IntField(pk=True)
    token_hash = fields.CharField(max_length=64, unique=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="sessions", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    last_seen_at = fields.DatetimeField()  # idle expiry counts from here
    expires_at = fields.DatetimeField()  # the longest a session lives, however busy

    class Meta:
        table = "sessions"


class ApiKey(Model):
    """An API key ``llmk_<id>_<secret>``: its id is public, only the whole key's SHA-256 is stored."""

    id = fields.CharField(pk=True, max_length=16)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="api_keys", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=100)
    secret_hash = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_used_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_keys"


class ServerSetting(Model):
    """A setting administrators change at run time (open sign-up), as JSON under a key."""

    key = fields.CharField(pk=True, max_length=64)
    value = fields.JSONField()

    class Meta:
        table = "server_settings"


class AuditEntry(Model):
    """Who did what to accounts and workers: sign-ins (failed ones too), keys, an
    administrator's changes, force-unloads. Never a password or a key."""

    id = fields.IntField(pk=True)
    at = fields.DatetimeField(auto_now_add=True)
    actor: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    actor_name = fields.CharField(max_length=64, null=True)  # as typed, for a failed sign-in; "cli"
    action = fields.CharField(max_length=32)
    target = fields.CharField(max_length=200, null=True)
    client = fields.CharField(max_length=64, null=True)
    detail = fields.JSONField(null=True)

    class Meta:
        table = "audit_log"
        ordering = ["-id"]


class Chat(Model):
    """A conversation and its settings. ``id`` may be chosen by the client (the dashboard uses UUIDs)."""

    id = fields.CharField(pk=True, max_length=64)
    title = fields.CharField(max_length=200, null=True)  # None: derived from the first message
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    model = fields.CharField(max_length=255, null=True)  # the model last loaded for it
    requested_device = fields.CharField(max_length=8, null=True)  # auto, cpu, gpu: what the load asked for
    backend = fields.CharField(max_length=16, null=True)
    system_prompt = fields.TextField(default="")
    temperature = fields.FloatField(default=0.7)
    top_p = fields.FloatField(default=0.95)
    max_new_tokens = fields.IntField(default=256)
    # Nullable only for SQLite's ALTER TABLE: every chat gets an owner (api.accounts.bootstrap).
    owner: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="chats", null=True, on_delete=fields.RESTRICT
    )
    # The last message of the branch being shown (see api.branches); None: no messages yet.
    current_message_id = fields.IntField(null=True)

    messages: fields.ReverseRelation[Message]

    class Meta:
        table = "chats"
        indexes = (("owner", "updated_at"),)  # a user's chats, newest first, page by page


class Message(Model):
    """One message. Assistant replies carry the model, device, metrics and a status."""

    id = fields.IntField(pk=True)
    chat: fields.ForeignKeyRelation[Chat] = fields.ForeignKeyField(
        "models.Chat", related_name="messages", on_delete=fields.CASCADE
    )
    # The message this one follows: a chat is a tree, and messages with one parent are
    # siblings (an edited question, a regenerated reply). None: the chat's first message(s).
    parent: fields.ForeignKeyNullableRelation[Message] = fields.ForeignKeyField(
        "models.Message", related_name="children", null=True, on_delete=fields.CASCADE
    )
    role = fields.CharField(max_length=16)  # user, assistant
    text = fields.TextField()
    created_at = fields.DatetimeField(auto_now_add=True)
    status = fields.CharField(max_length=16, default="complete")  # streaming, complete, stopped, error
    error = fields.TextField(null=True)
    model = fields.CharField(max_length=255, null=True)
    running_on = fields.CharField(max_length=8, null=True)  # cpu, cuda: where the reply was generated
    backend = fields.CharField(max_length=16, null=True)
    prompt_tokens = fields.IntField(null=True)
    completion_tokens = fields.IntField(null=True)
    time_to_first_token_s = fields.FloatField(null=True)
    total_time_s = fields.FloatField(null=True)
    tokens_per_s = fields.FloatField(null=True)
    dropped_messages = fields.IntField(null=True)

    class Meta:
        table = "messages"
        ordering = ["id"]


def chat_title(chat: Chat, first_message: str | None) -> str:
    """The user's name for the chat, else its first message shortened, else "New chat"."""
    if chat.title:
        return chat.title
    if first_message:
        text = " ".join(first_message.split())
        return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"
    return "New chat"

