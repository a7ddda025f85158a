"""Backend registry: the one list of backends, each name mapped to the class that implements it.

A model folder is classified by :mod:`runtime.discovery` under the name of the backend that
opens it, and the API, the terminal chat and the runtime take their choices from here.
Modules are imported only inside worker processes, so the parent never loads an ML library.
Adding a backend means one file in this folder and one line here.
"""

from __future__ import annotations

import importlib

from runtime.backends.base import Backend
from runtime.errors import BackendUnavailable

LLAMA_CPP, TRANSFORMERS, ONNX = "llama.cpp", "transformers", "onnx"
REGISTRY: dict[str, str] = {
    LLAMA_CPP: "runtime.backends.llamacpp:LlamaCppBackend",
    TRANSFORMERS: "runtime.backends.hf:TransformersBackend",
    ONNX: "runtime.backends.ort:OnnxBackend",
}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def check(name: str) -> str:
    """``name`` if it is a known backend, else :class:`BackendUnavailable` naming the known ones."""
    if name not in REGISTRY:
        raise BackendUnavailable(f"unknown backend {name!r}; known: {', '.join(NAMES)}")
    return name


def create(name: str) -> Backend:
    """Instantiate the backend called ``name`` (imports its library)."""
    module_name, class_name = REGISTRY[check(name)].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} is not installed: {exc}") from exc
    backend: Backend = getattr(module, class_name)()
    return backend
