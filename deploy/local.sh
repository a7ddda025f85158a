#!/usr/bin/env bash
# One entry point for a fresh machine: sets everything up (idempotently), then runs.
#   deploy/local.sh run    - set up, then start the app (API + UI from the Procfile, via honcho)
#   deploy/local.sh test   - set up (with test tools), then run the test suite
#   deploy/local.sh chat   - set up, then chat with the default model in the terminal
#   deploy/local.sh setup  - set up only
# A second run reuses the virtual environment, the pip wheel cache and the models.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${LLMCHAT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

say() { printf '\n==> %s\n' "$*"; }

pick_python() {
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
    exit 1
}

ensure_venv() {
    if [ ! -x "$PY" ]; then
        say "creating virtual environment in $VENV"
        "$(pick_python)" -m venv "$VENV"
        "$PY" -m pip install --quiet --upgrade pip wheel setuptools
    fi
}

ensure_dependencies() {
    local extras="$1" stamp="$VENV/.llmchat-installed" want
    want="$(sha256sum pyproject.toml | cut -c1-16) $extras ${CMAKE_ARGS:-}"
    if [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
        return
    fi
    say "installing dependencies (.$extras)"
    if ! "$PY" -c 'import llama_cpp' 2>/dev/null; then
        echo "    llama-cpp-python compiles llama.cpp on first install: about 9 minutes on 2 cores."
        echo "    pip caches the built wheel, so later installs on this machine are quick."
    fi
    if [ "${LLMCHAT_CUDA:-0}" = "1" ]; then
        # GPU machines: llama.cpp built with CUDA, torch's CUDA wheel, ONNX Runtime's GPU build.
        export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_CUDA=on}"
        "$PY" -m pip install --progress-bar on --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36
        "$PY" -m pip install --progress-bar on torch==2.13.0 --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}"
    fi
    "$PY" -m pip install --progress-bar on -e ".$extras"
    echo "$want" >"$stamp"
}

ensure_models() {
    "$PY" -m runtime.default_model
}

ensure_browser() {
    if command -v chromium >/dev/null 2>&1; then
        return
    fi
    say "installing Debian's chromium for the browser tests"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}

command="${1:-run}"
shift || true
case "$command" in
setup)
    ensure_venv
    ensure_dependencies ""
    ensure_models
    ;;
chat)
    ensure_venv
    ensure_dependencies ""
    ensure_models
    exec "$PY" -m runtime.cli chat "$@"
    ;;
run)
    ensure_venv
    ensure_dependencies ""
    ensure_models
    export LLMCHAT_HOST="${LLMCHAT_HOST:-127.0.0.1}" LLMCHAT_PORT="${LLMCHAT_PORT:-8000}"
    export LLMCHAT_UI_HOST="${LLMCHAT_UI_HOST:-127.0.0.1}" LLMCHAT_UI_PORT="${LLMCHAT_UI_PORT:-5006}"
    export LLMCHAT_API_URL="${LLMCHAT_API_URL:-http://127.0.0.1:$LLMCHAT_PORT}"
    export PATH="$VENV/bin:$PATH"
    say "starting the API and the UI (Procfile); Ctrl-C stops both"
    echo "    open http://$LLMCHAT_UI_HOST:$LLMCHAT_UI_PORT/ in a browser"
    echo "    API docs at http://$LLMCHAT_HOST:$LLMCHAT_PORT/docs"
    exec "$VENV/bin/honcho" -f Procfile start "$@"
    ;;
test)
    ensure_venv
    ensure_dependencies "[test]"
    ensure_models
    ensure_browser
    say "running the test suite"
    exec "$PY" -m pytest "$@"
    ;;
*)
    echo "usage: deploy/local.sh {run|test|chat|setup} [args...]" >&2
    exit 2
    ;;
esac
