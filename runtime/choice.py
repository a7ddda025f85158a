"""Which backend runs a model, and from which files: the same choice for every runtime.

A Transformers model with an ONNX export beside it (``<name>-onnx``) runs from the export when
ONNX is asked for, or on CPU when ``onnx_on_cpu`` is set.
"""

from __future__ import annotations

from dataclasses import replace

from runtime import backends, discovery, gpu
from runtime.backends import ONNX, TRANSFORMERS
from runtime.discovery import ModelInfo
from runtime.errors import BackendUnavailable, ModelRuntimeError
from runtime.protocol import Device
from runtime.settings import RuntimeSettings


def choose_backend(
    settings: RuntimeSettings, model: str, device: Device, backend: str | None
) -> tuple[ModelInfo, str]:
    """The backend to run ``model`` with, and the files it opens (blocking: reads the disk, NVML)."""
    if backend is not None:
        backends.check(backend)
    info = discovery.resolve(settings.models_dir, model)
    export = _onnx_export(settings, info) if info.backend == TRANSFORMERS else None
    if backend == ONNX and info.backend == TRANSFORMERS:
        if export is None:
            raise BackendUnavailable(
                f"{info.name} has no ONNX export; create one with: python -m runtime.onnx_export {info.name}"
            )
        return replace(info, path=export.path), ONNX
    if backend is None and export is not None and settings.onnx_on_cpu:
        if device == "cpu" or (device == "auto" and gpu.device_count() == 0):
            return replace(info, path=export.path), ONNX
    if backend is not None and backend != info.backend:
        raise BackendUnavailable(f"{info.name} is a {info.backend} model; backend {backend!r} cannot open it")
    return info, info.backend


def _onnx_export(settings: RuntimeSettings, info: ModelInfo) -> ModelInfo | None:
    try:
        export = discovery.resolve(settings.models_dir, f"{info.name}-onnx")
    except ModelRuntimeError:
        return None
    return export if export.backend == ONNX else None
