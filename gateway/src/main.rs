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
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a server config; print every problem with its path (exit 1 on any).
    Check { file: PathBuf },
}

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
        "{}",
        sluice::plugins::describe_dir(&config.plugins_dir)
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut running = Workers::start(Arc::new(config), listeners, stopped)?;
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
    running.join()?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
