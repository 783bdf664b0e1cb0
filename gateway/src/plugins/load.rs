//! Turning bytes into a checked, ready plugin: is it a component, which world and
//! WIT version does it export, does it import WASI, which SDK built it; compile
//! (wasmtime's cache makes a recompile of known bytes a file read), link only what
//! the world grants, pre-instantiate, then call `describe()` once and check it
//! says the same kind as the world it exports.
//!
//! Compiling is CPU-heavy (seconds for a Python or JavaScript component): call
//! [`load`] off the async workers (the watcher thread, `spawn_blocking`, start-up).

use std::sync::Arc;
use std::time::SystemTime;

use wasmtime::component::{Component, HasSelf, Linker};

use super::engine::{HostState, PluginEngine};
use super::limits::Limits;
use super::pool::Pool;
use super::v0_1::{self, guardrail, provider, router, types};
use super::{Info, Kind, Plugin, PluginError, Source, World, describe};
use crate::providers::Endpoint;

/// Export names of each world's own interface, at the supported version.
const CHECKS: &str = "sluice:plugin/checks@";
const ADAPTER: &str = "sluice:plugin/adapter@";
const ROUTING: &str = "sluice:plugin/routing@";

/// Loads one plugin. `name` is what configs call it (the file stem).
pub async fn load(
    engine: &PluginEngine,
    name: &str,
    bytes: &[u8],
    source: Source,
    limits: Limits,
) -> Result<Plugin, PluginError> {
    let fail = |detail: String| PluginError::Load {
        plugin: name.to_owned(),
        detail,
    };
    if !wasmparser::Parser::is_component(bytes) {
        return Err(fail(if wasmparser::Parser::is_core_wasm(bytes) {
            "this is a core WebAssembly module, not a component; turn it into one with `sluice plugins componentize FILE --world WORLD`".into()
        } else {
            "not a WebAssembly component (bad magic number or truncated file)".into()
        }));
    }
    let sdk_version = sdk_stamp(bytes);
    if let Some(v) = &sdk_version
        && !compatible(v)
    {
        return Err(fail(format!(
            "built with sluice-plugin-sdk {v}; this gateway loads plugins of SDK {}.x",
            major_minor(crate::plugins::SDK_VERSION)
        )));
    }
    let component = Component::new(&engine.engine, bytes).map_err(|e| fail(describe(&e)))?;
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(&engine.engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    let imports: Vec<String> = ty
        .imports(&engine.engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    let (kind, wit_version) = world_of(&exports).map_err(fail)?;
    if !wit_supported(&wit_version) {
        return Err(fail(format!(
            "built for sluice:plugin@{wit_version}; this gateway speaks sluice:plugin@0.1.0 to {}",
            v0_1::VERSION
        )));
    }
    let wasi = imports.iter().any(|i| i.starts_with("wasi:"));

    let mut linker: Linker<HostState> = Linker::new(&engine.engine);
    guardrail::sluice::plugin::host::add_to_linker::<HostState, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )
    .map_err(|e| fail(describe(&e)))?;
    if wasi {
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| fail(describe(&e)))?;
    }
    let pre = linker.instantiate_pre(&component).map_err(|e| {
        fail(format!(
            "it imports something the gateway does not grant: {}",
            describe(&e)
        ))
    })?;
    let name_arc: Arc<str> = Arc::from(name);
    let world = match kind {
        Kind::Guardrail => World::Guardrail(Pool::new(
            name_arc.clone(),
            engine.clone(),
            guardrail::GuardrailPre::new(pre).map_err(|e| fail(describe(&e)))?,
            limits,
        )),
        Kind::Provider => World::Provider {
            pool: Pool::new(
                name_arc.clone(),
                engine.clone(),
                provider::ProviderPre::new(pre).map_err(|e| fail(describe(&e)))?,
                limits,
            ),
            endpoints: Vec::new(),
        },
        Kind::Router => World::Router(Pool::new(
            name_arc.clone(),
            engine.clone(),
            router::RouterPre::new(pre).map_err(|e| fail(describe(&e)))?,
            limits,
        )),
    };
    let mut plugin = Plugin {
        name: name_arc,
        info: Info::default(),
        source,
        wasi,
        sdk_version,
        wit_version,
        size: bytes.len(),
        loaded_at: SystemTime::now(),
        world,
        validated: Default::default(),
    };
    let info = plugin.describe().await?;
    if info.kind != kind {
        return Err(fail(format!(
            "describe() says kind {:?} but the component exports the {:?} world",
            info.kind, kind
        )));
    }
    plugin.info = info;
    if let World::Provider { pool, endpoints } = &mut plugin.world {
        let mut lease = pool.lease().await?;
        let inst = &mut lease.instance;
        let result = inst
            .bindings
            .sluice_plugin_adapter()
            .call_endpoints(&mut inst.store)
            .await;
        *endpoints = pool
            .finish(lease, result)?
            .into_iter()
            .filter_map(endpoint_from_wit)
            .collect();
    }
    Ok(plugin)
}

