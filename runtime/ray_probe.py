"""A small actor pinned to each Ray node that answers what only that node can know.

Free memory (RAM, and each GPU's free VRAM through NVML) for admission; whether a worker's
pid still runs there and how much GPU memory NVML still charges it, to prove an unload.
It holds no model and takes no CPU from Ray's accounting (``num_cpus=0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from runtime import gpu
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

    def pid_running(self, pid: int) -> bool:
        return pid_running(pid)

    def used_mb(self, pid: int, on_gpu: bool) -> float | None:
        """What the process holds: NVML's charge on a GPU, else its resident memory."""
        return gpu.used_by_mb(pid) if on_gpu else rss_mb(pid)
