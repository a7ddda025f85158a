"""Errors raised by the model runtime.

Hierarchy (everything the runtime raises is a ``ModelRuntimeError``)::

    ModelRuntimeError
    ├── InvalidModelName      a name that escapes the models folder or is malformed
    ├── ModelNotFound         no model of that name in the models folder
    ├── BackendUnavailable    the requested backend does not fit the model or is not installed
    ├── DeviceUnavailable     ``gpu`` asked for where the worker sees no CUDA device
    ├── ModelLoadFailed       the worker could not load the weights (corrupt file, OOM, ...)
    ├── ModelFilesMismatch    the node chosen for a worker holds other files than the API's models folder
    ├── ModelNotLoaded        a request for a worker that is not running
    ├── Busy                  the worker's queue is full; try again after ``retry_after_s``
    ├── InsufficientMemory    the model does not fit in free RAM/VRAM (nothing idle to unload)
    ├── TooManyModels         the loaded-model cap is reached (nothing idle to unload)
    ├── ContextOverflow       the newest message alone does not fit the context window
    ├── GenerationFailed      one request failed; the worker is still usable (recoverable)
    └── WorkerDied            the worker process ended; every pending request fails (fatal)

Workers never send live exceptions over the pipe: they send the error's class name and
message, and :func:`from_wire` turns that back into one of these types.
"""

from __future__ import annotations

import re


class ModelRuntimeError(Exception):
    """Base class of every error the runtime raises."""


class InvalidModelName(ModelRuntimeError):
    """The model name is malformed or resolves outside the models folder."""


class ModelNotFound(ModelRuntimeError):
    """No model with that name exists in the models folder."""


class BackendUnavailable(ModelRuntimeError):
    """The backend cannot serve this model, or its library is not installed."""


class DeviceUnavailable(ModelRuntimeError):
    """The requested device is not available to the worker."""


class ModelLoadFailed(ModelRuntimeError):
    """The worker failed while loading the model."""


class ModelFilesMismatch(ModelRuntimeError):
    """The model's files on the node that would load it differ from the API's (size or hash), or are missing."""


class ModelNotLoaded(ModelRuntimeError):
    """No worker is running for that model and device."""


class Busy(ModelRuntimeError):
    """The worker already has as many waiting requests as allowed."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InsufficientMemory(ModelRuntimeError):
    """Loading would exceed the free memory, and no idle worker could be unloaded to make room."""


class TooManyModels(ModelRuntimeError):
    """The cap on loaded models is reached, and no idle worker could be unloaded."""


class ContextOverflow(ModelRuntimeError):
    """Even the newest message alone leaves no room for the reply in the context window."""


class GenerationFailed(ModelRuntimeError):
    """A single request failed inside a worker that is still alive."""


class WorkerDied(ModelRuntimeError):
    """The worker process ended; its pending requests cannot complete."""


_WIRE_TYPES: dict[str, type[ModelRuntimeError]] = {
    cls.__name__: cls
    for cls in (
        InvalidModelName,
        ModelNotFound,
        BackendUnavailable,
        DeviceUnavailable,
        ModelLoadFailed,
        GenerationFailed,
        ContextOverflow,  # a prompt too long for its slot: a client's 413, not a failure
    )
}


# An absolute path with at least one folder: only its last part is kept in messages.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s/'\":,;()]+/)+([^\s/'\":,;()]+)")


def without_paths(message: str) -> str:
    """``message`` with every absolute path cut to its last part: clients never see the server's folders."""
    return _ABSOLUTE_PATH.sub(r"\1", message)


def to_wire(exc: BaseException) -> tuple[str, str]:
    """Reduce an exception to plain values that can cross the worker pipe (paths cut to names)."""
    kind = type(exc).__name__ if type(exc).__name__ in _WIRE_TYPES else "GenerationFailed"
    message = without_paths(str(exc) or type(exc).__name__)
    if kind == "GenerationFailed" and not isinstance(exc, GenerationFailed):
        message = f"{type(exc).__name__}: {message}"
    return kind, message


def from_wire(kind: str, message: str) -> ModelRuntimeError:
    """Rebuild a runtime error from what a worker sent."""
    return _WIRE_TYPES.get(kind, GenerationFailed)(message)
