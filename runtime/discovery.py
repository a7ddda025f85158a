"""Finding models in the models folder and resolving user-supplied model names safely.

Each top-level entry of the folder is one model:

* a ``.gguf`` file, or a folder holding one: llama.cpp;
* a folder with ``config.json`` and ``*.onnx``: ONNX Runtime (Optimum);
* a folder with ``config.json`` and weights (safetensors / bin): Transformers.
"""

from __future__ import annotations

import functools
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runtime.backends import LLAMA_CPP, ONNX, TRANSFORMERS
from runtime.errors import InvalidModelName, ModelNotFound

_MAX_NAME_BYTES = 255  # the longest file name Linux (and most file systems) allow
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
# Set-up and the ONNX export write each model as ``<name>.partial`` and rename it when done;
# until then it may already look like a model (config.json and some weights).
_IN_PROGRESS_SUFFIX = ".partial"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model found on disk. ``path`` is the file or folder the backend opens."""

    name: str
    backend: str  # the backend that opens it, a name from runtime.backends.NAMES
    path: Path
    size_bytes: int
    context_length: int | None
    kv_bytes_per_token: int | None = None  # KV cache per token of context (f16), from the model's shape


def scan(models_dir: Path) -> list[ModelInfo]:
    """Every usable model in ``models_dir``, sorted by name.

    Unusable entries are skipped, and so are hidden ones and models still being written.
    """
    if not models_dir.is_dir():
        return []
    found = []
    for entry in sorted(models_dir.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(_IN_PROGRESS_SUFFIX):
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
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        raise InvalidModelName(f"invalid model name: longer than {_MAX_NAME_BYTES} bytes, which no file name can be")
    root = models_dir.resolve()
    try:
        target = (root / name).resolve()
        if not target.is_relative_to(root) or target == root:
            raise InvalidModelName(f"model {name!r} resolves outside the models folder")
        if not target.exists():
            raise ModelNotFound(f"no model named {name!r} in the models folder")
        info = _classify(name, target)
    except OSError as exc:  # a name the file system refuses (too long, bad bytes), or an unreadable entry
        raise ModelNotFound(f"no usable model named {name!r} in the models folder ({exc.strerror})") from None
    if info is None:
        raise ModelNotFound(f"{name!r} in the models folder is not a GGUF file or a model folder")
    return info


def _classify(name: str, path: Path) -> ModelInfo | None:
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            return None
        return ModelInfo(name, LLAMA_CPP, path, path.stat().st_size, *gguf_shape(path))
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    config = path / "config.json"
    if config.is_file():
        if onnx_file(path) is not None:
            return ModelInfo(name, ONNX, path, size, *_config_shape(config))
        if any(next(path.glob(p), None) for p in _WEIGHT_PATTERNS):
            return ModelInfo(name, TRANSFORMERS, path, size, *_config_shape(config))
    ggufs = sorted(p for p in path.glob("*.gguf") if "mmproj" not in p.name.lower())
    if ggufs:
        return ModelInfo(name, LLAMA_CPP, ggufs[0], size, *gguf_shape(ggufs[0]))
    return None


def onnx_file(folder: Path) -> Path | None:
    """The ONNX graph a folder holds: ``model.onnx`` if present, else the first ``*.onnx``."""
    preferred = folder / "model.onnx"
    if preferred.is_file():
        return preferred
    return next(iter(sorted(folder.glob("*.onnx"))), None)


def _config_shape(config: Path) -> tuple[int | None, int | None]:
    """Context length and KV-cache bytes per token from a Transformers ``config.json``."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    merged = {**data, **(data.get("text_config") or {})}
    context = next(
        (int(merged[k]) for k in ("max_position_embeddings", "n_positions", "max_sequence_length")
         if isinstance(merged.get(k), int)),
        None,
    )
    layers, heads = merged.get("num_hidden_layers"), merged.get("num_attention_heads")
    kv_heads = merged.get("num_key_value_heads") or heads
    head_dim = merged.get("head_dim") or (merged["hidden_size"] // heads if merged.get("hidden_size") and heads else None)
    if not all(isinstance(v, int) and v > 0 for v in (layers, kv_heads, head_dim)):
        return context, None
    return context, _kv_bytes(layers, kv_heads, head_dim, head_dim)


def _kv_bytes(layers: int, kv_heads: int, key_length: int, value_length: int) -> int:
    return layers * kv_heads * (key_length + value_length) * 2  # f16 keys and values


def gguf_shape(path: Path) -> tuple[int | None, int | None]:
    """Trained context length and KV-cache bytes per token, from a GGUF file's metadata."""
    stat = path.stat()
    return _gguf_shape(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _gguf_shape(path: str, _mtime_ns: int, _size: int) -> tuple[int | None, int | None]:
    try:
        with open(path, "rb") as handle:
            facts = _read_gguf_facts(handle)
    except (OSError, ValueError, struct.error):
        return None, None
    context = facts.get("context_length")
    layers, heads = facts.get("block_count"), facts.get("attention.head_count")
    kv_heads = facts.get("attention.head_count_kv") or heads
    width = facts.get("embedding_length")
    head_dim = width // heads if width and heads else None
    key_length = facts.get("attention.key_length") or head_dim
    value_length = facts.get("attention.value_length") or head_dim
    if not (layers and kv_heads and key_length and value_length):
        return context, None
    return context, _kv_bytes(layers, kv_heads, key_length, value_length)


# GGUF value types with a fixed size, by type id (see the GGUF spec in ggml's docs).
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_MAX_STRING = 16 * 2**20  # chat templates run to tens of kB; more means a corrupt file


_GGUF_FACTS = (
    "context_length", "block_count", "embedding_length", "attention.head_count",
    "attention.head_count_kv", "attention.key_length", "attention.value_length",
)


def _read_gguf_facts(handle: BinaryIO) -> dict[str, int]:
    """The ``<arch>.*`` shape values of :data:`_GGUF_FACTS` a GGUF header holds.

    Reads only the header, seeks over arrays and stops once every fact is seen, so it takes
    milliseconds where ``gguf.GGUFReader`` spends tens of seconds decoding a 262k-entry vocabulary.
    """
    if handle.read(4) != b"GGUF":
        raise ValueError("not a GGUF file")
    (version,) = struct.unpack("<I", handle.read(4))
    if version < 2:
        raise ValueError(f"GGUF version {version} is not supported")
    _tensor_count, kv_count = struct.unpack("<QQ", handle.read(16))
    arch: str | None = None
    values: dict[str, object] = {}
    for _ in range(kv_count):
        key = _gguf_string(handle)
        (value_type,) = struct.unpack("<I", handle.read(4))
        value = _gguf_value(handle, value_type)
        if key == "general.architecture":
            arch = str(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            values[key] = value
        if arch is not None and all(f"{arch}.{fact}" in values for fact in _GGUF_FACTS):
            break
    if arch is None:
        return {}
    return {fact: int(values[f"{arch}.{fact}"]) for fact in _GGUF_FACTS if f"{arch}.{fact}" in values}  # type: ignore[call-overload]


def _gguf_string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", handle.read(8))
    if length > _GGUF_MAX_STRING:
        raise ValueError("corrupt GGUF header: string length out of range")
    return handle.read(length).decode("utf-8", errors="replace")


def _gguf_value(handle: BinaryIO, value_type: int) -> object:
    if value_type in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[value_type]
        return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]
    if value_type == _GGUF_STRING:
        return _gguf_string(handle)
    if value_type == _GGUF_ARRAY:
        item_type, count = struct.unpack("<IQ", handle.read(12))
        if item_type in _GGUF_SCALARS:
            handle.seek(struct.calcsize(_GGUF_SCALARS[item_type]) * count, io.SEEK_CUR)
        else:
            for _ in range(count):
                _gguf_value(handle, item_type)
        return None
    raise ValueError(f"unknown GGUF value type {value_type}")
