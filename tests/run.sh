#!/usr/bin/env bash
# The test command (README.md). Sets up everything the tests need on a fresh
# machine — the pinned Rust toolchain with its wasm targets, a Python venv with the
# real OpenAI SDK — builds the gateway binary the end-to-end tests start, and
# runs every test in the workspace. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

# rust-toolchain.toml pins the toolchain; make sure it and its targets are here.
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
rustup target add wasm32-unknown-unknown wasm32-wasip2 >/dev/null

if ! tests/.venv/bin/python -c 'import openai' >/dev/null 2>&1; then
    python3 -m venv tests/.venv
    tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi

# The end-to-end tests start the real binary; build it first.
cargo build --locked -p sluice
cargo test --locked --workspace "$@"
