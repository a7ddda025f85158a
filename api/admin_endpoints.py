"""Administrators' routes (``/admin``): users, the machine's workers and who holds them, the audit log."""

from __future__ import annotations

import asyncio
import secrets

from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response
from tortoise.functions import Count

from api import accounts
from api.account_endpoints import limits_out, usage_out
from api.auth import client_address, require_admin
from api.endpoints import worker_state
from api.errors import Conflict, UserNotFound, WorkerNotFound
from api.holders import holders_of
from api.machine import resident_mb
from api.schemas import (
    AdminWorker,
    AdminWorkerList,
    AuditList,
    AuditOut,
    AuditQuery,
    OverridesOut,
    PasswordReset,
    PasswordResetDone,
    ServerSettingsOut,
    ServerSettingsUpdate,
    UserCreate,
    UserCreated,
    UserList,
    UserOut,
    UserUpdate,
    WorkerUnload,
    WorkerUnloaded,
)
from api.services import services
from api.store import AuditEntry, Chat, User
from runtime.interface import WorkerKey

blueprint = Blueprint("admin", __name__, url_prefix="/admin")
FORCED = "unloaded by an administrator"


@blueprint.before_request
async def administrators_only() -> None:
    require_admin()


async def _user_out(user: User, chats: int | None = None) -> UserOut:
    if chats is None:
        chats = await Chat.filter(owner_id=user.id).count()
    limits = services().limits
    return UserOut(
        id=user.id, name=user.name, role="admin" if user.role == "admin" else "user", disabled=user.disabled,
        created_at=user.created_at.isoformat(), chats=chats, limits=limits_out(limits.effective(user)),
        overrides=OverridesOut(loaded_models=user.limit_loaded_models,
                               concurrent_replies=user.limit_concurrent_replies,
                               tokens_per_day=user.limit_tokens_per_day),
        today=usage_out(await limits.used_today(user.id)),
    )


async def _user(name: str) -> User:
    user = await User.get_or_none(name=name.strip().lower()[:64])
    if user is None:
        raise UserNotFound(f"no user named {name[:64]!r}")
    return user


@blueprint.get("/users")
@validate_response(UserList)
async def list_users() -> UserList:
    """Every account, with its role, whether it is disabled, and how many chats it owns."""
    users = await User.all().order_by("id")
    counts = dict(await Chat.filter(owner_id__isnull=False).group_by("owner_id")
                  .annotate(n=Count("id")).values_list("owner_id", "n"))
    return UserList(users=[await _user_out(u, counts.get(u.id, 0)) for u in users])


@blueprint.post("/users")
@validate_request(UserCreate)
@validate_response(UserCreated, 201)
async def create_user(data: UserCreate) -> tuple[UserCreated, int]:
    """A new account; without a password, a random one is made and shown this once."""
    password = data.password or secrets.token_urlsafe(12)
    user = await accounts.create_user(data.name, password, data.role)
    await accounts.audit("user_created", require_admin().user, target=user.name, client=client_address(),
                         detail={"role": user.role})
    out = await _user_out(user)
    return UserCreated(**out.model_dump(), password=None if data.password else password), 201


@blueprint.patch("/users/<name>")
@validate_request(UserUpdate)
@validate_response(UserOut)
async def update_user(name: str, data: UserUpdate) -> UserOut:
    """Change a user's role, or disable (their sessions end, their replies stop) or enable them.
    409 for a change that would leave no enabled administrator, yourself included."""
    me = require_admin().user
    user = await _user(name)
    demoted = data.role == "user" and user.role == "admin"
    disabling = data.disabled is True and not user.disabled
    if user.id == me.id and (demoted or disabling):
        raise Conflict("you cannot disable yourself or take away your own administrator role")
    if demoted or (disabling and user.role == "admin"):
        others = await User.filter(role="admin", disabled=False).exclude(id=user.id).count()
        if others == 0:
            raise Conflict("that would leave no enabled administrator")
    changes: dict[str, object] = {}
    if data.role is not None and data.role != user.role:
        user.role = data.role
        await user.save(update_fields=["role"])
        changes["role"] = data.role
    for field in ("limit_loaded_models", "limit_concurrent_replies", "limit_tokens_per_day"):
        if field in data.model_fields_set and getattr(data, field) != getattr(user, field):
            setattr(user, field, getattr(data, field))
            await user.save(update_fields=[field])
            changes[field] = getattr(data, field)
    if data.disabled is not None and data.disabled != user.disabled:
        await accounts.set_disabled(user, data.disabled)
        if data.disabled:
            await services().conversations.stop_user_anywhere(user.id)
        changes["disabled"] = data.disabled
    if changes:
        await accounts.audit("user_updated", me, target=user.name, client=client_address(), detail=changes)
    return await _user_out(user)


