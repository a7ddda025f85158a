"""The signed-in user's own account: sign in and out, who am I, password, API keys (``/auth``)."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify
from quart_schema import document_response, validate_request, validate_response

from api import accounts
from api.auth import (
    clear_session_cookie,
    client_address,
    current_identity,
    current_user,
    public,
    set_session_cookie,
)
from api.errors import ApiError, KeyNotFound, Unauthenticated
from api.limits import Effective
from api.schemas import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    LimitsOut,
    LoginRequest,
    Me,
    PasswordChange,
    Revoked,
    SignedOut,
    SignupRequest,
    UsageOut,
)
from api.services import services
from api.store import ApiKey, UsageDay

blueprint = Blueprint("auth", __name__, url_prefix="/auth")


def limits_out(effective: Effective) -> LimitsOut:
    return LimitsOut(loaded_models=effective.loaded_models, concurrent_replies=effective.concurrent_replies,
                     tokens_per_day=effective.tokens_per_day)


def usage_out(usage: UsageDay) -> UsageOut:
    return UsageOut(day=usage.day.isoformat(), replies=usage.replies or 0, prompt_tokens=usage.prompt_tokens or 0,
                    completion_tokens=usage.completion_tokens or 0)


def _key_out(key: ApiKey) -> KeyOut:
    return KeyOut(id=key.id, name=key.name, created_at=key.created_at.isoformat(),
                  last_used_at=key.last_used_at.isoformat() if key.last_used_at else None,
                  revoked=key.revoked_at is not None)


@blueprint.post("/login")
@public
@validate_request(LoginRequest)
@document_response(Me)  # documented, not validated: it sets the cookie on a Response
async def login(data: LoginRequest) -> Response:
    """Sign in: sets the session cookie (HttpOnly). 401 for any wrong name or password, 429
    after 5 failures in a minute for the account or the address."""
    s = services()
    user, token = await accounts.sign_in(s.limiter, data.username, data.password, client_address(),
                                         s.settings.session_max_s)
    me = Me(id=user.id, name=user.name, role="admin" if user.role == "admin" else "user", via="session")
    response = jsonify(me.model_dump())
    set_session_cookie(response, token, s.settings)
    return response


@blueprint.post("/signup")
@public
@validate_request(SignupRequest)
@document_response(Me, 201)  # documented, not validated: it sets the cookie on a Response
async def signup(data: SignupRequest) -> Response:
    """Make your own account, when an administrator opened sign-up (403 otherwise); you are
    signed in at once. Attempts are limited per address."""
    s = services()
    user, token = await accounts.sign_up(s.limiter, data.username, data.password, client_address(),
                                         s.settings.session_max_s)
    me = Me(id=user.id, name=user.name, role="user", via="session")
    response = jsonify(me.model_dump())
    response.status_code = 201
    set_session_cookie(response, token, s.settings)
    return response


@blueprint.post("/logout")
@document_response(SignedOut)
async def logout() -> Response:
    """End this session (a key stays valid: revoke it instead)."""
    identity = current_identity()
    await accounts.sign_out(identity)
    await accounts.audit("sign_out", identity.user, client=client_address())
    response = jsonify(SignedOut(signed_out=True).model_dump())
    clear_session_cookie(response, services().settings)
    return response


@blueprint.get("/me")
@validate_response(Me)
async def me() -> Me:
    """The user this request acts for, the limits that apply to them and what they used today."""
    identity = current_identity()
    user, limits = identity.user, services().limits
    return Me(id=user.id, name=user.name, role="admin" if user.role == "admin" else "user", via=identity.via,
              limits=limits_out(limits.effective(user)), today=usage_out(await limits.used_today(user.id)))


@blueprint.post("/password")
@validate_request(PasswordChange)
@validate_response(SignedOut)
async def change_password(data: PasswordChange) -> SignedOut:
    """Change your password: every session of yours ends, this one too; keys stay valid."""
    s = services()
    user = current_user()
    try:
        await accounts.check_credentials(s.limiter, user.name, data.current, client_address())
    except Unauthenticated:
        raise ApiError("the current password is wrong") from None
    await accounts.set_password(user, data.new)
    await accounts.audit("password_changed", user, target=user.name, client=client_address())
    return SignedOut(signed_out=True)


@blueprint.get("/keys")
@validate_response(KeyList)
async def list_keys() -> KeyList:
    """Your API keys (never the keys themselves: those were shown once)."""
    keys = await ApiKey.filter(user_id=current_user().id).order_by("created_at")
    return KeyList(keys=[_key_out(k) for k in keys])


@blueprint.post("/keys")
@validate_request(KeyCreate)
@validate_response(KeyCreated, 201)
async def create_key(data: KeyCreate) -> tuple[KeyCreated, int]:
    """A new API key for ``Authorization: Bearer``; the response is the only time it is shown."""
    key, secret = await accounts.create_key(current_user(), data.name)
    await accounts.audit("key_created", current_user(), target=key.id, client=client_address())
    return KeyCreated(**_key_out(key).model_dump(), key=secret), 201


@blueprint.delete("/keys/<key_id>")
@validate_response(Revoked)
async def revoke_key(key_id: str) -> Revoked:
    """Revoke one of your keys: it stops working at once."""
    if not await accounts.revoke_key(current_user(), key_id):
        raise KeyNotFound(f"you have no active key {key_id[:40]!r}")
    await accounts.audit("key_revoked", current_user(), target=key_id, client=client_address())
    return Revoked(revoked=True, id=key_id)
