"""Export a Transformers model folder to ONNX with Optimum, optionally quantised to int8.

    python -m runtime.onnx_export gemma-3-270m [--int8] [--models-dir DIR]

Writes ``<name>-onnx/`` (fp32 ``model.onnx`` + config + tokenizer) beside the model and,
with ``--int8``, ``<name>-onnx-int8/`` (dynamic int8 quantisation by Optimum's ONNX Runtime
quantizer). Two steps beyond Optimum's defaults, both for chat generation:

* the output layer runs on the last position only. Optimum's export computes logits for
  every prompt position, which for a 262k-word vocabulary costs a full vocabulary matmul
  per prompt token and 1 MB of memory per token (2 GB for a 2000-token chat history);
  generation reads only the last row.
* int8 quantises the weights (MatMul with a constant weight, and the embedding Gather);
  attention's activation-by-activation MatMuls stay fp32, which is faster on CPU and
  keeps the scores exact.

Every folder is written under a temporary name first (``<name>.partial``, which discovery
skips), so an interrupted export never looks like a model. A folder made by an older
recipe is rebuilt; a current one is kept. The libraries' warnings that are known to be
false or expected for this export are silenced while it runs (:func:`quiet_conversion`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from runtime import discovery
from runtime.errors import ModelRuntimeError
from runtime.settings import RuntimeSettings

FP32_SUFFIX = "-onnx"
INT8_SUFFIX = "-onnx-int8"
RECIPE = 2  # bump when the steps below change, so set-up rebuilds older exports
RECIPE_FILE = "llmchat_export.json"
# Element-wise steps that may sit between the output layer and `logits` (e.g. soft-capping).
_SHAPE_KEEPING = {"Mul", "Div", "Add", "Sub", "Tanh", "Cast", "Identity"}
_SIDECAR_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "tokenizer.model")


# Library log records that are false or expected while converting the default model, by
# logger; each pattern is matched at the start of the message.
_QUIET_RECORDS = {
    # transformers 4.57.3+ takes every local tokenizer saved by a 4.57.x as a Mistral one
    # (its version check only exempts <= 4.57.2), so loading Gemma's warns about a regex
    # that Gemma's tokenizer does not have.
    "transformers.tokenization_utils_base": re.compile(r"The tokenizer you are loading from .* incorrect regex"),
    # Optimum passes the old keyword to transformers itself.
    "transformers.configuration_utils": re.compile(r"`torch_dtype` is deprecated"),
    # Gemma ties the output layer to the embedding; the export stores both (known, and
    # keep_last_logits relies on the output layer being its own MatMul). The indented
    # records are that warning's continuation lines.
    "optimum": re.compile(r"Found different candidate ONNX initializers|\t\S+: \{"),
}
# Python warnings raised while torch traces the model for the ONNX export: tracing always
# turns shape checks into constants, and the exported graph's indices are never negative
# (the ONNX tests compare its output with torch's).
_QUIET_WARNINGS = ("Exporting aten::index operator of advanced indexing",)


class _DropKnownRecords(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self._pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not self._pattern.match(record.getMessage())


@contextlib.contextmanager
def quiet_conversion() -> Iterator[None]:
    """Silence, while converting, the library warnings that are known to be false or expected.

    Only the messages named in this module are dropped, and never an error: anything new
    or real still shows.
    """
    from torch.jit import TracerWarning  # type: ignore[attr-defined]  # public, not in __all__

    filters = {name: _DropKnownRecords(pattern) for name, pattern in _QUIET_RECORDS.items()}
    for name, record_filter in filters.items():
        logging.getLogger(name).addFilter(record_filter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=TracerWarning)
            for message in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=re.escape(message))
            yield
    finally:
        for name, record_filter in filters.items():
            logging.getLogger(name).removeFilter(record_filter)


def _say(message: str) -> None:
    print(f"[onnx] {message}", flush=True)


def export_fp32(source: Path, target: Path, progress: Callable[[str], None] | None = None) -> Path:
    """ONNX export of ``source`` into ``target`` (kept when present and current).

    ``progress`` is told each step as it starts.
    """
    if _is_current(target):
        _say(f"{target.name}/ present")
        return target
    step = progress or (lambda _: None)
    _say(f"exporting {source.name} to {target.name}/ (about 2-4 minutes on 2 cores)")
    started = time.perf_counter()
    step("loading the libraries")
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    partial = _fresh_partial(target)
    with quiet_conversion():
        step("tracing the model into an ONNX graph")
        model = ORTModelForCausalLM.from_pretrained(str(source), export=True, use_cache=True)
        step("saving the graph")
        model.save_pretrained(partial)
        del model
        AutoTokenizer.from_pretrained(str(source), fix_mistral_regex=False).save_pretrained(partial)
    _copy_sidecars(source, partial)
    graph = discovery.onnx_file(partial)
    if graph is None:
        raise ModelRuntimeError(f"Optimum wrote no .onnx file into {partial}")
    step("computing the output layer on the last position only")
    trimmed = keep_last_logits(graph)
    if not trimmed:
        _say("no MatMul output layer found before 'logits'; it keeps Optimum's all-position logits")
    _finish(partial, target, {"variant": "fp32", "logits": "last position only" if trimmed else "every position"})
    _say(f"{target.name}/ written in {time.perf_counter() - started:.0f} s")
    return target


def quantize_int8(fp32: Path, target: Path, progress: Callable[[str], None] | None = None) -> Path:
    """Dynamic int8 quantisation of an fp32 export's weights (kept when present and current).

    ``progress`` is told each step as it starts.
    """
    if _is_current(target):
        _say(f"{target.name}/ present")
        return target
    graph = discovery.onnx_file(fp32)
    if graph is None:
        raise ModelRuntimeError(f"{fp32} holds no .onnx file to quantise")
    step = progress or (lambda _: None)
    _say(f"quantising {fp32.name}/ to int8 in {target.name}/ (about a minute)")
    started = time.perf_counter()
    step("loading the libraries")
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    partial = _fresh_partial(target)
    with quiet_conversion():
        step("quantising the weights to int8")
        quantizer = ORTQuantizer.from_pretrained(str(fp32), file_name=graph.name)
        config = AutoQuantizationConfig.avx2(
            is_static=False, per_channel=False, nodes_to_quantize=weight_nodes(graph)
        )
        quantizer.quantize(quantization_config=config, save_dir=partial, file_suffix="")
    _copy_sidecars(fp32, partial)
    _finish(partial, target, {"variant": "int8", "quantised": "weights, dynamic activations"})
    _say(f"{target.name}/ written in {time.perf_counter() - started:.0f} s")
    return target


def keep_last_logits(graph: Path) -> bool:
    """Rewrite ``graph`` so its output layer sees the last position only: ``logits`` becomes
    ``[batch, 1, vocab]``, which is all that generation (and Optimum's IO binding) reads.

    The output layer is the MatMul that ``logits`` comes from, possibly through element-wise
    steps such as Gemma 2's soft-capping. Returns False, leaving the graph as it is, when no
    such MatMul is found.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(graph), load_external_data=False)  # weights stay where they are
    producers = {output: node for node in model.graph.node for output in node.output}
    head = producers.get("logits")
    while head is not None and head.op_type in _SHAPE_KEEPING:
        computed = [producers[name] for name in head.input if name in producers]
        head = next((node for node in computed if node.op_type != "Constant"), None)
    if head is None or head.op_type != "MatMul":
        return False
    constants = {
        "/lm_head/last_position_starts": -1,
        "/lm_head/last_position_ends": np.iinfo(np.int64).max,
        "/lm_head/last_position_axes": -2,
    }
    model.graph.initializer.extend(numpy_helper.from_array(np.array([v], np.int64), k) for k, v in constants.items())
    last = "/lm_head/last_position_output_0"
    trim = helper.make_node("Slice", [head.input[0], *constants], [last], name="/lm_head/last_position")
    model.graph.node.insert(list(model.graph.node).index(head), trim)
    head.input[0] = last
    dim = next(o for o in model.graph.output if o.name == "logits").type.tensor_type.shape.dim[-2]
    dim.Clear()
    dim.dim_value = 1
    onnx.save(model, str(graph))
    return True


