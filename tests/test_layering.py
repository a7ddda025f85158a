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
