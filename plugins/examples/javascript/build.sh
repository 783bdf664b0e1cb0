#!/usr/bin/env bash
# Builds word-count.wasm from plugin.js with componentize-js (pinned in
# package.json). Usage: build.sh [OUTPUT] — default ./word-count.wasm.
# Needs node and npm; runs `npm ci` here the first time.
#
# `jco componentize` fails on Node 20 (its preview2 shim no longer preopens `/`),
# so this calls componentize-js's CLI directly. `-d` disables the WASI features
# the plugin does not use, so the component imports as little as possible.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/word-count.wasm}")"
wit="$here/../../../wit/v0.1.0"
cd "$here"
if [ ! -x node_modules/.bin/componentize-js ] && [ ! -f node_modules/@bytecodealliance/componentize-js/src/cli.js ]; then
    npm ci --no-audit --no-fund --silent
fi
node node_modules/@bytecodealliance/componentize-js/src/cli.js plugin.js \
    --wit "$wit" --world-name guardrail -d http fetch-event -o "$out.tmp"
mv "$out.tmp" "$out"