def weight_nodes(graph: Path) -> list[str]:
    """Names of the nodes that multiply by or look up a stored weight."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    weights = {tensor.name for tensor in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if (node.op_type == "MatMul" and node.input[1] in weights)
        or (node.op_type == "Gather" and node.input[0] in weights)
    ]


def is_current(folder: Path) -> bool:
    """Whether ``folder`` holds an export made by the current recipe (nothing to rebuild)."""
    try:
        recipe = json.loads((folder / RECIPE_FILE).read_text(encoding="utf-8")).get("recipe")
    except (OSError, ValueError, AttributeError):
        recipe = None
    return recipe == RECIPE and discovery.onnx_file(folder) is not None


def _is_current(folder: Path) -> bool:
    if is_current(folder):
        return True
    if folder.exists():
        _say(f"{folder.name}/ was made by an older export recipe; rebuilding it")
    return False


def _fresh_partial(target: Path) -> Path:
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    return partial


def _finish(partial: Path, target: Path, details: dict[str, str]) -> None:
    record = {"recipe": RECIPE, **details}
    (partial / RECIPE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)


def _copy_sidecars(source: Path, target: Path) -> None:
    for name in _SIDECAR_FILES:
        if (source / name).is_file() and not (target / name).exists():
            shutil.copy2(source / name, target / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="name of a Transformers model folder in the models folder")
    parser.add_argument("--int8", action="store_true", help="also write a dynamically quantised int8 copy")
    parser.add_argument("--models-dir", type=Path, default=RuntimeSettings().models_dir)
    args = parser.parse_args(argv)
    try:
        info = discovery.resolve(args.models_dir, args.model)
    except ModelRuntimeError as exc:
        parser.error(str(exc))
    if info.backend != "transformers":
        parser.error(f"{args.model} is a {info.backend} model; export needs a Transformers folder")
    fp32 = export_fp32(info.path, args.models_dir / f"{info.name}{FP32_SUFFIX}")
    if args.int8:
        quantize_int8(fp32, args.models_dir / f"{info.name}{INT8_SUFFIX}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
