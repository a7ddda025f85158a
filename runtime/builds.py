"""Progress of the models that set-up derives from the default GGUF, as a file anyone can read.

``deploy/local.sh run`` starts serving as soon as the GGUF is in place and derives the
Transformers checkpoint and the ONNX exports in a background process
(``python -m runtime.default_model --background``). That builder, and the foreground
build of ``setup``/``test``, record each derived model's state in
``<models_dir>/.llmchat-build.json`` (a dot file, so discovery never takes it for a model).
:func:`read_builds` turns it into :class:`BuildState` values for the API and UI.

The file names the builder's pid and its start time. A builder that is gone (Ctrl-C on
``run``, a crash, ``kill -9``) cannot update the file any more, so :func:`read_builds`
reports whatever it left ``queued`` or ``building`` as ``failed`` ("interrupted"); a pid
the OS has since given to another process counts as gone.

This module imports no ML library: the API reads it on every model listing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

BUILD_FILE = ".llmchat-build.json"
"""Name of the progress file inside the models folder."""

BuildStatus = Literal["queued", "building", "ready", "failed"]
_STATUSES: tuple[BuildStatus, ...] = ("queued", "building", "ready", "failed")
_UNFINISHED = ("queued", "building")
_PID_TIME_TOLERANCE_S = 0.5  # psutil's start times of one process agree far closer than this


@dataclass(frozen=True, slots=True)
class BuildState:
    """One derived model's build, as last recorded.

    ``step`` says what the build is doing (or did last, or is waiting for). ``elapsed_s``
    is the time since ``started_at`` while building, the build's duration once ready or
    failed, and None while queued or when the builder vanished. ``started_at`` is a Unix time.
    """

    name: str
    state: BuildStatus
    step: str
    started_at: float | None
    elapsed_s: float | None
    error: str | None


def read_builds(models_dir: Path) -> list[BuildState]:
    """The recorded builds in ``models_dir``, in build order; ``[]`` without a readable file.

    Entries that a builder no longer alive left unfinished come back as ``failed``.
    """
    try:
        record = json.loads((models_dir / BUILD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict) or not isinstance(record.get("builds"), list):
        return []
    alive = _builder_alive(record.get("pid"), record.get("pid_started_at"))
    now = time.time()
    states = []
    for entry in record["builds"]:
        state = _parse(entry, now)
        if state is None:
            continue
        if state.state in _UNFINISHED and not alive:
            state = BuildState(
                state.name,
                "failed",
                state.step,
                state.started_at,
                None,  # when it stopped is not recorded
                f"interrupted: the builder (pid {record.get('pid')}) stopped before finishing",
            )
        states.append(state)
    return states


class BuildRecorder:
    """Writes the progress file for one builder process (this one).

    Every change rewrites the whole file under a temporary dot name and renames it, so a
    reader never sees half of it.
    """

    def __init__(self, models_dir: Path, names: Iterable[str]) -> None:
        self._path = models_dir / BUILD_FILE
        self._pid = os.getpid()
        self._pid_started_at = psutil.Process(self._pid).create_time()
        self._builds: dict[str, dict[str, Any]] = {
            name: {
                "name": name,
                "state": "queued",
                "step": "waiting",
                "started_at": None,
                "finished_at": None,
                "error": None,
            }
            for name in names
        }
        self._save()

    def building(self, name: str, step: str) -> None:
        """``name`` starts, or moves on to ``step``."""
        build = self._builds[name]
        if build["state"] != "building":
            build.update(state="building", started_at=time.time(), finished_at=None, error=None)
        build["step"] = step
        self._save()

    def ready(self, name: str, step: str = "done") -> None:
        """``name`` is written and usable (``step`` may say it was already there)."""
        self._finish(name, "ready", step, None)

    def failed(self, name: str, error: str) -> None:
        """``name`` could not be built; ``error`` says why."""
        self._finish(name, "failed", self._builds[name]["step"], error)

    def _finish(self, name: str, state: BuildStatus, step: str, error: str | None) -> None:
        build = self._builds[name]
        build.update(state=state, step=step, finished_at=time.time(), error=error)
        self._save()

    def _save(self) -> None:
        record = {
            "pid": self._pid,
            "pid_started_at": self._pid_started_at,
            "builds": list(self._builds.values()),
        }
        partial = self._path.with_name(f"{BUILD_FILE}.{self._pid}.tmp")
        with contextlib.suppress(OSError):  # progress is informative; never fail a build over it
            partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
            partial.replace(self._path)


def _builder_alive(pid: object, started_at: object) -> bool:
    if not isinstance(pid, int) or not isinstance(started_at, (int, float)):
        return False
    try:
        started: float = psutil.Process(pid).create_time()
    except psutil.Error:
        return False
    return abs(started - started_at) < _PID_TIME_TOLERANCE_S


def _parse(entry: object, now: float) -> BuildState | None:
    if not isinstance(entry, dict):
        return None
    name, state = entry.get("name"), entry.get("state")
    if not isinstance(name, str) or state not in _STATUSES:
        return None
    step, error = entry.get("step"), entry.get("error")
    started = _number(entry.get("started_at"))
    finished = _number(entry.get("finished_at"))
    if started is None or state == "queued":
        elapsed = None
    else:
        elapsed = round(
            max(0.0, (finished if finished is not None and state != "building" else now) - started), 1
        )
    return BuildState(
        name,
        state,
        step if isinstance(step, str) else "",
        started if state != "queued" else None,
        elapsed,
        error if isinstance(error, str) else None,
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


__all__ = ["BUILD_FILE", "BuildRecorder", "BuildState", "BuildStatus", "read_builds"]
