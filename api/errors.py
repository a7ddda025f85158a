"""HTTP errors: the one place where an exception becomes what a client is told.

Hierarchy (the API's own errors; each carries its status)::

    ApiError                    400 unless a subclass says otherwise
    ├── MalformedRequest        400 a body or URL no route could use (see api/requests.py)
    ├── Unauthenticated         401 no credential, or one that is wrong, revoked or expired
    ├── Forbidden               403 signed in, but the operation is an administrator's
    ├── HostNotAllowed          403 the Host header names no name of this server (DNS rebinding)
    ├── OriginNotAllowed        403 a browser request from a page of another site
    ├── ChatNotFound            404 also another user's chat: its existence is not revealed
    ├── MessageNotFound         404 no such message in the chat (or not one that can be edited
    │                               or made again: a reply for an edit, a question for a regenerate)
    ├── KeyNotFound             404 no such API key of yours
    ├── UserNotFound            404 no such user (administrators' routes)
    ├── WorkerNotFound          404 no worker runs for that model, device and backend
    ├── NotLoaded               409 the chat has no model loaded and named none
    ├── Conflict                409 an administrator's change that would leave no administrator
    ├── MessageTooLong          413
    ├── UnsupportedMediaType    415 a JSON route got a body of another type
    ├── ChatBusy                429 a reply for this chat is still being generated
    ├── TooManyAttempts         429 failed sign-ins: the account or the address waits
    ├── LimitExceeded           429 a user's limit (models held, replies at once, tokens a day)
    └── ReplyFailed             the status of its cause: an accepted reply failed before its
                                first token (it is stored; the body names its message_id)

Runtime errors are mapped here, once (see :data:`RUNTIME_STATUS`). :func:`describe` turns
any exception into an :class:`ErrorInfo`, and :func:`error_payload` turns that into the body
every channel uses: HTTP error responses, the chat stream's ``error`` event, and the
OpenAI stream's in-band error. Bodies are ``{"error", "detail", "status"}``, or OpenAI's
``{"error": {"message", "type", "code"}}`` under ``/v1/``. Anything unexpected (a bug) is
logged with its traceback under a reference id, and the client gets only that id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from quart import Quart, Response, has_request_context, jsonify, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from runtime import errors as rt

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error of the API's own, with the HTTP status it answers."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MalformedRequest(ApiError):
    status = 400


class Unauthenticated(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class HostNotAllowed(ApiError):
    status = 403


class OriginNotAllowed(ApiError):
    status = 403


class ChatNotFound(ApiError):
    status = 404


class MessageNotFound(ApiError):
    status = 404


class KeyNotFound(ApiError):
    status = 404


class UserNotFound(ApiError):
    status = 404


class WorkerNotFound(ApiError):
    status = 404


class NotLoaded(ApiError):
    status = 409


class Conflict(ApiError):
    status = 409


class MessageTooLong(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class ChatBusy(ApiError):
    status = 429
    retry_after_s = 2.0


class LimitExceeded(ApiError):
    status = 429

    def __init__(self, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class TooManyAttempts(ApiError):
    status = 429

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


RUNTIME_STATUS: dict[type[rt.ModelRuntimeError], int] = {
    rt.InvalidModelName: 400,
    rt.ModelNotFound: 404,
    rt.BackendUnavailable: 400,
    rt.DeviceUnavailable: 422,
    rt.ModelNotLoaded: 409,
    rt.Busy: 429,
    rt.InsufficientMemory: 507,
    rt.TooManyModels: 503,
    rt.ContextOverflow: 413,
    rt.ModelLoadFailed: 503,
    rt.ModelFilesMismatch: 503,  # a deployment fault: the nodes hold different models folders
    rt.WorkerDied: 503,
    rt.GenerationFailed: 502,
}


class ReplyFailed(ApiError):
    """An accepted reply failed before its first token: it is stored with status error, and the
    client gets the cause's status and name, plus the stored reply's id."""

    def __init__(self, cause: rt.ModelRuntimeError, message_id: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.message_id = message_id


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What a client is told about one error, whatever the channel."""

    name: str
    detail: str
    status: int
    retry_after_s: float | None = None
    reference: str | None = None  # set for unexpected errors: the id their log entry carries
    message_id: int | None = None  # set when a reply was stored (with status error) before the failure


def describe(exc: BaseException) -> ErrorInfo:
    """What to tell a client about ``exc``.

    API, runtime, validation and HTTP errors say what they are. Anything else is a bug: it
    is logged here, with its traceback and a new reference id, and described only as an
    ``InternalError`` naming that reference, so nothing of the server's internals leaves it.
    """
    if isinstance(exc, ReplyFailed):
        return dataclasses.replace(describe(exc.cause), message_id=exc.message_id)
    if isinstance(exc, ApiError):
        return ErrorInfo(type(exc).__name__, exc.detail, exc.status, _retry_after(exc))
    if isinstance(exc, rt.ModelRuntimeError):
        status = next((s for kind, s in RUNTIME_STATUS.items() if isinstance(exc, kind)), 500)
        return ErrorInfo(type(exc).__name__, str(exc) or type(exc).__name__, status, _retry_after(exc))
    if isinstance(exc, RequestSchemaValidationError):
        return ErrorInfo("ValidationError", _validation_detail(exc), 422)
    if isinstance(exc, HTTPException) and exc.code is not None and exc.code < 500:
        return ErrorInfo(type(exc).__name__, exc.description or exc.name, exc.code)
    return _internal(exc)


def error_payload(info: ErrorInfo, *, openai: bool) -> dict[str, Any]:
    """The JSON body for ``info``: the API's shape, or OpenAI's when ``openai`` is true."""
    extra: dict[str, Any] = {"reference": info.reference} if info.reference is not None else {}
    if info.message_id is not None:
        extra["message_id"] = info.message_id
    if openai:
        return {"error": {"message": info.detail, "type": info.name, "code": info.status, **extra}}
    return {"error": info.name, "detail": info.detail, "status": info.status, **extra}


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after_s", None)
    return float(value) if value is not None else None


def _validation_detail(exc: RequestSchemaValidationError) -> str:
    errors = getattr(exc.validation_error, "errors", None)
    if callable(errors):
        # Each error's place and message only: pydantic's input echo could be megabytes.
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in errors()
        )
    return "the request does not match the operation's schema"


def _internal(exc: BaseException) -> ErrorInfo:
    reference = uuid.uuid4().hex[:12]
    where = f" on {request.method} {request.path[:200]!r}" if has_request_context() else ""
    log.error("unexpected error%s; reference %s", where, reference, exc_info=exc)
    detail = f"an unexpected error occurred; reference {reference}"
    return ErrorInfo("InternalError", detail, 500, reference=reference)


async def _respond(info: ErrorInfo) -> Response:
    if info.status not in (408, 413):  # those failed reading the body
        # Hypercorn closes a connection whose request body was not all received when the
        # response ends, and a client reusing it meanwhile loses its next request: an early
        # refusal (a bad URL, a wrong Content-Type) waits for the body first.
        with contextlib.suppress(Exception):
            await request.get_data()
    response = jsonify(error_payload(info, openai=request.path.startswith("/v1/")))
    response.status_code = info.status
    if info.retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, round(info.retry_after_s)))
    if info.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="llmchat"'
    return response


def register(app: Quart) -> None:
    """Install the one place where exceptions become HTTP responses."""

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        response = await _respond(describe(exc))
        for key, value in exc.get_headers():  # e.g. a 405's Allow
            if key.lower() != "content-type":
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    async def any_error(exc: Exception) -> Response:
        return await _respond(describe(exc))
