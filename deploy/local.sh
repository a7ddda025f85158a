#!/usr/bin/env bash
# One entry point for a fresh machine: sets everything up (idempotently), then runs.
#   deploy/local.sh run    - set up the dependencies and the GGUF, then start the app (API + UI
#                            from the Procfile, via honcho) while the derived models (Transformers,
#                            ONNX) build in the background
#   deploy/local.sh test   - set up (with test tools), then run the test suite
#   deploy/local.sh chat   - set up, then chat with the default model in the terminal
#   deploy/local.sh setup  - set up only
# A second run reuses the virtual environment, the pip wheel cache and the models.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${LLMCHAT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
LOGS="${LLMCHAT_LOGS_DIR:-$ROOT/logs}"

say() { printf '\n==> %s\n' "$*"; }

# Reads pip's output (run with --progress-bar raw) and shows a terminal only what happens:
# one status line rewritten in place (resolving, downloading with sizes, building,
# installing), a line per package built from source, and anything pip warns or fails with,
# except the warnings a pip configuration with missing local index folders repeats for every
# package, and setuptools' notices about this project's metadata. The whole output goes to
# the log file named by the first argument.
PIP_FILTER='
import re, shutil, sys, time

log = open(sys.argv[1], "a", encoding="utf-8")
tty = sys.stdout.isatty()
width = shutil.get_terminal_size().columns - 5
started = building_since = time.monotonic()
count, current, shown, notice, skipped = 0, "", False, 0, 0


def status(text):  # the one line that is rewritten in place (terminals only)
    global shown
    if tty:
        sys.stdout.write("\r\033[K    " + text[:width])
        sys.stdout.flush()
        shown = True


def packages(count):
    return f"{count} package" if count == 1 else f"{count} packages"


def say(text):  # a line that stays
    global shown
    if shown:
        sys.stdout.write("\r\033[K")
        shown = False
    print("    " + text, flush=True)


for line in sys.stdin:
    log.write(line)
    log.flush()
    text = line.rstrip()
    if notice:  # a setuptools notice: its banner lies between two "!!" lines, its source line after
        notice = notice - 1 if re.fullmatch(r"\s*!!", text) or notice == 1 else notice
        skipped += 1
        notice = 0 if skipped > 30 else notice  # not the shape expected: stop skipping
        continue
    if m := re.match(r"(Collecting|Obtaining|Processing) (\S+)", text):
        count += 1
        current = re.split(r"[<>=!~;\[(]", m[2].rsplit("/", 1)[-1])[0]
        current = current.split("-")[0] if current.endswith(".whl") else current
        status(f"resolving: {packages(count)} ({current})")
    elif m := re.match(r"\s*Downloading (\S+) \((.+)\)", text):
        current = f"{m[1]} ({m[2]})"
        status(f"downloading {current}")
    elif m := re.match(r"Progress (\d+) of (\d+)", text):
        if int(m[2]):
            status(f"downloading {current}: {100 * int(m[1]) // int(m[2])}%")
    elif m := re.match(r"\s*Building wheel for (\S+) .*: (started|still running)", text):
        if m[2] == "started":
            building_since = time.monotonic()
            say(f"building {m[1]} from source")
        status(f"building {m[1]}: {(time.monotonic() - building_since) / 60:.0f} min")
    elif text.startswith("Installing collected packages:"):
        names = text.split(":", 1)[1].split(",")
        status(f"installing {packages(len(names))}")
    elif text.startswith("Successfully installed"):
        say(f"installed {packages(len(text.split()) - 2)} in {time.monotonic() - started:.0f} s")
    elif re.search(r"\b(BuildBackendWarning|SetuptoolsDeprecationWarning):", text):
        notice, skipped = 3, 0
    elif re.match(r"WARNING: Location .* is ignored: it is neither a file nor a directory", text):
        pass
    elif re.match(r"(WARNING|ERROR|error|\s*×)", text):
        say(text)
if shown:
    sys.stdout.write("\r\033[K")
'

# pip_install BAR ARGS...: BAR is pip's --progress-bar; "raw" (what PIP_FILTER shows) needs a
# newer pip than a fresh venv's own, which gets "off".
pip_install() {
    local log="$LOGS/setup-pip.log" bar="$1"
    shift
    mkdir -p "$LOGS"
    if ! PYTHONUNBUFFERED=1 "$PY" -m pip install --progress-bar "$bar" "$@" 2>&1 | "$PY" -c "$PIP_FILTER" "$log"; then
        echo "pip install failed; its last lines follow (all of its output: $log)" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

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
        pip_install off --upgrade pip wheel setuptools
    fi
}

