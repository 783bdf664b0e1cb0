#!/usr/bin/env bash
# Regenerates gen/ from the WIT (needs wit-bindgen-cli 0.63:
# `cargo install wit-bindgen-cli --version 0.63.0`). The type object it also
# writes is not kept: `sluice plugins componentize` embeds the world itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit-bindgen c "$here/../../../wit/v0.1.0" --world guardrail --out-dir "$here/gen"
rm -f "$here/gen/guardrail_component_type.o"
