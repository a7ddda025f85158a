"""NVIDIA GPUs as NVML (nvidia-ml-py) sees them, for the runtime and its backends.

NVML needs no CUDA library, so the parent can ask about devices, free memory and a
worker's usage without loading torch. Every question opens and closes its own NVML
session; without a driver the answer is "no GPU" (0 devices, None for memory).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def _nvml() -> Iterator[Any]:
    import pynvml

    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def device_count() -> int:
    """CUDA devices visible to this process (0 when there is no driver)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    try:
        with _nvml() as nvml:
            count = int(nvml.nvmlDeviceGetCount())
    except Exception:  # noqa: BLE001 - any NVML failure means no usable GPU
        return 0
    if visible is not None:
        return min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


def first_device(pinned: str | None) -> str:
    """The GPU a worker's ``cuda:0`` is: the first entry of its pinning, else of this
    process's ``CUDA_VISIBLE_DEVICES``, else device 0 (an index or a ``GPU-...`` UUID)."""
    for visible in (pinned, os.environ.get("CUDA_VISIBLE_DEVICES")):
        if visible and visible.split(",")[0].strip():
            return visible.split(",")[0].strip()
    return "0"


def free_mb(device: str) -> float | None:
    """Free memory of one GPU (an NVML index or UUID), or None without NVML."""
    try:
        with _nvml() as nvml:
            if device.isdigit():
                handle = nvml.nvmlDeviceGetHandleByIndex(int(device))
            else:
                handle = nvml.nvmlDeviceGetHandleByUUID(device)
            return float(nvml.nvmlDeviceGetMemoryInfo(handle).free) / 2**20
    except Exception:  # noqa: BLE001 - no NVML, no answer
        return None


def used_by_mb(pid: int) -> float | None:
    """GPU memory NVML charges to ``pid`` over all devices, or None without NVML."""
    try:
        with _nvml() as nvml:
            used = 0
            for index in range(nvml.nvmlDeviceGetCount()):
                device = nvml.nvmlDeviceGetHandleByIndex(index)
                for process in nvml.nvmlDeviceGetComputeRunningProcesses(device):
                    if process.pid == pid and process.usedGpuMemory:
                        used += process.usedGpuMemory
            return used / 2**20
    except Exception:  # noqa: BLE001 - no NVML, no answer
        return None
