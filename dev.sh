#!/usr/bin/env bash
# The README's two set-up commands on a fresh Debian/Ubuntu machine:
#   ./dev.sh start   the main job: check the machine, then serve the browser app and the model on localhost
#   ./dev.sh test    the whole test suite
# Each installs what is missing: system packages (software Vulkan so WebGPU runs without a GPU, Chromium,
# espeak-ng, Node.js and npm), a virtualenv in .venv with the project and its test dependencies, and the official
# implementation (torch CPU + moshi) that the reference tests run. TypeScript (the npm package tests) is installed
# by those tests into .cache/npm-tools/.
set -euo pipefail
cd "$(dirname "$0")"

SYSTEM_PACKAGES=(mesa-vulkan-drivers libvulkan1 chromium espeak-ng libportaudio2 nodejs)
VENV=.venv
PY="$VENV/bin/python"
# The official implementation, pinned: the versions the fixtures were made with (docs/reference.md).
TORCH_VERSION=2.13.0
MOSHI_VERSION=0.2.13

say() { printf '[dev.sh] %s\n' "$*" >&2; }
# pip, quiet (-qq: errors only; a build backend's informational notes are not shown), without the warnings that
# this machine's extra (file://) indexes print for every package. A failed install still prints and stops.
pip() { "$PY" -m pip -qq "$@" 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'; }

ensure_system_packages() {
    local missing=() p
    for p in "${SYSTEM_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    # npm (the npm package tests): Debian packages it apart from nodejs, NodeSource's nodejs includes it.
    command -v npm >/dev/null || missing+=(npm)
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        say "missing system packages: ${missing[*]}; this machine has no apt-get."
        say "install their equivalents (a Vulkan driver such as Mesa lavapipe, Chromium, espeak-ng) and run again."
        exit 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n)
        else
            say "missing system packages: ${missing[*]}"
            say "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}   then run this command again."
            exit 1
        fi
    fi
    say "installing system packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
    [ -x "$PY" ] || { say "creating $VENV"; python3 -m venv "$VENV"; }
    # Reinstall only when pyproject.toml changed since the last install.
    local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -e "$stamp" ]; then
        say "installing kyutai-stt and its dependencies into $VENV"
        pip install --upgrade pip
        # moshi (installed by ensure_reference, tests only) declares pins that we knowingly do not meet (torch<2.10,
        # numpy<2.3, ...); its real needs are installed explicitly, so pip's conflict report about it is noise.
        pip install $(has_reference && echo --no-warn-conflicts) -e ".[test]"
        rm -f "$VENV"/.installed-*; touch "$stamp"
    fi
}

has_reference() {
    "$PY" -c "import torch, moshi; assert torch.__version__.startswith('$TORCH_VERSION') and moshi.__version__ == '$MOSHI_VERSION'" \
        2>/dev/null
}

ensure_reference() {
    has_reference && return 0
    say "installing the official implementation: torch $TORCH_VERSION (CPU) and moshi $MOSHI_VERSION"
    # What moshi really needs to load and run the STT model on the CPU, named explicitly and installed first...
    pip install "torch==$TORCH_VERSION" einops "huggingface-hub<1" safetensors sentencepiece
    # ...then moshi itself without its declared pins (they exclude this torch and numpy, and pull in CUDA-only
    # bitsandbytes, aiohttp, sphn): with --no-deps pip checks no pins, so a working install prints nothing.
    pip install --no-deps "moshi==$MOSHI_VERSION"
    has_reference || { say "the official implementation does not import; see the messages above"; exit 1; }
}

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
export WGPU_BACKEND_TYPE="${WGPU_BACKEND_TYPE:-Vulkan}"

case "${1:-}" in
    start)
        ensure_system_packages; ensure_venv
        "$VENV/bin/kyutai-stt" doctor
        # The app and a model on http://localhost:$PORT/. The official model is downloaded and converted once;
        # where the hub is unreachable, a tiny synthetic model (random weights, labelled in the page) is served.
        exec "$VENV/bin/kyutai-stt" serve --or-synthetic --port "${PORT:-8000}"
        ;;
    test)
        shift
        ensure_system_packages; ensure_venv; ensure_reference
        # Test processes (pytest-xdist), each taking a whole group of tests at a time: a file (its module fixtures
        # are made once), or all the full-size tests (one full-size model in memory at a time); longest groups
        # first (tests/conftest.py). KYUTAI_STT_TEST_WORKERS=0 runs them in this process.
        exec "$PY" -m pytest -q -n "${KYUTAI_STT_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder "$@"
        ;;
    *)
        echo "usage: ./dev.sh start | ./dev.sh test [pytest args]" >&2; exit 2 ;;
esac
