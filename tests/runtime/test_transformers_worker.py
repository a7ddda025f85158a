"""The real Transformers backend on the checkpoint derived from the default GGUF."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import psutil
import pytest

from runtime.default_model import GGUF_NAME, TRANSFORMERS_NAME
from runtime.errors import DeviceUnavailable
from runtime.manager import Runtime
from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk
from runtime.settings import RuntimeSettings

QUESTION = [ChatMessage("system", "Answer briefly."), ChatMessage("user", "What is the capital of France?")]
TRICKY = [ChatMessage("user", "Héllo  wörld —\tdef f(x):\n    return 日本語 🚀")]


@pytest.fixture(scope="module")
async def runtime(runtime_settings: RuntimeSettings) -> AsyncIterator[Runtime]:
    rt = Runtime(runtime_settings)
    await rt.load("hf", TRANSFORMERS_NAME, "auto", backend="transformers")
    yield rt
    await rt.close()


async def test_greedy_reply_with_metrics(runtime: Runtime) -> None:
    parts, finished = [], None
    async for event in runtime.generate("hf", QUESTION, GenerationParams(max_new_tokens=24, temperature=0)):
        if isinstance(event, TokenChunk):
            parts.append(event.text)
        else:
            finished = event
    assert isinstance(finished, Finished)
    assert "Paris" in "".join(parts)
    assert finished.metrics.prompt_tokens == await runtime.count_tokens("hf", QUESTION)
    assert finished.metrics.completion_tokens > 0 and finished.metrics.tokens_per_s > 0
    info = await runtime.holding("hf")
    assert info is not None and (info.running_on, info.key.backend, info.context_length) == ("cpu", "transformers", 32768)


async def test_tokenizer_matches_llama_cpp(runtime: Runtime) -> None:
    """The derived checkpoint's tokenizer counts exactly what llama.cpp counts."""
    await runtime.load("gguf", GGUF_NAME, "cpu")
    try:
        for messages in (QUESTION, TRICKY):
            assert await runtime.count_tokens("hf", messages) == await runtime.count_tokens("gguf", messages)
    finally:
        await runtime.unload("gguf")


async def test_sampling_and_abort(runtime: Runtime) -> None:
    started = time.perf_counter()
    chunks = 0
    params = GenerationParams(max_new_tokens=300, temperature=0.8, top_p=0.9)
    async with contextlib.aclosing(runtime.generate("hf", QUESTION, params)) as events:
        async for event in events:
            chunks += isinstance(event, TokenChunk)
            if chunks == 2:
                break
    n = await runtime.count_tokens("hf", QUESTION)  # the worker is free again
    assert n > 0
    assert time.perf_counter() - started < 20  # 300 tokens would take about 40 s here


async def test_gpu_without_cuda_is_a_clear_error(runtime: Runtime) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(DeviceUnavailable, match="CUDA"):
        await runtime.load("gpu-user", TRANSFORMERS_NAME, "gpu", backend="transformers")
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before