ensure_dependencies() {
    local extras="$1" stamp="$VENV/.llmchat-installed" want
    want="$(sha256sum pyproject.toml | cut -c1-16) $extras ${CMAKE_ARGS:-}"
    if [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
        return
    fi
    say "installing dependencies (.$extras)"
    if ! "$PY" -c 'import llama_cpp' 2>/dev/null &&
        ! "$PY" -m pip cache list 'llama_cpp_python-*' 2>/dev/null | grep -q 'llama_cpp_python-'; then
        echo "    llama-cpp-python compiles llama.cpp on first install: about 9 minutes on 2 cores."
        echo "    pip caches the built wheel, so later installs on this machine are quick."
    fi
    if [ "${LLMCHAT_CUDA:-0}" = "1" ]; then
        # GPU machines: llama.cpp built with CUDA, torch's CUDA wheel, ONNX Runtime's GPU build.
        export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_CUDA=on}"
        pip_install raw --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36
        pip_install raw torch==2.13.0 --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}"
    fi
    pip_install raw -e ".$extras"
    echo "$want" >"$stamp"
}

# Every model set-up provides: the GGUF and the models derived from it (the tests need all).
ensure_models() {
    say "models"
    "$PY" -m runtime.default_model
}

# The GGUF alone is enough to chat: run serves as soon as it is there.
ensure_gguf() {
    say "default model"
    "$PY" -m runtime.default_model --gguf-only
}

# Builds the Transformers checkpoint and the ONNX exports while the app serves; they join
# the model list as each is ready. The builder runs on idle CPU time only, logs to
# $LOGS/models-build.log (runtime/builds.py reads its progress), says on this terminal when each
# model is ready, and ends within a second of this script's process (honcho, after exec)
# ending. Started detached, so that honcho never holds it as a zombie; a builder that
# another run started first is waited for, not doubled.
start_model_builder() {
    (
        "$PY" -m runtime.default_model --background --log "$LOGS/models-build.log" --parent-pid $$ </dev/null &
    )
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

# The PostgreSQL server the tests start a throwaway cluster of (tests/pg.py); nothing runs it as a service.
ensure_postgres() {
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${LLMCHAT_TEST_PGBIN:-}" ]; then
        return
    fi
    say "installing Debian's postgresql for the database tests"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
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
    ensure_gguf
    start_model_builder
    export LLMCHAT_HOST="${LLMCHAT_HOST:-127.0.0.1}" LLMCHAT_PORT="${LLMCHAT_PORT:-8000}"
    export LLMCHAT_UI_HOST="${LLMCHAT_UI_HOST:-127.0.0.1}" LLMCHAT_UI_PORT="${LLMCHAT_UI_PORT:-5006}"
    export LLMCHAT_API_URL="${LLMCHAT_API_URL:-http://127.0.0.1:$LLMCHAT_PORT}"
    export PATH="$VENV/bin:$PATH"
    say "starting the API and the UI (Procfile); Ctrl-C stops both"
    if [ "${LLMCHAT_AUTH:-on}" = "off" ]; then
        echo "    open http://$LLMCHAT_UI_HOST:$LLMCHAT_UI_PORT/ in a browser (local mode: no sign-in)"
    else
        echo "    open http://$LLMCHAT_UI_HOST:$LLMCHAT_UI_PORT/ in a browser and sign in as admin: the first"
        echo "    start prints its password once, below (web.1 | llmchat: created the administrator account);"
        echo "    a new one at any time: $PY -m api.users reset-password admin"
    fi
    echo "    API docs at http://$LLMCHAT_HOST:$LLMCHAT_PORT/docs"
    exec "$VENV/bin/honcho" -f Procfile start "$@"
    ;;
test)
    ensure_venv
    ensure_dependencies "[test,cluster]"
    ensure_models
    ensure_browser
    ensure_postgres
    say "running the test suite"
    exec "$PY" -m pytest "$@"
    ;;
*)
    echo "usage: deploy/local.sh {run|test|chat|setup} [args...]" >&2
    exit 2
    ;;
esac
