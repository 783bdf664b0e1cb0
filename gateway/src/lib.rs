//! Sluice: an AI gateway. One OpenAI-compatible endpoint in front of many model
//! providers, with Portkey's headers and config JSON.
//!
//! The request's way through, one module per stage:
//!
//! ```text
//! server     decode the request, size limit, request id, answer the client
//! keys       gateway keys (who calls, in which role) and virtual keys
//! config     the server's TOML settings and Portkey's routing config JSON
//! limits     rate limits (requests, tokens) and budgets
//! routing    turn headers + config into the target(s) to call
//! guardrails hooks that may rewrite or answer a request before it leaves
//! cache      answers kept for repeated calls
//! providers  per-provider request building (providers are data: catalog.toml)
//! upstream   the pooled HTTP client, SSRF policy, timeouts, header hygiene
//! usage      tokens, cost and the request log
//! telemetry  logging set-up and secret redaction
//! plugins    the WebAssembly plugin host
//! ```
//!
//! Where state lives: `state` (one SQLite file: keys, the request log,
//! budgets' spend) and, when several gateways share it, `shared` (Redis:
//! rate-limit windows, budgets, the cache).

pub mod cache;
pub mod config;
pub mod error;
pub mod guardrails;
pub mod json_text;
pub mod keys;
pub mod limits;
pub mod plugins;
pub mod providers;
pub mod routing;
pub mod server;
pub mod shared;
pub mod state;
pub mod telemetry;
pub mod upstream;
pub mod usage;

pub use error::GatewayError;

/// The gateway's version, as printed by `sluice --version` and `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
