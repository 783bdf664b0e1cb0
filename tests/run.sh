#!/usr/bin/env bash
# The test command (README.md). Sets up everything the tests need on a fresh
# machine — the pinned Rust toolchain with its wasm targets, a Python venv with the
# real OpenAI SDK, Redis for the shared-state tests, the toolchains of the example plugins (clang + wasi-libc,
# componentize-py, componentize-js) — builds the gateway binary the end-to-end
# tests start, and runs every test in the workspace. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

# rust-toolchain.toml pins the toolchain; make sure it and its targets are here.
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
rustup target add wasm32-unknown-unknown wasm32-wasip2 >/dev/null

if ! tests/.venv/bin/python -c 'import openai, anthropic' >/dev/null 2>&1; then
    python3 -m venv tests/.venv
    tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi

# Toolchains of the example plugins in other languages (plugins/examples/), which
# the tests build with their own build scripts: clang + wasi-libc for C (Debian),
# componentize-py (PyPI) and componentize-js (npm), each pinned.
if ! command -v clang >/dev/null 2>&1 || [ ! -f /usr/include/wasm32-wasi/stdlib.h ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null
fi
# A real Redis server for the shared-state tests (Debian's package; the tests
# start their own on a free loopback port).
if ! command -v redis-server >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq redis-server >/dev/null
fi
py=plugins/examples/python
if ! "$py/.venv/bin/componentize-py" --version >/dev/null 2>&1; then
    python3 -m venv "$py/.venv"
    "$py/.venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
js=plugins/examples/javascript
# npm ci again whenever the lock file is newer than the installed tree.
if [ ! -f "$js/node_modules/.package-lock.json" ] || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
    (cd "$js" && npm ci --no-audit --no-fund --silent)
fi

# The end-to-end tests start the real binary; build it first.
cargo build --locked -p sluice
cargo test --locked --workspace "$@"
# The first-party checks' own unit tests, run natively (plugins/ is its own
# workspace, built for wasm32 by the gateway's build script).
cargo test --locked --manifest-path plugins/Cargo.toml -p default -p blocklist -p jwt -p webhook -p http-log --lib "$@"