@blueprint.post("/users/<name>/password")
@validate_request(PasswordReset)
@validate_response(PasswordResetDone)
async def reset_password(name: str, data: PasswordReset) -> PasswordResetDone:
    """Set a user's password (random, shown once, unless given); their sessions end."""
    user = await _user(name)
    password = data.password or secrets.token_urlsafe(12)
    await accounts.set_password(user, password)
    await accounts.audit("password_reset", require_admin().user, target=user.name, client=client_address())
    return PasswordResetDone(name=user.name, password=None if data.password else password)


@blueprint.get("/workers")
@validate_response(AdminWorkerList)
async def workers() -> AdminWorkerList:
    """Every loaded worker, and who holds it: each chat with its owner, and users of the OpenAI API."""
    found = []
    for info in await services().runtime.workers():
        memory = await asyncio.to_thread(resident_mb, info.pid)
        found.append(AdminWorker(**worker_state(info).model_dump(), holders=await holders_of(info), memory_mb=memory))
    return AdminWorkerList(workers=found)


@blueprint.post("/workers/unload")
@validate_request(WorkerUnload)
@validate_response(WorkerUnloaded)
async def force_unload(data: WorkerUnload) -> WorkerUnloaded:
    """Stop a worker whoever holds it: replies on it end with an error, and each chat's
    status says it was unloaded by an administrator."""
    s = services()
    key = WorkerKey(data.model, data.device, data.backend)
    held = next((w for w in await s.runtime.workers() if w.key == key), None)
    result = await s.runtime.unload_worker(key, FORCED) if held is not None else None
    if held is None or result is None:
        raise WorkerNotFound(f"no worker runs {data.model[:255]!r} on {data.device} with {data.backend}")
    await accounts.audit("force_unload", require_admin().user, target=data.model, client=client_address(),
                         detail={"device": data.device, "backend": data.backend, "holders": len(held.holders)})
    return WorkerUnloaded(unloaded=True, model=data.model, holders=len(held.holders),
                          process_exited=result.exited)


@blueprint.get("/settings")
@validate_response(ServerSettingsOut)
async def server_settings() -> ServerSettingsOut:
    """Settings administrators change at run time."""
    return ServerSettingsOut(open_signup=await accounts.open_signup())


@blueprint.patch("/settings")
@validate_request(ServerSettingsUpdate)
@validate_response(ServerSettingsOut)
async def update_server_settings(data: ServerSettingsUpdate) -> ServerSettingsOut:
    """Open or close sign-up (``POST /auth/signup``): closed unless an administrator opens it."""
    if data.open_signup is not None and data.open_signup != await accounts.open_signup():
        await accounts.set_open_signup(data.open_signup)
        await accounts.audit("settings_changed", require_admin().user, target="open_signup",
                             client=client_address(), detail={"open_signup": data.open_signup})
    return ServerSettingsOut(open_signup=await accounts.open_signup())


@blueprint.get("/audit")
@validate_querystring(AuditQuery)
@validate_response(AuditList)
async def audit_log(query_args: AuditQuery) -> AuditList:
    """The audit log, newest first; page with ``before_id``."""
    entries = AuditEntry.all().order_by("-id").limit(query_args.limit)
    if query_args.before_id is not None:
        entries = entries.filter(id__lt=query_args.before_id)
    return AuditList(entries=[
        AuditOut(id=e.id, at=e.at.isoformat(), actor=e.actor_name, action=e.action, target=e.target,
                 client=e.client, detail=e.detail) for e in await entries
    ])
