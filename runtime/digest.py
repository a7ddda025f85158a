"""What a model's files are, as a size and a SHA-256: the same model must be the same bytes on every node.

A model is a file (GGUF) or a folder (Transformers, ONNX): the digest covers every file under
it, in name order, with the names. Hashing reads the whole model (about 1 GB/s), so a digest is
kept per process for as long as no file's size or modification time changes.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 4 * 2**20


@dataclass(frozen=True, slots=True)
class FileDigest:
    size_bytes: int
    sha256: str

    def describe(self) -> str:
        return f"{self.size_bytes:,} bytes, SHA-256 {self.sha256[:12]}…"


_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], FileDigest] = {}
_lock = threading.Lock()


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def digest(path: Path) -> FileDigest:
    """Size and SHA-256 of the model at ``path`` (blocking: call it off the event loop).

    FileNotFoundError if nothing is there."""
    if not path.exists():
        raise FileNotFoundError(path)
    files = _files(path)
    stamp = tuple((str(f.relative_to(path)) if f != path else "", f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(path.resolve()), stamp)
    with _lock:
        known = _cache.get(key)
    if known is not None:
        return known
    sha = hashlib.sha256()
    size = 0
    for file, (name, file_size, _) in zip(files, stamp, strict=True):
        sha.update(name.encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                sha.update(chunk)
        size += file_size
    found = FileDigest(size, sha.hexdigest())
    with _lock:
        _cache[key] = found
    return found
