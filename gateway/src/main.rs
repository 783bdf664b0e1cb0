//! The `sluice` command: `serve`, `config check`, `--version`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::config::ServerConfig;
use sluice::server::{self, Workers};

// mimalloc: the proxy allocates many short-lived buffers per request; glibc's
// malloc/free were ~15% of the gateway's CPU under load (perf), mimalloc is the
// well-kept drop-in that proxies such as this commonly use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "An AI gateway: one OpenAI-compatible endpoint for many providers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Server config (TOML). Without one, defaults apply and each request names
        /// its provider and key by header.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1).
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on (default 8787; 0 picks a free one).
        #[arg(long, short)]
        port: Option<u16>,
        /// Plugins directory (default ./plugins).
        #[arg(long)]
        plugins: Option<PathBuf>,
    },
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Manage gateway keys (in the state database).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage virtual keys: provider keys stored encrypted, named by clients.
    VirtualKeys {
        #[command(subcommand)]
        command: VirtualKeysCommand,
    },
}

#[derive(Subcommand)]
enum VirtualKeysCommand {
    /// Store a provider key (read from stdin) under a name.
    Create {
        /// What clients send in `x-portkey-virtual-key` (or a config's `virtual_key`).
        #[arg(long)]
        name: String,
        /// The provider it is a key for.
        #[arg(long)]
        provider: String,
        #[command(flatten)]
        at: cli_keys::StateArgs,
    },
    /// List virtual keys: name, provider, status, dates (never the secret).
    List {
        #[command(flatten)]
        at: cli_keys::StateArgs,
    },
    /// Replace a virtual key's provider key (read from stdin); clients need no change.
    Rotate {
        name: String,
        #[command(flatten)]
        at: cli_keys::StateArgs,
    },
    /// Revoke a virtual key: requests naming it get 401.
    Revoke {
        name: String,
        #[command(flatten)]
        at: cli_keys::StateArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (once: only its hash is stored).
    Create {
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// admin (everything), member (the proxy routes) or viewer (reading).
        #[arg(long, default_value = "member")]
        role: String,
        /// Expire after this many days (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// A provider the key may call (repeat for more; default: all).
        #[arg(long = "allow-provider")]
        allow_providers: Vec<String>,
        /// A model the key may ask for, or a prefix ending in `*` (repeat for
        /// more; default: all).
        #[arg(long = "allow-model")]
        allow_models: Vec<String>,
        /// The config for requests that name none: a name under [configs] or JSON.
        #[arg(long)]
        default_config: Option<String>,
        /// KEY=VALUE merged into every request's metadata (repeat for more).
        #[arg(long = "metadata")]
        metadata: Vec<String>,
        /// Requests per minute for this key (in place of a `scope = "key"` rule).
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens per minute for this key (likewise).
        #[arg(long)]
        tpm: Option<u64>,
        /// Dollars this key may spend per --budget-period (in place of a
        /// `scope = "key"` budget).
        #[arg(long)]
        budget_usd: Option<f64>,
        /// day, month or total.
        #[arg(long, default_value = "month")]
        budget_period: String,
        #[command(flatten)]
        at: cli_keys::StateArgs,
    },
    /// List keys: id, name, role, first characters, status, dates.
    List {
        #[command(flatten)]
        at: cli_keys::StateArgs,
    },
    /// Revoke a key by id: it stops working at once.
    Revoke {
        id: String,
        #[command(flatten)]
        at: cli_keys::StateArgs,
    },
    /// Give a key a new secret (printed once); the old one stops working.
    Rotate {
        id: String,
        #[command(flatten)]
        at: cli_keys::StateArgs,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List built-in and directory plugins: kind, version, limits, status.
    List {
        /// Server config (for the plugins directory and limits).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Plugins directory (default: the config's, else ./plugins).
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load one component, check it, and print what describe() says.
    Check {
        file: PathBuf,
        /// A configuration (JSON) to validate with the plugin.
        #[arg(long)]
        with_config: Option<String>,
    },
    /// Write a new Rust plugin crate that depends on the SDK.
    New {
        name: String,
        #[arg(long, value_parser = ["guardrail", "provider", "router"])]
        kind: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Turn a core WebAssembly module (C, Zig, AssemblyScript, ...) into a
    /// component of one of Sluice's worlds.
    Componentize {
        module: PathBuf,
        #[arg(long, value_parser = ["guardrail", "provider", "router"])]
        world: String,
        #[arg(long, short)]
        output: PathBuf,
        /// WASI preview1 adapter (reactor) for modules that import
        /// `wasi_snapshot_preview1`.
        #[arg(long)]
        adapter: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a server config; print every problem with its path (exit 1 on any).
    Check { file: PathBuf },
}

mod cli;
mod cli_keys;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            host,
            port,
            plugins,
        } => serve(config, host, port, plugins),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(check(&file)),
        Command::Plugins { command } => cli::plugins(command),
        Command::Keys { command } => cli_keys::keys(command),
        Command::VirtualKeys { command } => cli_keys::virtual_keys(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[expect(clippy::print_stdout, reason = "`config check` reports to stdout")]
fn check(file: &std::path::Path) -> ExitCode {
    match ServerConfig::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems.0 {
                println!("{}: {p}", file.display());
            }
            println!("{} problem(s)", problems.0.len());
            ExitCode::FAILURE
        }
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the bound address is the one machine-readable stdout line"
)]
fn serve(
    config: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    plugins: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let loaded = match &config {
        Some(path) => ServerConfig::load(path),
        None => ServerConfig::defaults(),
    };
    let mut config = loaded.map_err(|p| {
        anyhow::anyhow!(
            "invalid config:\n  {}",
            p.0.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    })?;
    if let Some(h) = host {
        config.host = sluice::config::parse_host(&h)
            .with_context(|| format!("--host `{h}` is not an IP address"))?;
    }
    if let Some(p) = port {
        config.port = p;
    }
    if let Some(dir) = plugins {
        config.plugins_dir = dir;
    }
    sluice::telemetry::init(config.log_format, &config.log_level).map_err(anyhow::Error::msg)?;

    // Plugins load before the first request: compiling is CPU-heavy and runs
    // here, never on the request workers (reloads run on the watcher's thread).
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the set-up runtime")?;
    let (plugins, errors) = setup
        .block_on(sluice::plugins::host::open(
            &config.plugins,
            &config.plugins_dir,
        ))
        .map_err(anyhow::Error::msg)?;
    for e in &errors {
        tracing::warn!(error = %e, "plugin not loaded");
    }
    let mut problems = Vec::new();
    for (name, routing) in &config.configs {
        problems
            .extend(setup.block_on(sluice::plugins::host::check_config(&plugins, name, routing)));
    }
    if !problems.is_empty() {
        anyhow::bail!("invalid config:\n  {}", problems.join("\n  "));
    }
    let _watcher = sluice::plugins::host::watch(&config.plugins, &plugins);
    let (db, keys, vkeys) = open_keys(&config)?;
    let budgets = Arc::new(sluice::limits::budget::Budgets::default());
    budgets.restore(sluice::usage::budget_spend(&db, sluice::keys::now())?);
    let usage = Arc::new(sluice::usage::Recorder::start(
        &config.state_path,
        config.usage.clone(),
    )?);
    let pricing = Arc::new(sluice::usage::Pricing::new(config.pricing.clone()));
    let cache = Arc::new(sluice::cache::Cache::new(config.cache.clone()));
    if let Some(redis) = &config.redis
        && cache.semantic().is_some()
    {
        sluice::shared::tail_vectors(redis, cache.clone());
    }

    let addr = SocketAddr::new(config.host, config.port);
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let listeners =
        server::bind(addr, workers).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listeners.first().context("no listener")?.local_addr()?;
    tracing::info!(
        %bound,
        workers,
        providers = config.providers.slugs().count(),
        plugins = plugins.list().len(),
        plugins_dir = %config.plugins_dir.display(),
        "serving"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shared = server::Shared {
        plugins,
        targets: Arc::new(sluice::routing::Targets::new(config.breaker.clone())),
        tokens: Arc::default(),
        fetches: Arc::default(),
        guardrails: Arc::default(),
        keys,
        vkeys,
        rate: Arc::default(),
        budgets,
        usage: usage.clone(),
        pricing,
        cache: cache.clone(),
    };
    let mut running = Workers::start(Arc::new(config), shared, listeners, stopped)?;
    println!("sluice listening on http://{bound}");

    // The main thread only waits for a signal (or a worker that stopped early).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    runtime.block_on(async {
        tokio::select! {
            () = server::shutdown_signal() => {}
            () = running.any_exited() => tracing::error!("a worker stopped unexpectedly; shutting down"),
        }
    });
    let _ = stop.send(true);
    let joined = running.join();
    // Every answer has ended or been dropped: their records are queued.
    usage.close();
    let (written, dropped) = usage.counts();
    tracing::info!(
        records_written = written,
        records_dropped = dropped,
        "request log closed"
    );
    joined?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Opens the state database's gateway and virtual keys, keeps them fresh for
/// changes another process makes (`sluice keys ...`), and says at start-up how
/// requests are authenticated.
fn open_keys(
    config: &ServerConfig,
) -> anyhow::Result<(
    Arc<sluice::state::Db>,
    Arc<sluice::keys::Store>,
    Arc<sluice::keys::VirtualKeys>,
)> {
    let db = Arc::new(sluice::state::Db::open(&config.state_path)?);
    let keys = Arc::new(sluice::keys::Store::new(db.clone())?);
    let master = sluice::keys::MasterKey::from_env_or_file(config.master_key_file.as_deref())?;
    let vkeys = Arc::new(sluice::keys::VirtualKeys::new(db.clone(), master)?);
    let (weak_keys, weak_vkeys) = (Arc::downgrade(&keys), Arc::downgrade(&vkeys));
    std::thread::Builder::new()
        .name("sluice-keys".into())
        .spawn(move || {
            while let (Some(keys), Some(vkeys)) = (weak_keys.upgrade(), weak_vkeys.upgrade()) {
                if let Err(e) = keys.refresh().and_then(|()| vkeys.refresh()) {
                    tracing::warn!(error = %e, "cannot re-read the keys");
                }
                drop((keys, vkeys));
                std::thread::sleep(sluice::keys::RELOAD_EVERY);
            }
        })
        .context("cannot start the keys thread")?;
    let beyond_loopback = !config.host.is_loopback();
    match (config.auth_required(), beyond_loopback) {
        (false, true) => tracing::warn!(
            host = %config.host,
            "authentication is off ([auth] required = false) while listening beyond loopback: anyone who can reach this address can use the gateway"
        ),
        (true, _) if !keys.any_active() => tracing::warn!(
            state = %config.state_path.display(),
            "authentication is on and there is no active gateway key: every request will get 401; create one with `sluice keys create --role admin`"
        ),
        _ => {}
    }
    Ok((db, keys, vkeys))
}
