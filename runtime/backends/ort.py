"""ONNX Runtime backend (Optimum's ``ORTModelForCausalLM``) for folders exported with
``python -m runtime.onnx_export``; CPU provider, or CUDA where onnxruntime-gpu is installed.

Tokenizing, prompt rendering, batching, abort and metrics are the Transformers backend's:
only the model object and its cache differ. The export takes no position ids (it counts
them from the cache length), so a left-padded row's positions are shifted by its padding;
rotary attention depends only on the distance between positions, so a batched greedy reply
still matches the same request run alone. Not so for a dynamically quantised (int8) export:
it quantises each activation tensor with one scale taken from the whole batch, so a row's
reply would depend on the rows beside it; such a model generates one reply at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from optimum.onnxruntime import ORTModelForCausalLM

from runtime import discovery
from runtime.backends.base import Loaded
from runtime.backends.hf import TransformersBackend
from runtime.errors import ModelLoadFailed
from runtime.protocol import WorkerSpec


class OnnxBackend(TransformersBackend):
    """Serves an Optimum ONNX export folder."""

    def load(self, spec: WorkerSpec) -> Loaded:
        loaded = super().load(spec)
        # torch only glues generate() together here (argmax, sampling); with more than one
        # thread its OpenMP workers keep spinning after each step and take cores from ONNX
        # Runtime's own threads (int8 measured about 7% slower with two on 2 cores).
        torch.set_num_threads(1)
        return loaded

    def _cuda_available(self) -> tuple[bool, str]:
        usable = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        return usable, "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"

    def _max_parallel(self, path: str) -> int:
        return 1 if _quantised_at_run_time(Path(path)) else super()._max_parallel(path)

    def _select_rows(self, past: Any, index: torch.Tensor) -> Any:
        return tuple(tuple(tensor[index] for tensor in layer) for layer in past)

    def _load_model(self, path: str, device: str, spec: WorkerSpec) -> Any:
        graph = discovery.onnx_file(Path(path))
        if graph is None:
            raise ModelLoadFailed(f"{Path(path).name} holds no .onnx file; export one with python -m runtime.onnx_export")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = spec.n_threads
        options.inter_op_num_threads = 1
        provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        return ORTModelForCausalLM.from_pretrained(
            path, file_name=graph.name, provider=provider, session_options=options, use_cache=True
        )


def _quantised_at_run_time(folder: Path) -> bool:
    """Whether Optimum's quantizer made this export with dynamic activation scales (its ort_config.json)."""
    try:
        quantization = json.loads((folder / "ort_config.json").read_text(encoding="utf-8"))["quantization"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(quantization, dict) and quantization.get("is_static") is False
