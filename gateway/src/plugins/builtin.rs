//! The first-party plugins under `plugins/`, built for wasm32 and componentized by
//! the gateway's build script (`gateway/build.rs`), embedded in the binary.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
