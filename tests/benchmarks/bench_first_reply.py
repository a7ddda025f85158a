"""A new user's first reply: ``deploy/local.sh run`` on a fresh clone, to the first streamed token.

    python -m tests.benchmarks.bench_first_reply [--keep]

Clones this checkout's HEAD into a temporary folder and runs the README's run command there
(under ``script``, a pseudo-terminal, as a user sees it), on free ports. It measures, in one
run, when the API answers, when the first token of a streamed reply arrives, and when the
background build has made every derived model ready: the moment ``run`` used to wait for
before serving, which is the reference. Then it sends Ctrl-C (SIGINT to honcho's process
group) and checks that nothing is left running. pip's wheel cache is what the machine has:
on a machine that never built llama-cpp-python, its compile comes first.
Goal (issue 10): first streamed reply under 8 minutes on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from runtime.default_model import GGUF_NAME
from runtime.settings import PROJECT_ROOT
from tests.servers import free_port

DERIVED = ("gemma-3-270m", "gemma-3-270m-onnx", "gemma-3-270m-onnx-int8")


def _admin_password(terminal: Path) -> str:
    """The password the first start printed for ``admin``, as a new user reads it on the terminal."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"administrator account 'admin' with the password (\S+)",
                          terminal.read_text(errors="replace") if terminal.exists() else "")
        if found:
            return found.group(1)
        time.sleep(0.25)
    raise RuntimeError(f"no administrator password in {terminal}")


def _first_token(api: str, password: str) -> float:
    """Sign in, load the GGUF, stream one reply; seconds until its first token (from the request)."""
    with httpx.Client(base_url=api, timeout=600) as http:
        http.post("/auth/login", json={"username": "admin", "password": password}).raise_for_status()
        http.post("/load", json={"chat_id": "first", "model": GGUF_NAME}).raise_for_status()
        started = time.monotonic()
        body = {"chat_id": "first", "message": "What is the capital of France?", "stream": True}
        with http.stream("POST", "/chat", json=body) as response:
            for line in response.iter_lines():
                if line == "event: token":
                    return time.monotonic() - started
    raise RuntimeError("the reply had no token")


def _stop(session: int) -> list[str]:
    """Ctrl-C as a terminal sends it; the processes of the session still alive 30 s later."""
    try:
        procs = psutil.Process(session).children(recursive=True)
    except psutil.Error:
        procs = []
    honcho = next((p for p in procs if "honcho" in " ".join(p.cmdline())), None)
    if honcho is not None:
        os.killpg(os.getpgid(honcho.pid), signal.SIGINT)
    deadline = time.monotonic() + 30
    left: list[str] = []
    while time.monotonic() < deadline:
        left = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getsid(p.pid) == session and p.pid != session:
                    left.append(" ".join(p.info["cmdline"] or [])[:80])
            except (ProcessLookupError, PermissionError):
                continue
        if not left:
            break
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGKILL)  # whatever is left, so the benchmark leaves nothing
    return left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the clone (with its venv and models)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="llmchat-first-reply-"))
    checkout = home / "llmchat"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(checkout)], check=True)
    api_port, ui_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = {**os.environ, "LLMCHAT_PORT": str(api_port), "LLMCHAT_UI_PORT": str(ui_port)}
    env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    run = subprocess.Popen(
        ["script", "-qfec", "./deploy/local.sh run", str(home / "terminal.log")], cwd=checkout, env=env,
        start_new_session=True, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    marks: dict[str, float] = {}
    try:
        while "serving" not in marks:
            if run.poll() is not None:
                raise RuntimeError(f"run ended with code {run.returncode}; see {home / 'terminal.log'}")
            try:
                httpx.get(api + "/openapi.json", timeout=2).raise_for_status()
                marks["serving"] = time.monotonic() - started
            except httpx.HTTPError:
                time.sleep(0.25)
        ttft = _first_token(api, _admin_password(home / "terminal.log"))
        marks["first streamed token"] = time.monotonic() - started
        login = httpx.post(api + "/auth/login", json={"username": "admin", "password": _admin_password(home / "terminal.log")})
        headers = {"Authorization": f"Bearer {login.cookies['llmchat_session']}"}
        while len(marks) < 3:
            names = {m["name"] for m in httpx.get(api + "/models", timeout=30, headers=headers).json()["models"]}
            if set(DERIVED) <= names:
                marks["every derived model ready"] = time.monotonic() - started
            elif time.monotonic() - started > 1800:
                raise RuntimeError("the background build did not finish within 30 minutes")
            time.sleep(2)
    finally:
        left = _stop(run.pid)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    ratio = marks["first streamed token"] / marks["every derived model ready"]
    print(json.dumps({k: round(v, 1) for k, v in marks.items()} | {"first token after the request s": round(ttft, 2)}))
    print("| fresh clone, warm pip cache | API serving | first streamed token | every derived model ready "
          "(when `run` used to start serving) | ratio | left after Ctrl-C |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {time.strftime('%Y-%m-%d')} | {marks['serving']:.0f} s | {marks['first streamed token']:.0f} s | "
          f"{marks['every derived model ready']:.0f} s | {ratio:.2f} | {left or 'nothing'} |")


if __name__ == "__main__":
    main()
