"""Model discovery and the refusal of names that escape the models folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf import GGUFWriter

from runtime import discovery
from runtime.default_model import GGUF_NAME, TRANSFORMERS_NAME
from runtime.errors import InvalidModelName, ModelNotFound, to_wire, without_paths


def _write_gguf(path: Path, context_length: int) -> None:
    writer = GGUFWriter(str(path), "llama")
    writer.add_context_length(context_length)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    _write_gguf(models / "tiny.gguf", 4096)
    (models / "in-folder").mkdir()
    _write_gguf(models / "in-folder" / "weights-q8.gguf", 2048)
    hf = models / "hf-model"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    (hf / "model.safetensors").write_bytes(b"\0" * 100)
    onnx = models / "onnx-model"
    onnx.mkdir()
    (onnx / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 512}}))
    (onnx / "model.onnx").write_bytes(b"\0" * 10)
    (models / "notes.txt").write_text("not a model")
    (models / "empty-folder").mkdir()
    return models


def test_each_kind_is_found_with_backend_and_context(folder: Path) -> None:
    found = {m.name: m for m in discovery.scan(folder)}
    assert set(found) == {"tiny.gguf", "in-folder", "hf-model", "onnx-model"}
    assert (found["tiny.gguf"].backend, found["tiny.gguf"].context_length) == ("llama.cpp", 4096)
    assert found["in-folder"].backend == "llama.cpp"
    assert found["in-folder"].path.name == "weights-q8.gguf"
    assert found["in-folder"].context_length == 2048
    assert (found["hf-model"].backend, found["hf-model"].context_length) == ("transformers", 1024)
    assert (found["onnx-model"].backend, found["onnx-model"].context_length) == ("onnx", 512)
    assert found["hf-model"].size_bytes >= 100


@pytest.mark.parametrize(
    "name", ["../secret.gguf", "/etc/passwd", "in-folder/weights-q8.gguf", "..", ".", "", " tiny.gguf", "a\x00b"]
)
def test_names_that_could_escape_are_refused(folder: Path, name: str) -> None:
    with pytest.raises(InvalidModelName):
        discovery.resolve(folder, name)


def test_symlink_leading_outside_is_refused(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.gguf"
    _write_gguf(outside, 128)
    (folder / "sneaky.gguf").symlink_to(outside)
    with pytest.raises(InvalidModelName):
        discovery.resolve(folder, "sneaky.gguf")
    assert "sneaky.gguf" not in {m.name for m in discovery.scan(folder)}


def test_symlink_inside_the_folder_is_allowed(folder: Path) -> None:
    (folder / "alias.gguf").symlink_to(folder / "tiny.gguf")
    assert discovery.resolve(folder, "alias.gguf").backend == "llama.cpp"


@pytest.mark.parametrize("name", ["missing.gguf", "notes.txt", "empty-folder"])
def test_unknown_or_unusable_entries_are_not_found(folder: Path, name: str) -> None:
    with pytest.raises(ModelNotFound):
        discovery.resolve(folder, name)


def test_missing_models_folder_lists_nothing(tmp_path: Path) -> None:
    assert discovery.scan(tmp_path / "nope") == []


def test_default_models_are_discovered(models_dir: Path) -> None:
    found = {m.name: m for m in discovery.scan(models_dir)}
    assert found[GGUF_NAME].backend == "llama.cpp"
    assert found[GGUF_NAME].context_length == 32768
    assert found[TRANSFORMERS_NAME].backend == "transformers"
    assert found[TRANSFORMERS_NAME].context_length == 32768


def test_errors_from_workers_name_no_server_folder() -> None:
    assert without_paths("Failed to load model from file: /srv/llm/models/bad.gguf") == (
        "Failed to load model from file: bad.gguf")
    assert without_paths("No such file: '/work/models/x/config.json'") == "No such file: 'config.json'"
    assert without_paths("1/2 of a/b at http://host/x") == "1/2 of a/b at http://host/x"
    assert to_wire(OSError("/a/b/c.gguf is truncated")) == ("GenerationFailed", "OSError: c.gguf is truncated")
