"""ONNX Runtime backend (Optimum's ``ORTModelForCausalLM``) for folders exported with
``python -m runtime.onnx_export``; CPU provider, or CUDA where onnxruntime-gpu is installed.

Tokenizing, prompt rendering, streaming, abort and metrics are the Transformers backend's:
only the model object differs.
"""

from __future__ import annotations

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
