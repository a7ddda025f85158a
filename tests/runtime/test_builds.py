"""The progress file of the derived-model builder, as the API reads it, and what discovery hides meanwhile."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from runtime import discovery
from runtime.builds import BUILD_FILE, BuildRecorder, BuildState, read_builds
from runtime.default_model import builder_lock
from runtime.settings import PROJECT_ROOT


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


@pytest.fixture
def gone_pid() -> tuple[int, float]:
    """The pid and start time of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(process.pid).create_time()
    process.wait()
    return process.pid, started


@pytest.fixture
def other_builder(models: Path) -> Iterator[subprocess.Popen[str]]:
    """A second process holding the build lock until its stdin closes."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from runtime.default_model import builder_lock\n"
        "with builder_lock(Path(sys.argv[1]), print):\n"
        "    print('holding', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(models)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "holding"
    yield process
    process.kill()
    process.wait()


def _write_record(models: Path, pid: int, pid_started_at: float, builds: list[dict[str, object]]) -> None:
    record = {"pid": pid, "pid_started_at": pid_started_at, "builds": builds}
    (models / BUILD_FILE).write_text(json.dumps(record), encoding="utf-8")


def _entry(
    name: str, state: str, started_at: float | None = None, finished_at: float | None = None
) -> dict[str, object]:
    return {
        "name": name,
        "state": state,
        "step": "a step",
        "started_at": started_at,
        "finished_at": finished_at,
        "error": None,
    }


def test_missing_file_means_no_builds(models: Path, tmp_path: Path) -> None:
    assert read_builds(models) == []
    assert read_builds(tmp_path / "no-such-folder") == []


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"[1, 2]", b'{"pid": 1}', b'{"builds": "nope"}', b"\xff\xfe not utf-8"],
    ids=["empty", "truncated", "a-list", "no-builds", "builds-not-a-list", "not-utf-8"],
)
def test_corrupt_file_means_no_builds(models: Path, content: bytes) -> None:
    (models / BUILD_FILE).write_bytes(content)
    assert read_builds(models) == []


def test_malformed_entries_are_skipped(models: Path) -> None:
    bad: list[object] = ["text", {"name": 3, "state": "ready"}, {"name": "x", "state": "exploded"}]
    _write_record(models, 0, 0.0, [*bad, _entry("good", "ready", 10.0, 25.0)])  # type: ignore[list-item]
    assert read_builds(models) == [BuildState("good", "ready", "a step", 10.0, 15.0, None)]


def test_a_live_builder_reports_its_progress(models: Path) -> None:
    recorder = BuildRecorder(models, ["first", "second"])
    recorder.building("first", "dequantising the GGUF")
    time.sleep(0.05)

    first, second = read_builds(models)
    assert (first.name, first.state, first.step, first.error) == (
        "first",
        "building",
        "dequantising the GGUF",
        None,
    )
    assert first.started_at is not None and abs(first.started_at - time.time()) < 5
    assert first.elapsed_s is not None and first.elapsed_s >= 0
    assert (second.name, second.state, second.started_at, second.elapsed_s) == (
        "second",
        "queued",
        None,
        None,
    )

    recorder.ready("first")
    recorder.failed("second", "RuntimeError: out of memory")
    first, second = read_builds(models)
    assert (first.state, first.step) == ("ready", "done")
    assert (second.state, second.error) == ("failed", "RuntimeError: out of memory")
    assert [p.name for p in models.iterdir()] == [BUILD_FILE]  # no temporary file left behind


def test_a_dead_builder_leaves_nothing_building(models: Path, gone_pid: tuple[int, float]) -> None:
    now = time.time()
    _write_record(
        models,
        *gone_pid,
        [
            _entry("done", "ready", now - 60, now - 30),
            _entry("midway", "building", now - 30),
            _entry("waiting", "queued"),
        ],
    )
    done, midway, waiting = read_builds(models)
    assert (done.state, done.elapsed_s, done.error) == ("ready", 30.0, None)
    assert midway.state == "failed" and midway.error is not None and "interrupted" in midway.error
    assert (midway.started_at, midway.elapsed_s) == (now - 30, None)
    assert waiting.state == "failed" and waiting.error is not None and "interrupted" in waiting.error


def test_a_reused_pid_is_not_the_builder(models: Path) -> None:
    """A live process that started at another time than the recorded builder is someone else."""
    me = psutil.Process()
    _write_record(models, me.pid, me.create_time() - 3600, [_entry("midway", "building", time.time())])
    (midway,) = read_builds(models)
    assert midway.state == "failed"


def test_a_second_builder_waits_for_the_first(models: Path, other_builder: subprocess.Popen[str]) -> None:
    said: list[str] = []

    def finish_the_first(message: str) -> None:
        said.append(message)
        assert other_builder.stdin is not None
        other_builder.stdin.close()  # the first builder finishes only once this one waits

    with builder_lock(models, finish_the_first):
        assert other_builder.wait(timeout=10) == 0
    assert len(said) == 1 and f"pid {other_builder.pid}" in said[0] and "waiting" in said[0]


def test_the_builder_lock_is_free_once_released(models: Path) -> None:
    said: list[str] = []
    with builder_lock(models, said.append):
        pass
    with builder_lock(models, said.append):
        pass
    assert said == []


def test_builds_module_imports_no_ml_library() -> None:
    code = "import sys, runtime.builds\nprint(sorted(m for m in ('torch', 'transformers', 'optimum') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    assert result.stdout.strip() == "[]"


def test_models_being_written_are_not_listed(models: Path) -> None:
    for name in ("ready-model", "ready-model-onnx.partial", "half.partial"):
        folder = models / name
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"\0" * 8)
    (models / "ready-model-onnx.partial" / "model.onnx").write_bytes(b"\0" * 8)
    (models / "assembling.gguf.partial").write_bytes(b"GGUF")
    (models / BUILD_FILE).write_text("{}")

    assert [m.name for m in discovery.scan(models)] == ["ready-model"]
