"""Export a Transformers model folder to ONNX with Optimum, optionally quantised to int8.

    python -m runtime.onnx_export gemma-3-270m [--int8] [--models-dir DIR]

Writes ``<name>-onnx/`` (fp32 ``model.onnx`` + config + tokenizer) beside the model and,
with ``--int8``, ``<name>-onnx-int8/`` (dynamic int8 quantisation by Optimum's ONNX Runtime
quantizer). Existing outputs are kept; every folder is written under a temporary name
first, so an interrupted export never looks like a model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from runtime import discovery
from runtime.errors import ModelRuntimeError
from runtime.settings import RuntimeSettings

FP32_SUFFIX = "-onnx"
INT8_SUFFIX = "-onnx-int8"
_SIDECAR_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "tokenizer.model")


def _say(message: str) -> None:
    print(f"[onnx] {message}", flush=True)


def export_fp32(source: Path, target: Path) -> Path:
    """ONNX export of ``source`` into ``target`` (skipped when it exists)."""
    if (target / "model.onnx").is_file():
        _say(f"{target.name}/ present")
        return target
    _say(f"exporting {source.name} to {target.name}/ (about 2-4 minutes on 2 cores)")
    started = time.perf_counter()
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model = ORTModelForCausalLM.from_pretrained(str(source), export=True, use_cache=True)
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(str(source), fix_mistral_regex=False).save_pretrained(partial)
    _copy_sidecars(source, partial)
    partial.replace(target)
    _say(f"{target.name}/ written in {time.perf_counter() - started:.0f} s")
    return target


def quantize_int8(fp32: Path, target: Path) -> Path:
    """Dynamic int8 quantisation of an fp32 export (skipped when it exists)."""
    if discovery.onnx_file(target) is not None and (target / "config.json").is_file():
        _say(f"{target.name}/ present")
        return target
    _say(f"quantising {fp32.name}/ to int8 in {target.name}/")
    started = time.perf_counter()
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    quantizer = ORTQuantizer.from_pretrained(str(fp32), file_name="model.onnx")
    config = AutoQuantizationConfig.avx2(is_static=False, per_channel=False)
    quantizer.quantize(quantization_config=config, save_dir=partial, file_suffix="")
    _copy_sidecars(fp32, partial)
    partial.replace(target)
    _say(f"{target.name}/ written in {time.perf_counter() - started:.0f} s")
    return target


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
