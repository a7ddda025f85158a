"""The ONNX Runtime backend on the default model's Optimum export, through spawned workers."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import onnx
import psutil
import pytest

from runtime import onnx_export
from runtime.default_model import ONNX_INT8_NAME, ONNX_NAME, TRANSFORMERS_NAME
from runtime.errors import BackendUnavailable, ModelLoadFailed, ModelNotFound
from runtime.manager import Runtime
from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk
from runtime.settings import RuntimeSettings
from tests.runtime.streams import collect

QUESTION = [ChatMessage("user", "What is the capital of France?")]
ENDLESS = [ChatMessage("user", "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,")]
GREEDY_32 = GenerationParams(max_new_tokens=32, temperature=0)


@pytest.fixture(scope="module")
async def runtime(runtime_settings: RuntimeSettings, models_dir: Path) -> AsyncIterator[Runtime]:
    if not (models_dir / ONNX_NAME).is_dir():
        pytest.fail(f"{ONNX_NAME} is missing: run deploy/local.sh setup")
    rt = Runtime(runtime_settings)
    await rt.load("onnx", ONNX_NAME, "cpu")
    yield rt
    await rt.close()


async def _greedy(rt: Runtime, holder: str, messages: list[ChatMessage]) -> tuple[str, Finished]:
    return await collect(rt, holder, messages, GREEDY_32)


async def test_export_generates_and_matches_transformers(runtime: Runtime) -> None:
    info = await runtime.holding("onnx")
    assert info is not None and (info.key.backend, info.running_on) == ("onnx", "cpu")
    onnx_text, onnx_done = await _greedy(runtime, "onnx", ENDLESS)
    assert onnx_done.metrics.completion_tokens == 32 and onnx_done.metrics.tokens_per_s > 0
    await runtime.load("torch", TRANSFORMERS_NAME, "cpu", backend="transformers")
    try:
        torch_text, torch_done = await _greedy(runtime, "torch", ENDLESS)
        assert onnx_text == torch_text  # the first 32 greedy tokens are identical
        assert onnx_done.metrics.prompt_tokens == torch_done.metrics.prompt_tokens
        assert "Paris" in (await _greedy(runtime, "onnx", QUESTION))[0]
    finally:
        await runtime.unload("torch")


async def test_transformers_model_runs_from_its_export_on_cpu(runtime: Runtime) -> None:
    chosen = await runtime.load("auto-onnx", TRANSFORMERS_NAME, "cpu")
    assert chosen.key.backend == "onnx" and chosen.key.model == TRANSFORMERS_NAME
    explicit = await runtime.load("explicit", TRANSFORMERS_NAME, "cpu", backend="onnx")
    assert explicit.pid == chosen.pid
    await runtime.unload("auto-onnx")
    result = await runtime.unload("explicit")
    assert result is not None and result.exited


async def test_int8_export_loads_and_generates(runtime: Runtime) -> None:
    await runtime.load("int8", ONNX_INT8_NAME, "cpu")
    try:
        text, done = await _greedy(runtime, "int8", QUESTION)
        assert text and done.metrics.completion_tokens > 0
    finally:
        await runtime.unload("int8")


async def test_abort_and_unload(runtime: Runtime) -> None:
    started = time.perf_counter()
    chunks = 0
    params = GenerationParams(max_new_tokens=500, temperature=0)
    async with contextlib.aclosing(runtime.generate("onnx", ENDLESS, params)) as events:
        async for event in events:
            chunks += isinstance(event, TokenChunk)
            if chunks == 3:
                break
    assert await runtime.count_tokens("onnx", QUESTION) > 0
    assert time.perf_counter() - started < 15  # 500 tokens take far longer
    pid = (await runtime.holding("onnx")).pid  # type: ignore[union-attr]
    result = await runtime.unload("onnx")
    assert result is not None and result.exited and not psutil.pid_exists(pid)
    await runtime.load("onnx", ONNX_NAME, "cpu")


async def test_broken_or_missing_graph_is_a_clear_error(models_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    broken = folder / "broken-onnx"
    broken.mkdir(parents=True)
    shutil.copy(models_dir / ONNX_NAME / "config.json", broken / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(models_dir / ONNX_NAME / name, broken / name)
    (broken / "model.onnx").write_bytes(b"this is not an onnx graph")
    missing = folder / "missing-onnx"
    missing.mkdir()
    (missing / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    rt = Runtime(RuntimeSettings(models_dir=folder))
    try:
        with pytest.raises(ModelLoadFailed):
            await rt.load("x", "broken-onnx", "cpu")
        with pytest.raises(ModelNotFound):
            await rt.load("x", "missing-onnx", "cpu")
        (missing / "model.safetensors").write_bytes(b"")
        with pytest.raises(BackendUnavailable, match="onnx_export"):
            await rt.load("x", "missing-onnx", "cpu", backend="onnx")
    finally:
        await rt.close()


@pytest.mark.parametrize("name", [ONNX_NAME, ONNX_INT8_NAME])
def test_exports_compute_logits_for_the_last_position_only(models_dir: Path, name: str) -> None:
    graph = onnx.load(str(models_dir / name / "model.onnx"), load_external_data=False)
    logits = next(o for o in graph.graph.output if o.name == "logits").type.tensor_type.shape.dim
    assert logits[1].dim_value == 1
    trim = next(n for n in graph.graph.node if n.name == "/lm_head/last_position")
    assert trim.op_type == "Slice"
    recipe = json.loads((models_dir / name / onnx_export.RECIPE_FILE).read_text())
    assert recipe["recipe"] == onnx_export.RECIPE


def test_int8_quantises_weights_and_leaves_attention_scores_fp32(models_dir: Path) -> None:
    graph = onnx.load(str(models_dir / ONNX_INT8_NAME / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in graph.graph.node]
    layers = json.loads((models_dir / ONNX_INT8_NAME / "config.json").read_text())["num_hidden_layers"]
    # 7 projections per layer plus the output layer; Q.K and scores.V stay float MatMuls.
    assert ops.count("MatMulInteger") == 7 * layers + 1
    in_layers = [n for n in graph.graph.node if n.op_type == "MatMul" and "/layers." in n.name]
    assert len(in_layers) == 2 * layers
    assert any(n.op_type == "DequantizeLinear" and "embed_tokens" in n.input[0] for n in graph.graph.node)
