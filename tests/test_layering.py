"""The API, the UI and the parent side of the runtime never import an ML library."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "llama_cpp", "optimum", "onnxruntime")


def test_parent_side_modules_import_no_ml_library() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import api, ui\n"
        "for pkg in (api, ui):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "import runtime.manager, runtime.interface, runtime.fake, runtime.cli\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_embedded_default_imports_nothing_of_ray_or_postgresql() -> None:
    """``run`` on one machine needs no server: Ray and asyncpg load only when configured."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import api, ui\n"
        "for pkg in (api, ui):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "import runtime.manager\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'asyncpg'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_ray_runtime_side_imports_no_ml_library() -> None:
    """The coordinator and the replica's side of the Ray runtime stay light: ML libraries load in
    the worker actor, through runtime.backends.create, only."""
    code = (
        "import sys\n"
        "import runtime.ray_runtime, runtime.ray_coordinator, runtime.ray_worker, runtime.ray_probe\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
