"""llama.cpp's own ``llama-server``, built once, as a reference for benchmarks.

    python -m tests.benchmarks.llama_server    # prints the binary's path, building it first if absent

The binary comes from the ``vendor/llama.cpp`` folder of the llama-cpp-python source
distribution whose version is the installed one, so both sides of a comparison run the
same llama.cpp. pip downloads that sdist; cmake builds only the ``llama-server`` target,
linked statically (it needs no library from the build tree), about 5 minutes on 2 cores.
The result is kept in ``~/.cache/llmchat/llama-server/<version>/`` (``$XDG_CACHE_HOME``
is honoured); a lock there makes a second caller wait for a build under way.

The build follows the installed package's, so both sides run the same kernels: CUDA when
it offloads to a GPU, no llamafile sgemm when it has none (``deploy/local.sh`` builds it
with ``-DGGML_LLAMAFILE=OFF``), plus ``$CMAKE_ARGS``. It never compiles Intel AMX in:
llama-server would use its matmul by default, and that crashes with SIGSEGV on some CPUs,
this project's Xeon included (llama.cpp issue 20824). Builds with such extra flags are kept
in ``<version>-<hash of the flags>/``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

from tests.servers import free_port

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmchat" / "llama-server"
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained file to cache
)
NO_AMX = ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")  # explicit -mno-* win over -march=native


def installed_version() -> str:
    """The installed llama-cpp-python's version (imported here only: the caller may not need it)."""
    import llama_cpp

    return str(llama_cpp.__version__)


def matching_cmake_args() -> list[str]:
    """cmake flags beyond :data:`CMAKE_OPTIONS`: the installed llama.cpp's choices, and no AMX."""
    import llama_cpp

    extra = shlex.split(os.environ.get("CMAKE_ARGS", ""))
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    if llama_cpp.llama_supports_gpu_offload() and not any("GGML_CUDA" in arg for arg in extra):
        extra.append("-DGGML_CUDA=on")
    if "LLAMAFILE = 1" not in info and not any("GGML_LLAMAFILE" in arg for arg in extra):
        extra.append("-DGGML_LLAMAFILE=OFF")
    if _compiler_enables_amx():
        flags = " ".join(NO_AMX)
        extra += [f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]
    return extra


def _compiler_enables_amx() -> bool:
    """Whether ``-march=native`` (llama.cpp's default, GGML_NATIVE) turns AMX on here."""
    command = [os.environ.get("CC", "cc"), "-march=native", "-dM", "-E", "-"]
    try:
        macros = subprocess.run(command, check=False, input="", capture_output=True, text=True)
    except OSError:
        return False
    return "__AMX_INT8__" in macros.stdout


def ensure_llama_server(version: str | None = None, cmake_args: list[str] | None = None, jobs: int = 2) -> Path:
    """The path of a cached ``llama-server`` built from llama-cpp-python ``version``'s sdist.

    Builds it when the cache has none: ``pip download`` of the sdist into a temporary
    folder, cmake configure and build there (with ``cmake_args``, by default
    :func:`matching_cmake_args`), then the binary is copied into the cache.
    """
    version = version or installed_version()
    extra = matching_cmake_args() if cmake_args is None else cmake_args
    tag = "-" + hashlib.sha256("\0".join(extra).encode()).hexdigest()[:8] if extra else ""
    folder = CACHE_DIR / f"{version}{tag}"
    target = folder / "llama-server"
    if _usable(target):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cmake-args.txt").write_text(shlex.join([*CMAKE_OPTIONS, *extra]) + "\n", encoding="utf-8")
    with open(folder / ".build.lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _usable(target):  # built by whoever held the lock before us
            return target
        with tempfile.TemporaryDirectory(prefix="llama-server-build-") as tmp:
            built = _build(version, Path(tmp), extra, jobs)
            partial = target.with_name(target.name + ".partial")
            shutil.copy2(built, partial)
            partial.replace(target)
    return target


def _usable(binary: Path) -> bool:
    return binary.is_file() and os.access(binary, os.X_OK)


def _build(version: str, workdir: Path, extra: list[str], jobs: int) -> Path:
    started = time.monotonic()
    _say(f"building llama-server from llama-cpp-python {version}'s sdist (about 5 minutes on 2 cores)"
         + (f" with {shlex.join(extra)}" if extra else ""))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
         "--dest", str(workdir), f"llama-cpp-python=={version}"],
        check=True,
    )
    sdist = next(workdir.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        archive.extractall(workdir, filter="data")
    source = workdir / sdist.name.removesuffix(".tar.gz") / "vendor" / "llama.cpp"
    build = source / "build"
    log = workdir / "build.log"
    with open(log, "w", encoding="utf-8") as out:
        for step in (
            ["cmake", "-S", str(source), "-B", str(build), *CMAKE_OPTIONS, *extra],
            ["cmake", "--build", str(build), "--target", "llama-server", f"-j{jobs}"],
        ):
            if subprocess.run(step, check=False, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise RuntimeError(f"{' '.join(step[:2])} failed:\n{tail}")
    binary = build / "bin" / "llama-server"
    _check_self_contained(binary, build)
    _say(f"built in {time.monotonic() - started:.0f} s")
    return binary


def _check_self_contained(binary: Path, build: Path) -> None:
    """The binary must not need a library that stays behind in the build tree."""
    linked = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    missing = [line.strip() for line in linked.splitlines() if "not found" in line or str(build) in line]
    if missing:
        raise RuntimeError(f"llama-server links libraries from its build tree: {missing}")


def _say(message: str) -> None:
    print(f"[llama-server] {message}", file=sys.stderr, flush=True)


class LlamaServer:
    """``llama-server`` on a free loopback port, its output in ``log``; ``start`` returns once it is ready."""

    def __init__(self, binary: Path, arguments: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [str(binary), *arguments, "--host", "127.0.0.1", "--port", str(self.port)]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120) -> None:
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with code {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:  # 503 while loading
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama-server did not start:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]

    def logged(self, marker: str) -> list[str]:
        """The lines of its output that contain ``marker``."""
        return [line.strip() for line in self.tail(10**7).splitlines() if marker in line]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    print(ensure_llama_server())
