"""Finding models in the models folder and resolving user-supplied model names safely.

Each top-level entry of the folder is one model:

* a ``.gguf`` file, or a folder holding one: llama.cpp;
* a folder with ``config.json`` and ``*.onnx``: ONNX Runtime (Optimum);
* a folder with ``config.json`` and weights (safetensors / bin): Transformers.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runtime.errors import InvalidModelName, ModelNotFound

Backend = Literal["llama.cpp", "transformers", "onnx"]
BACKENDS: tuple[Backend, ...] = ("llama.cpp", "transformers", "onnx")

_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model found on disk. ``path`` is the file or folder the backend opens."""

    name: str
    backend: Backend
    path: Path
    size_bytes: int
    context_length: int | None


def scan(models_dir: Path) -> list[ModelInfo]:
    """Every usable model in ``models_dir``, sorted by name. Unusable entries are skipped."""
    if not models_dir.is_dir():
        return []
    found = []
    for entry in sorted(models_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        try:
            found.append(resolve(models_dir, entry.name))
        except (ModelNotFound, InvalidModelName):
            continue
    return found


def resolve(models_dir: Path, name: str) -> ModelInfo:
    """Turn a user-supplied model name into a :class:`ModelInfo`.

    Raises :class:`InvalidModelName` for names that could point outside the folder
    (``..``, absolute paths, separators, symlinks leading out) and :class:`ModelNotFound`
    when nothing usable has that name.
    """
    if not name or name != name.strip() or "\x00" in name:
        raise InvalidModelName(f"invalid model name {name!r}")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidModelName(
            f"invalid model name {name!r}: give the name of an entry of the models folder, not a path"
        )
    root = models_dir.resolve()
    target = (root / name).resolve()
    if not target.is_relative_to(root) or target == root:
        raise InvalidModelName(f"model {name!r} resolves outside the models folder")
    if not target.exists():
        raise ModelNotFound(f"no model named {name!r} in {models_dir}")
    info = _classify(name, target)
    if info is None:
        raise ModelNotFound(f"{name!r} in {models_dir} is not a GGUF file or a model folder")
    return info


def _classify(name: str, path: Path) -> ModelInfo | None:
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            return None
        return ModelInfo(name, "llama.cpp", path, path.stat().st_size, gguf_context_length(path))
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    config = path / "config.json"
    if config.is_file():
        if onnx_file(path) is not None:
            return ModelInfo(name, "onnx", path, size, _config_context_length(config))
        if any(next(path.glob(p), None) for p in _WEIGHT_PATTERNS):
            return ModelInfo(name, "transformers", path, size, _config_context_length(config))
    ggufs = sorted(p for p in path.glob("*.gguf") if "mmproj" not in p.name.lower())
    if ggufs:
        return ModelInfo(name, "llama.cpp", ggufs[0], size, gguf_context_length(ggufs[0]))
    return None


def onnx_file(folder: Path) -> Path | None:
    """The ONNX graph a folder holds: ``model.onnx`` if present, else the first ``*.onnx``."""
    preferred = folder / "model.onnx"
    if preferred.is_file():
        return preferred
    return next(iter(sorted(folder.glob("*.onnx"))), None)


def _config_context_length(config: Path) -> int | None:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for section in (data, data.get("text_config") or {}):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            if isinstance(section.get(key), int):
                return int(section[key])
    return None


def gguf_context_length(path: Path) -> int | None:
    """The trained context length from a GGUF file's metadata (``<arch>.context_length``)."""
    stat = path.stat()
    return _gguf_context_length(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _gguf_context_length(path: str, _mtime_ns: int, _size: int) -> int | None:
    from gguf import GGUFReader  # reads the header through a memory map; numpy only

    try:
        reader = GGUFReader(path)
    except (OSError, ValueError):
        return None
    arch_field = reader.get_field("general.architecture")
    if arch_field is None:
        return None
    arch = arch_field.contents()
    ctx_field = reader.get_field(f"{arch}.context_length")
    return int(ctx_field.contents()) if ctx_field is not None else None
