"""The export recipe's graph rewrites, on small graphs built here and run with ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from runtime import onnx_export

HIDDEN, VOCAB = 4, 10


def _graph(path: Path, *, soft_cap: bool) -> None:
    """hidden [batch, seq, 4] -> MatMul -> (Gemma 2 style soft-capping) -> logits [batch, seq, 10]."""
    weights = np.random.default_rng(0).normal(size=(HIDDEN, VOCAB)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["hidden", "lm_head.weight"], ["raw" if soft_cap else "logits"])]
    initializers = [numpy_helper.from_array(weights, "lm_head.weight")]
    if soft_cap:
        initializers.append(numpy_helper.from_array(np.array(3.0, np.float32), "cap"))
        nodes += [
            helper.make_node("Div", ["raw", "cap"], ["scaled"]),
            helper.make_node("Tanh", ["scaled"], ["squashed"]),
            helper.make_node("Mul", ["cap", "squashed"], ["logits"]),
        ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch_size", "sequence_length", HIDDEN])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", VOCAB])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _run(path: Path, hidden: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"hidden": hidden})[0]


def test_output_layer_is_trimmed_to_the_last_position(tmp_path: Path) -> None:
    hidden = np.random.default_rng(1).normal(size=(2, 5, HIDDEN)).astype(np.float32)
    for soft_cap in (False, True):
        path = tmp_path / f"cap-{soft_cap}.onnx"
        _graph(path, soft_cap=soft_cap)
        every = _run(path, hidden)
        assert onnx_export.keep_last_logits(path)
        last = _run(path, hidden)
        assert last.shape == (2, 1, VOCAB)
        np.testing.assert_allclose(last, every[:, -1:, :], rtol=1e-6)
        declared = onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in declared] == ["batch_size", 1, VOCAB]


def test_graph_without_a_matmul_output_layer_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "identity.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["hidden"], ["logits"])],
        "no-head",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch_size", "sequence_length", VOCAB])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", VOCAB])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    before = path.read_bytes()
    assert not onnx_export.keep_last_logits(path)
    assert path.read_bytes() == before


def test_exports_from_an_older_recipe_are_rebuilt(tmp_path: Path) -> None:
    folder = tmp_path / "m-onnx"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"graph")
    assert not onnx_export._is_current(folder)  # no recipe: made before recipes existed
    (folder / onnx_export.RECIPE_FILE).write_text(json.dumps({"recipe": onnx_export.RECIPE - 1}))
    assert not onnx_export._is_current(folder)
    (folder / onnx_export.RECIPE_FILE).write_text(json.dumps({"recipe": onnx_export.RECIPE}))
    assert onnx_export._is_current(folder)
    (folder / "model.onnx").unlink()
    assert not onnx_export._is_current(folder)
