"""GPU pinning and capping, device resolution and release proof, checked on CPU.

The project's machines have no GPU: these tests check that the pin reaches the worker
before any CUDA library loads, that ``gpu`` then fails clearly, and that unload reports the
memory it gave back. On a GPU machine the same paths report VRAM from NVML.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from runtime import gpu
from runtime.backends.base import resolve_device
from runtime.default_model import GGUF_NAME, TRANSFORMERS_NAME
from runtime.errors import DeviceUnavailable
from runtime.manager import Runtime
from runtime.settings import RuntimeSettings


def test_device_resolution_rules() -> None:
    assert resolve_device("cpu", True, "") == "cpu"
    assert resolve_device("auto", True, "") == "cuda"
    assert resolve_device("gpu", True, "") == "cuda"
    assert resolve_device("auto", False, "") == "cpu"
    with pytest.raises(DeviceUnavailable, match="because"):
        resolve_device("gpu", False, "because")


def test_hidden_gpus_count_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu.device_count() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu.device_count() == 0


def test_admission_asks_about_the_gpu_a_worker_is_pinned_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu.first_device(None) == "0"
    assert gpu.first_device("2,3") == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f0c, 1")
    assert gpu.first_device(None) == "GPU-5f0c"
    assert gpu.first_device("3") == "3"  # the worker's own pinning wins
    assert gpu.free_mb("0") is None  # no NVIDIA driver on this machine


async def test_pinning_reaches_the_worker_and_unload_reports_freed_memory(
    runtime_settings: RuntimeSettings, tmp_path: Path
) -> None:
    settings = runtime_settings.model_copy(update={"state_dir": tmp_path, "cuda_visible_devices": ""})
    rt = Runtime(settings)
    try:
        info = await rt.load("pinned", GGUF_NAME, "auto")
        assert info.cuda_visible_devices == "" and info.running_on == "cpu"
        rss_mb = psutil.Process(info.pid).memory_info().rss / 2**20
        with pytest.raises(DeviceUnavailable):
            await rt.load("gpu", TRANSFORMERS_NAME, "gpu", backend="transformers")
        result = await rt.unload("pinned")
        assert result is not None and result.exited and not psutil.pid_exists(info.pid)
        assert result.freed_mb is not None and result.freed_mb > 100
        assert abs(result.freed_mb - rss_mb) < max(50.0, rss_mb * 0.2)
    finally:
        await rt.close()
