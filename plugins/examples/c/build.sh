#!/usr/bin/env bash
# Builds char-limit.wasm from plugin.c: Debian's clang 14 and wasi-libc compile
# the core module (reactor), then `sluice plugins componentize` makes it a
# component of the guardrail world. Usage: build.sh [OUTPUT]; default
# ./char-limit.wasm. Needs clang, lld and wasi-libc (see README.md) and the
# sluice binary ($SLUICE_BIN, else `sluice` on PATH).
#
# gen/ holds wit-bindgen's C bindings for sluice:plugin@0.1.0 (frozen, so they
# are committed); ./bindgen.sh regenerates them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/char-limit.wasm}")"
sluice="${SLUICE_BIN:-sluice}"
core="$(mktemp --suffix .wasm)"
trap 'rm -f "$core"' EXIT
clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Werror \
    -o "$core" "$here/plugin.c" "$here/gen/guardrail.c"
"$sluice" plugins componentize "$core" --world guardrail -o "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
