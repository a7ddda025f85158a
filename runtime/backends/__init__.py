"""Backend registry: a backend name maps to the module and class that implement it.

Modules are imported only inside worker processes, so the parent never loads an ML library.
Adding a backend means one file in this folder and one line here.
"""

from __future__ import annotations

import importlib

from runtime.backends.base import Backend
from runtime.errors import BackendUnavailable

REGISTRY: dict[str, str] = {
    "llama.cpp": "runtime.backends.llamacpp:LlamaCppBackend",
    "transformers": "runtime.backends.hf:TransformersBackend",
    "onnx": "runtime.backends.ort:OnnxBackend",
}


def create(name: str) -> Backend:
    """Instantiate the backend called ``name`` (imports its library)."""
    try:
        module_name, class_name = REGISTRY[name].split(":")
    except KeyError:
        raise BackendUnavailable(f"unknown backend {name!r}; known: {', '.join(REGISTRY)}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} is not installed: {exc}") from exc
    backend: Backend = getattr(module, class_name)()
    return backend
