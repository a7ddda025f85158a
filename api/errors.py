"""HTTP errors. Every failure leaves the API as JSON ``{"error", "detail", "status"}``.

Hierarchy::

    ApiError                    raised by the API's own code, carries its status
    ├── ChatNotFound            404
    ├── NotLoaded               409 the chat has no model loaded and named none
    ├── ChatBusy                429 a reply for this chat is still being generated
    └── MessageTooLong          413

Runtime errors are mapped here, once (see :data:`RUNTIME_STATUS`); routes never build
error responses themselves. ``/v1/`` routes get OpenAI's error shape instead.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, Response, jsonify, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from runtime import errors as rt

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ChatNotFound(ApiError):
    status = 404


class NotLoaded(ApiError):
    status = 409


class MessageTooLong(ApiError):
    status = 413


class ChatBusy(ApiError):
    status = 429
    retry_after_s = 2.0


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
    rt.WorkerDied: 503,
    rt.GenerationFailed: 502,
}


def status_of(exc: BaseException) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    for kind, status in RUNTIME_STATUS.items():
        if isinstance(exc, kind):
            return status
    return 500


def retry_after(exc: BaseException) -> float | None:
    """Seconds a client should wait before retrying, for errors that say so (429)."""
    value = getattr(exc, "retry_after_s", None)
    return float(value) if value is not None else None


def _body(name: str, detail: str, status: int, retry_after_s: float | None = None) -> Response:
    if request.path.startswith("/v1/"):
        payload: dict[str, Any] = {"error": {"message": detail, "type": name, "code": status}}
    else:
        payload = {"error": name, "detail": detail, "status": status}
    response = jsonify(payload)
    response.status_code = status
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, round(retry_after_s)))
    return response


def register(app: Quart) -> None:
    """Install the one place where exceptions become HTTP responses."""

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return _body(type(exc).__name__, exc.detail, exc.status, retry_after(exc))

    @app.errorhandler(rt.ModelRuntimeError)
    async def runtime_error(exc: rt.ModelRuntimeError) -> Response:
        return _body(type(exc).__name__, str(exc), status_of(exc), retry_after(exc))

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_body(exc: RequestSchemaValidationError) -> Response:
        errors = getattr(exc.validation_error, "errors", None)
        if callable(errors):
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in errors()
            )
        else:
            detail = str(exc.validation_error)
        return _body("ValidationError", detail, 422)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        return _body(type(exc).__name__, exc.description or exc.name, status)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _body("InternalError", f"{type(exc).__name__}: {exc}", 500)