fn world_of(exports: &[String]) -> Result<(Kind, String), String> {
    for (prefix, kind) in [
        (CHECKS, Kind::Guardrail),
        (ADAPTER, Kind::Provider),
        (ROUTING, Kind::Router),
    ] {
        if let Some(version) = exports.iter().find_map(|e| e.strip_prefix(prefix)) {
            return Ok((kind, version.to_owned()));
        }
    }
    Err(format!(
        "it implements none of the worlds of sluice:plugin (guardrail, provider, router); it exports: {}",
        if exports.is_empty() {
            "nothing".to_owned()
        } else {
            exports.join(", ")
        }
    ))
}

/// The SDK version stamped into a component's custom section, if any.
fn sdk_stamp(bytes: &[u8]) -> Option<String> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Ok(wasmparser::Payload::CustomSection(section)) = payload
            && section.name() == crate::plugins::SDK_VERSION_SECTION
        {
            return std::str::from_utf8(section.data()).ok().map(str::to_owned);
        }
    }
    None
}

fn major_minor(v: &str) -> &str {
    match v.match_indices('.').nth(1) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// Same major and minor version (0.x versions break on minor).
fn compatible(v: &str) -> bool {
    major_minor(v) == major_minor(crate::plugins::SDK_VERSION)
}

/// A WIT version of the line the host binds, no newer than it: a newer patch
/// may import what this host does not have.
fn wit_supported(v: &str) -> bool {
    let patch = |v: &str| v.rsplit('.').next().and_then(|p| p.parse::<u32>().ok());
    major_minor(v) == major_minor(v0_1::VERSION)
        && matches!((patch(v), patch(v0_1::VERSION)), (Some(p), Some(ours)) if p <= ours)
}

pub fn endpoint_from_wit(e: types::Endpoint) -> Option<Endpoint> {
    match e {
        types::Endpoint::Chat => Some(Endpoint::Chat),
        types::Endpoint::Completions => Some(Endpoint::Completions),
        types::Endpoint::Embeddings => Some(Endpoint::Embeddings),
        types::Endpoint::Messages | types::Endpoint::Other => None,
    }
}

pub fn endpoint_to_wit(e: Endpoint) -> types::Endpoint {
    match e {
        Endpoint::Chat => types::Endpoint::Chat,
        Endpoint::Completions => types::Endpoint::Completions,
        Endpoint::Embeddings => types::Endpoint::Embeddings,
        _ => types::Endpoint::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_worlds() {
        assert!(compatible(crate::plugins::SDK_VERSION));
        assert!(!compatible("9.9.0"));
        assert_eq!(major_minor("0.1.7"), "0.1");
        let (kind, v) = world_of(&[
            "sluice:plugin/meta@0.1.0".into(),
            "sluice:plugin/routing@0.1.0".into(),
        ])
        .expect("router");
        assert_eq!((kind, v.as_str()), (Kind::Router, "0.1.0"));
        let err = world_of(&["wasi:cli/run@0.2.0".into()]).expect_err("none");
        assert!(wit_supported("0.1.0") && wit_supported(v0_1::VERSION));
        assert!(!wit_supported("0.1.99") && !wit_supported("0.2.0") && !wit_supported("1.1.0"));
        assert!(err.contains("wasi:cli/run@0.2.0"), "{err}");
    }
}
