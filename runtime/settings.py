"""Runtime settings, read from ``LLMCHAT_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class RuntimeSettings(BaseSettings):
    """Where models live and how workers are started and stopped."""

    model_config = SettingsConfigDict(env_prefix="LLMCHAT_", extra="ignore")

    models_dir: Path = Field(PROJECT_ROOT / "models", description="Folder scanned for models.")
    n_ctx: int = Field(
        8192, ge=256, description="llama.cpp context size cap; the model's trained size if smaller."
    )
    n_threads: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="CPU threads per worker.",
    )
    onnx_on_cpu: bool = Field(
        True,
        description="Run a Transformers model on CPU from its ONNX export (<name>-onnx) when one exists.",
    )
    idle_unload_s: float = Field(
        1800.0, ge=0, description="Unload a worker nobody used for this long (0 = never); a load may override it."
    )
    max_workers: int = Field(4, ge=1, description="Most models loaded at once.")
    parallel: int | None = Field(
        None,
        ge=1,
        le=64,
        description=(
            "Replies one worker generates at once (continuous batching); default 8 on CPU, 16 on a GPU. "
            "Each holds a full context in the KV cache; a load may override it."
        ),
    )
    max_queue: int = Field(
        16, ge=1, description="Requests waiting per worker for a free slot; more get 429."
    )
    evict_idle: bool = Field(
        True, description="Unload the least recently used idle workers when a new load needs room."
    )
    memory_headroom_mb: int = Field(512, ge=0, description="Memory kept free when admitting a load.")
    state_dir: Path = Field(PROJECT_ROOT / "data", description="Where the runtime records its worker pids.")
    cuda_visible_devices: str | None = Field(
        None, description="Pin workers to these GPUs (CUDA_VISIBLE_DEVICES in each worker, e.g. '1')."
    )
    gpu_memory_fraction: float | None = Field(
        None, gt=0, le=1, description="Cap a Transformers worker's share of GPU memory (torch)."
    )
    runtime: Literal["local", "ray"] = Field(
        "local",
        description=(
            "Where model workers run: 'local', child processes of the one API process; 'ray', actors "
            "placed across a Ray cluster's nodes and shared by every API replica (the cluster extra)."
        ),
    )
    ray_address: str = Field(
        "auto", description="The Ray cluster to join with LLMCHAT_RUNTIME=ray (host:port of the head, or 'auto')."
    )
    ray_prefer_resource: str | None = Field(
        None,
        description=(
            "Ray runtime: place workers on nodes started with this custom resource when one has room "
            "(ray start --resources='{\"models\": 1}'), e.g. to keep them off the head node."
        ),
    )
    load_timeout_s: float = Field(600.0, gt=0, description="Longest a worker may take to load.")
    shutdown_timeout_s: float = Field(
        5.0, gt=0, description="Grace period for a worker to exit before it is killed."
    )
