"""A small actor pinned to each Ray node that answers what only that node can know.

Free memory (RAM, and each GPU's free VRAM through NVML) for admission; whether a model's
files there are the bytes the API reads (size and SHA-256, kept while the files do not
change, so only a node's first load of a model reads it whole); whether a worker's pid still
runs there and how much GPU memory NVML still charges it, to prove an unload. It holds no
model and takes no CPU from Ray's accounting (``num_cpus=0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from runtime import gpu
from runtime.digest import FileDigest, digest
from runtime.errors import ModelFilesMismatch
from runtime.settings import RuntimeSettings
from runtime.supervisor import pid_running, rss_mb


@dataclass(frozen=True, slots=True)
class NodeMemory:
    """What a node has free now."""

    node_id: str
    address: str
    ram_free_mb: float
    gpu_free_mb: tuple[float, ...]  # per visible GPU, in NVML's order


class NodeProbe:
    """Answers for its node (a Ray actor class, created pinned with node affinity)."""

    def __init__(self, node_id: str, address: str) -> None:
        self._node_id, self._address = node_id, address

    def memory(self) -> NodeMemory:
        gpus = tuple(float(gpu.free_mb(str(i)) or 0.0) for i in range(gpu.device_count()))
        return NodeMemory(self._node_id, self._address, float(psutil.virtual_memory().available) / 2**20, gpus)

    def check_files(self, name: str, relative_path: str, expect: FileDigest) -> ModelFilesMismatch | None:
        """Why the model in this node's models folder (``LLMCHAT_MODELS_DIR``) is not ``expect``, if it is not."""
        models_dir = RuntimeSettings().models_dir
        try:
            found = digest(models_dir / relative_path)
        except FileNotFoundError:
            return ModelFilesMismatch(
                f"{name} is not in the models folder of node {self._address}: copy the models folder to every node"
            )
        if found != expect:
            return ModelFilesMismatch(
                f"{name} differs on node {self._address}: {found.describe()} there, {expect.describe()} where the "
                "API reads the models folder; copy the same files to every node"
            )
        return None

    def pid_running(self, pid: int) -> bool:
        return pid_running(pid)

    def used_mb(self, pid: int, on_gpu: bool) -> float | None:
        """What the process holds: NVML's charge on a GPU, else its resident memory."""
        return gpu.used_by_mb(pid) if on_gpu else rss_mb(pid)
