"""Who a request acts for: every route needs a signed-in user unless it is marked public.

A credential is an API key or a session token, sent as ``Authorization: Bearer ...``,
or the session cookie the sign-in sets (HttpOnly, SameSite=Lax, Secure when configured).
Unknown routes answer 401 too until a credential is shown, so nothing about the API is
learnt without one. With ``LLMCHAT_AUTH=off`` (loopback only) every request acts for the
first administrator. Routes read the user with :func:`current_identity`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from quart import Quart, Response, current_app, g, request
from quart_schema import security_scheme

from api import accounts
from api.accounts import Identity
from api.errors import Forbidden, Unauthenticated
from api.services import services
from api.settings import ApiSettings
from api.store import User

COOKIE = "llmchat_session"
CREDENTIALS = "sign in, or send Authorization: Bearer <API key>"
SECURITY_SCHEMES = {  # an API key (llmk_...) or a session token; or the cookie POST /auth/login sets
    "bearer": {"type": "http", "scheme": "bearer"},
    "session": {"type": "apiKey", "in_": "cookie", "name": COOKIE},
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"session": []}]
_PUBLIC_ENDPOINTS = {"openapi", "swagger_ui", "static"}

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def public(view: F) -> F:
    """Mark a route as open to anyone (sign-in itself); also in the OpenAPI document."""
    view._llmchat_public = True  # type: ignore[attr-defined]
    return security_scheme([])(view)


def current_identity() -> Identity:
    identity: Identity | None = g.get("identity")
    if identity is None:  # a public route asked: it has no user
        raise Unauthenticated(CREDENTIALS)
    return identity


def current_user() -> User:
    return current_identity().user


def require_admin() -> Identity:
    identity = current_identity()
    if not identity.admin:
        raise Forbidden("this operation is an administrator's")
    return identity


def _credential() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


async def _authenticate() -> None:
    settings: ApiSettings = services().settings
    if settings.auth == "off":
        g.identity = Identity(services().local_user, "local")
        return
    token = _credential()
    identity = await accounts.identify(token, settings.session_idle_s) if token else None
    g.identity = identity
    view = current_app.view_functions.get(request.endpoint or "")
    if request.endpoint in _PUBLIC_ENDPOINTS or getattr(view, "_llmchat_public", False):
        return
    if identity is None:
        raise Unauthenticated(CREDENTIALS if token is None else "the credential is wrong, revoked or expired; " + CREDENTIALS)


def set_session_cookie(response: Response, token: str, settings: ApiSettings) -> None:
    response.set_cookie(COOKIE, token, max_age=int(settings.session_max_s), httponly=True, samesite="Lax",
                        secure=settings.cookie_secure, path="/")


def clear_session_cookie(response: Response, settings: ApiSettings) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Lax", secure=settings.cookie_secure)


def client_address() -> str:
    """The client's address, for limits and the audit log. A peer in
    ``LLMCHAT_FORWARDED_ALLOW_IPS`` (loopback: the dashboard) may say whose request it
    forwards, in ``X-Forwarded-For``'s last entry; anyone else's header is ignored."""
    peer = request.remote_addr or "unknown"
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and peer in services().settings.forwarded_allow_ips:
        last = forwarded.split(",")[-1].strip()
        if last:
            return last[:64]
    return peer


def register(app: Quart) -> None:
    """Authenticate every request before its route runs (after the URL checks)."""
    app.before_request(_authenticate)
