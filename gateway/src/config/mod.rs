//! Configuration: the server's TOML file and Portkey's routing config JSON.
//!
//! Both are read in two phases: a parsed document, then validated types with
//! defaults filled in, every problem reported with its path. Nothing here does
//! I/O beyond reading the file it is given.

mod hooks;
pub mod plugins;
pub mod query;
pub mod reader;
pub mod routing;
mod secret;
mod server;

pub use reader::{Problem, Problems};
pub use routing::RoutingConfig;
pub use secret::Secret;
pub use server::{BreakerSettings, LogFormat, ServerConfig, UpstreamSettings, parse_host};
