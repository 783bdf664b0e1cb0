//! `sluice plugins ...`: list, check, new, componentize.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use sluice::config::ServerConfig;
use sluice::plugins::{self, Limits, PluginEngine, Source};

use super::PluginsCommand;

pub fn plugins(command: PluginsCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginsCommand::List {
            config,
            plugins,
            json,
        } => list(config, plugins, json),
        PluginsCommand::Check { file, with_config } => check(&file, with_config.as_deref()),
        PluginsCommand::New { name, kind, dir } => new(&name, &kind, dir),
        PluginsCommand::Componentize {
            module,
            world,
            output,
            adapter,
        } => componentize(&module, &world, &output, adapter.as_deref()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn list(config: Option<PathBuf>, dir: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let config = match &config {
        Some(path) => ServerConfig::load(path),
        None => ServerConfig::defaults(),
    }
    .map_err(|p| anyhow::anyhow!("invalid config: {p}"))?;
    let dir = dir.unwrap_or(config.plugins_dir.clone());
    let rt = runtime()?;
    let (registry, errors) = rt
        .block_on(plugins::host::open(&config.plugins, &dir))
        .map_err(anyhow::Error::msg)?;
    let all: Vec<serde_json::Value> = registry.list().iter().map(|p| p.summary()).collect();
    let statuses = registry.statuses();
    if json {
        let failed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        println!(
            "{}",
            serde_json::json!({"plugins": all, "errors": failed, "directory": dir.display().to_string()})
        );
    } else {
        println!(
            "{:<20} {:<10} {:<9} {:<5} {:<8} {:<12} {:<11} source",
            "NAME", "KIND", "VERSION", "WASI", "CPU(ms)", "MEMORY(MiB)", "ISOLATION"
        );
        for p in &all {
            println!(
                "{:<20} {:<10} {:<9} {:<5} {:<8} {:<12} {:<11} {}",
                p["name"].as_str().unwrap_or(""),
                p["kind"].as_str().unwrap_or(""),
                p["version"].as_str().unwrap_or(""),
                if p["wasi"] == true { "yes" } else { "no" },
                p["limits"]["cpu_budget_ms"].to_string(),
                p["limits"]["max_memory_mb"].to_string(),
                p["limits"]["isolation"].as_str().unwrap_or(""),
                p["source"].as_str().unwrap_or(""),
            );
        }
        for (name, status) in &statuses {
            if let plugins::Status::Failed(why) = status {
                println!("{name}: not loaded: {why}");
            }
        }
        if !dir.is_dir() {
            println!("(plugins directory {} does not exist)", dir.display());
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn check(file: &Path, with_config: Option<&str>) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_owned();
    let settings = sluice::config::plugins::PluginSettings::default();
    let engine = PluginEngine::new(&settings.engine, settings.cache_dir.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the plugin engine: {e}"))?;
    let rt = runtime()?;
    let plugin = match rt.block_on(plugins::load(
        &engine,
        &name,
        &bytes,
        Source::File(file.to_owned()),
        Limits::default(),
    )) {
        Ok(p) => p,
        Err(e) => {
            println!("{}: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = plugin.summary();
    out["config_schema"] = serde_json::Value::String(plugin.info.config_schema.clone());
    if let Some(config) = with_config {
        let verdict = rt.block_on(plugin.ensure_valid(config));
        out["config_valid"] = verdict.is_ok().into();
        if let Err(e) = verdict {
            out["config_error"] = e.to_string().into();
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(if out.get("config_error").is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The SDK this binary was built with, for `plugins new`.
const SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");

#[expect(clippy::print_stdout, reason = "the command's output")]
fn new(name: &str, kind: &str, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!("a plugin name is lowercase letters, digits, `-` and `_`: `{name}`");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    std::fs::create_dir_all(dir.join("src"))?;
    let sdk = std::fs::canonicalize(SDK_PATH)
        .map(|p| format!("path = {:?}", p.display().to_string()))
        .unwrap_or_else(|_| format!("version = {:?}", plugins::SDK_VERSION));
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
serde = {{ version = "1", features = ["derive"] }}
sluice-plugin-sdk = {{ {sdk}, features = ["{kind}"] }}

# Its own workspace, so it builds where it is.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#
        ),
    )?;
    let ty = name
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<String>();
    std::fs::write(dir.join("src/lib.rs"), template(kind, &ty))?;
    std::fs::write(
        dir.join("README.md"),
        format!(
            "# {name}\n\nA Sluice {kind} plugin.\n\n```sh\ncargo build --release --target wasm32-unknown-unknown\nsluice plugins componentize target/wasm32-unknown-unknown/release/{file}.wasm --world {kind} -o {name}.wasm\nsluice plugins check {name}.wasm\nmv {name}.wasm /path/to/plugins/   # the running gateway loads it\n```\n",
            file = name.replace('-', "_")
        ),
    )?;
    println!("created {} ({kind} plugin `{name}`)", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn template(kind: &str, ty: &str) -> String {
    match kind {
        "guardrail" => format!(
            r#"use serde::Deserialize;
use sluice_plugin_sdk::guardrail::*;

#[derive(Deserialize)]
struct Config {{
    /// Fail when any segment is longer than this many characters.
    #[serde(default = "default_max")]
    max_chars: usize,
}}

fn default_max() -> usize {{
    10_000
}}

struct {ty};

impl Guardrail for {ty} {{
    type Config = Config;
    const DESCRIPTION: &'static str = "Fails text longer than max_chars";

    fn check(config: &Config, input: &CheckInput) -> Result<Verdict, Error> {{
        match input.find(|s| s.text.chars().count() > config.max_chars) {{
            Some(_) => Ok(Verdict::fail(format!("a message is longer than {{}} characters", config.max_chars))),
            None => Ok(Verdict::pass()),
        }}
    }}
}}

sluice_plugin_sdk::export_guardrail!({ty});
"#
        ),
        "router" => format!(
            r#"use serde::Deserialize;
use sluice_plugin_sdk::router::*;

#[derive(Deserialize)]
struct Config {{}}

struct {ty};

impl Router for {ty} {{
    type Config = Config;
    const DESCRIPTION: &'static str = "Fewest requests in flight first";

    fn route(_config: &Config, input: &RouteInput) -> Result<Vec<u32>, Error> {{
        let mut c = input.available();
        c.sort_by_key(|c| c.in_flight);
        Ok(c.into_iter().map(|c| c.index).collect())
    }}
}}

sluice_plugin_sdk::export_router!({ty});
"#
        ),
        _ => format!(
            r#"use serde::Deserialize;
use sluice_plugin_sdk::provider::*;

#[derive(Deserialize)]
struct Config {{}}

struct {ty};

/// Streams are passed as they come: one chunk per upstream line.
#[derive(Default)]
struct Stream {{
    lines: Lines,
}}

impl StreamTranslator for Stream {{
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, Error> {{
        Ok(self.lines.push(bytes).into_iter().filter(|l| !l.is_empty()).collect())
    }}
    fn finish(&mut self) -> Result<Vec<String>, Error> {{
        Ok(self.lines.rest().into_iter().collect())
    }}
}}

impl Provider for {ty} {{
    type Config = Config;
    type Stream = Stream;
    const ENDPOINTS: &'static [Endpoint] = &[Endpoint::Chat];

    fn build_request(_config: &Config, call: &Call) -> Result<HttpRequest, Error> {{
        let base = call.base_url.clone().unwrap_or_else(|| "http://127.0.0.1:8000".into());
        Ok(HttpRequest::post_json(format!("{{base}}/chat"), &call.json()?))
    }}

    fn parse_response(_e: Endpoint, status: u16, _h: &[Pair], body: &[u8]) -> Result<String, Error> {{
        if !(200..300).contains(&status) {{
            return Err(Error::Upstream(UpstreamError {{
                status,
                message: String::from_utf8_lossy(body).into_owned(),
                code: None,
            }}));
        }}
        Ok(String::from_utf8_lossy(body).into_owned())
    }}

    fn stream(_e: Endpoint, _model: Option<String>) -> Stream {{
        Stream::default()
    }}
}}

sluice_plugin_sdk::export_provider!({ty});
"#
        ),
    }
}

/// The WIT package at `version`, one document (the files of
/// `wit/vVERSION/` joined), for every version this gateway loads.
fn wit_source(version: &str) -> Option<String> {
    let files = match version {
        "0.1.0" => [
            include_str!("../../wit/v0.1.0/types.wit"),
            include_str!("../../wit/v0.1.0/guardrail.wit"),
            include_str!("../../wit/v0.1.0/provider.wit"),
            include_str!("../../wit/v0.1.0/router.wit"),
        ],
        "0.1.1" => [
            include_str!("../../wit/v0.1.1/types.wit"),
            include_str!("../../wit/v0.1.1/guardrail.wit"),
            include_str!("../../wit/v0.1.1/provider.wit"),
            include_str!("../../wit/v0.1.1/router.wit"),
        ],
        _ => return None,
    };
    let mut out = String::new();
    for (i, f) in files.iter().enumerate() {
        for line in f.lines() {
            if i > 0 && line.starts_with("package ") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    Some(out)
}

/// The `sluice:plugin` version a core module's exports name
/// (`sluice:plugin/meta@0.1.0#describe`), if any.
fn module_wit_version(bytes: &[u8]) -> Option<String> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(wasmparser::Payload::ExportSection(exports)) = payload else {
            continue;
        };
        for export in exports.into_iter().flatten() {
            if let Some(rest) = export.name.strip_prefix("sluice:plugin/")
                && let Some((_, version)) = rest.split_once('@')
                && let Some((version, _)) = version.split_once('#')
            {
                return Some(version.to_owned());
            }
        }
    }
    None
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn componentize(
    module: &Path,
    world: &str,
    output: &Path,
    adapter: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let mut bytes =
        std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let has_metadata = wasmparser::Parser::new(0)
        .parse_all(&bytes)
        .filter_map(Result::ok)
        .any(|p| matches!(p, wasmparser::Payload::CustomSection(s) if s.name().starts_with("component-type")));
    if !has_metadata {
        // The world of the version the module was built for: its exports
        // name it; a module exporting none of ours gets the newest.
        let version =
            module_wit_version(&bytes).unwrap_or_else(|| sluice::plugins::v0_1::VERSION.to_owned());
        let source = wit_source(&version).ok_or_else(|| {
            anyhow::anyhow!(
                "the module was built for sluice:plugin@{version}; this gateway knows 0.1.0 to {}",
                sluice::plugins::v0_1::VERSION
            )
        })?;
        let mut resolve = wit_parser::Resolve::default();
        let pkg = resolve
            .push_str("sluice-plugin.wit", &source)
            .map_err(|e| anyhow::anyhow!("the built-in WIT does not parse: {e:#}"))?;
        let world = resolve
            .select_world(&[pkg], Some(world))
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        wit_component::embed_component_metadata(
            &mut bytes,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
            false,
        )
        .map_err(|e| anyhow::anyhow!("cannot embed the world: {e:#}"))?;
    }
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder
        .validate(true)
        .module(&bytes)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    if let Some(path) = adapter {
        let adapter =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        encoder
            .adapter("wasi_snapshot_preview1", &adapter)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    }
    let component = encoder
        .encode()
        .map_err(|e| anyhow::anyhow!("cannot make a component: {e:#}"))?;
    std::fs::write(output, &component)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "{}: {} bytes, world {world}",
        output.display(),
        component.len()
    );
    Ok(ExitCode::SUCCESS)
}
