#!/usr/bin/env bash
# Builds pii-email.wasm from app.py with componentize-py (pinned below).
# Usage: build.sh [OUTPUT] — default ./pii-email.wasm. Needs python3 (3.11+).
# Installs componentize-py into .venv here the first time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/pii-email.wasm}")"
wit="$here/../../../wit/v0.1.0"
if ! "$here/.venv/bin/componentize-py" --version >/dev/null 2>&1; then
    python3 -m venv "$here/.venv"
    "$here/.venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
cd "$here"
"$here/.venv/bin/componentize-py" -d "$wit" -w guardrail componentize app -o "$out.tmp"
mv "$out.tmp" "$out"
