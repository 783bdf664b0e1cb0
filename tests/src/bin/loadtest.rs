//! The load harness: gateway overhead against a direct call to the same mock
//! upstream, in one run.
//!
//! ```text
//! cargo build --release -p sluice && cargo run --release -p sluice-tests --bin loadtest -- [--seconds 10] [--concurrency 1,16] [--guardrails 2 | --checks] [--tree]
//! ```
//!
//! With `--guardrails N`, each concurrency also runs through the gateway with N
//! before-request guardrail hooks (the built-in `blocklist` plugin, passing) and
//! reports the CPU per request against plain passthrough.
//!
//! With `--checks`, the guarded run uses five of the `default` plugin's checks
//! instead: `wordCount`, `pii` and `promptInjection` before the request,
//! `bannedWords` and `contains` on the answer (all passing).
//!
//! With `--config JSON`, the guarded run sends that config instead (to measure
//! one stage or one check alone).
//!
//! With `--request-bytes N`, every run sends the same request lengthened to N
//! bytes (its user message goes on): the guardrail targets are stated for a
//! 1 KB request (`--checks --request-bytes 1024`).
//!
//! With `--rounds N` (and `--guardrails`, `--checks` or `--config`), each
//! concurrency also alternates plain and guarded runs N times and reports the
//! median CPU per request of each and the median of the rounds' differences:
//! on a shared machine one run's CPU per request moves by ±10 µs, as much as
//! the effects worth measuring.
//!
//! With `--governance`, the guarded run goes to a second gateway with
//! authentication on (a gateway key in `x-portkey-api-key`), a `scope = "key"`
//! rate limit of requests and tokens too high to refuse anything, the request
//! log on, and the simple cache asked for with a different body each time (every
//! lookup misses, every answer is stored): what governance costs each request
//! (plain passthrough runs with the request log off). A last row then sends the
//! same body every time (cache hits) and compares a hit's CPU with a miss's.
//!
//! With `--tree`, each concurrency also runs a one-target config and a
//! three-level routing tree (fallback over loadbalance over targets, with
//! retries), both in `x-portkey-config`, and reports the tree's CPU per request
//! against the one-target config's.
//!
//! It starts a fast mock upstream in-process and the real `sluice` binary (the
//! release build next to this executable, or `$SLUICE_BIN`), then for each
//! concurrency drives the same chat request for a fixed time directly at the mock
//! and through the gateway, and prints requests per second, p50/p99 latency, the
//! gateway's CPU time per request (from /proc) and its RSS (idle and peak).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_tests::{Gateway, MockUpstream, config_with_mock};

/// The request every run sends: `load::BODY`, or `--request-bytes` long.
static BODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn body() -> &'static str {
    BODY.get_or_init(|| sluice_tests::load::BODY.to_owned())
}

struct Args {
    seconds: u64,
    concurrency: Vec<usize>,
    guardrails: usize,
    checks: bool,
    config: Option<String>,
    rounds: usize,
    tree: bool,
    governance: bool,
}

fn args() -> Result<Args> {
    let mut out = Args {
        seconds: 10,
        concurrency: vec![1, 16],
        guardrails: 0,
        checks: false,
        config: None,
        rounds: 0,
        tree: false,
        governance: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--tree" {
            out.tree = true;
            continue;
        }
        if a == "--governance" {
            out.governance = true;
            out.guardrails = out.guardrails.max(1);
            continue;
        }
        if a == "--checks" {
            out.checks = true;
            out.guardrails = 5;
            continue;
        }
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--seconds" => out.seconds = v.parse()?,
            "--guardrails" => out.guardrails = v.parse()?,
            "--rounds" => out.rounds = v.parse()?,
            "--request-bytes" => {
                let body = sluice_tests::load::body_of(v.parse()?);
                BODY.set(body)
                    .map_err(|_| anyhow::anyhow!("--request-bytes given twice"))?;
            }
            "--config" => {
                serde_json::from_str::<serde_json::Value>(&v).context("--config")?;
                out.config = Some(v);
                out.guardrails = out.guardrails.max(1);
            }
            "--concurrency" => {
                out.concurrency = v.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(out)
}

struct Run {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

/// Sends the load's request for `seconds` from `concurrency` tasks; with
/// `unique`, every body differs (a `user` member with a counter), so a cache
/// never answers.
async fn drive(
    url: &str,
    headers: &[(&str, &str)],
    concurrency: usize,
    seconds: u64,
    unique: bool,
) -> Run {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_owned();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < until {
                let t = Instant::now();
                let body = if unique {
                    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    body().replacen('{', &format!("{{\"user\":\"load-{n}\","), 1)
                } else {
                    body().to_owned()
                };
                let mut req = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body);
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                match req.send().await {
                    Ok(res) if res.status().is_success() => match res.bytes().await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    },
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    latencies.sort();
    Run {
        requests: latencies.len(),
        errors,
        elapsed: started.elapsed(),
        latencies,
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let (user, sys) = cpu_split(pid)?;
    Ok(user + sys)
}

/// One run through a gateway, with the gateway's CPU time per request.
struct Measured {
    run: Run,
    /// µs of user and of system time per request.
    user: f64,
    sys: f64,
}

impl Measured {
    fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// Drives a run at the gateway `pid` and measures its CPU over it.
async fn measured(
    url: &str,
    headers: &[(&str, &str)],
    concurrency: usize,
    seconds: u64,
    pid: u32,
    unique: bool,
) -> Result<Measured> {
    let (u0, s0) = cpu_split(pid)?;
    let run = drive(url, headers, concurrency, seconds, unique).await;
    let (u1, s1) = cpu_split(pid)?;
    let n = run.requests.max(1) as f64;
    Ok(Measured {
        user: (u1 - u0) / n * 1e6,
        sys: (s1 - s0) / n * 1e6,
        run,
    })
}

/// The gateway's CPU time per request over one run.
async fn cpu_per_req(
    url: &str,
    headers: &[(&str, &str)],
    concurrency: usize,
    seconds: u64,
    pid: u32,
    unique: bool,
) -> Result<f64> {
    Ok(measured(url, headers, concurrency, seconds, pid, unique)
        .await?
        .cpu())
}

/// A gateway with authentication and a `scope = "key"` rate limit on, and a
/// member key for it (made with `sluice keys create` in `state`).
fn governed_gateway(
    mock: &MockUpstream,
    state: &sluice_tests::TempDir,
) -> Result<(Gateway, String)> {
    let db = state.path.join("state.db");
    let out = std::process::Command::new(sluice_tests::gateway::binary())
        .args(["keys", "create", "--name", "load", "--json", "--state"])
        .arg(&db)
        .output()?;
    if !out.status.success() {
        bail!(
            "sluice keys create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let made: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let key = made["secret"].as_str().context("no secret")?.to_owned();
    let config = format!(
        "[log]\nlevel = \"warn\"\n[auth]\nrequired = true\n[state]\npath = \"{}\"\n[[rate_limits]]\nscope = \"key\"\nrpm = 100000000\ntpm = 100000000000\n",
        db.display()
    );
    Ok((
        Gateway::start_with(&config_with_mock(mock, &config), &[]),
        key,
    ))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn cpu_split(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat format")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = clock_ticks();
    Ok((
        fields[11].parse::<f64>()? / ticks,
        fields[12].parse::<f64>()? / ticks,
    ))
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[expect(clippy::print_stdout, reason = "the harness reports on stdout")]
fn main() -> Result<()> {
    let args = args()?;
    if std::env::var_os("SLUICE_BIN").is_none() {
        let exe = std::env::current_exe()?;
        let bin = exe.parent().context("exe dir")?.join("sluice");
        if !bin.exists() {
            bail!(
                "{} not found: run `cargo build --release -p sluice` first",
                bin.display()
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mock = MockUpstream::start_quiet().await?;
        // Plain passthrough: no request log either.
        let gw = Gateway::start_with(
            &config_with_mock(&mock, "[log]\nlevel = \"warn\"\n[usage]\nenabled = false\n"),
            &[],
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (idle_rss, _) = rss_mib(gw.pid())?;
        println!(
            "gateway pid {} idle RSS {idle_rss:.1} MiB; {} s per run; a request of {} bytes",
            gw.pid(),
            args.seconds,
            body().len()
        );
        let direct_url = mock.url("/v1/chat/completions");
        let gw_url = gw.at("/v1/chat/completions");
        let headers = [
            ("x-portkey-provider", "mock"),
            ("authorization", "Bearer sk-load"),
        ];
        let hooks: Vec<serde_json::Value> = (0..args.guardrails)
            .map(|i| serde_json::json!({"id": format!("g{i}"), "deny": true, "blocklist": {"words": ["forbidden"]}}))
            .collect();
        let guarded_config = if let Some(config) = &args.config {
            config.clone()
        } else if args.checks {
            sluice_tests::load::checks_config("mock").to_string()
        } else {
            serde_json::json!({"provider": "mock", "input_guardrails": hooks}).to_string()
        };
        // --governance: a second gateway with keys and a rate limit on.
        let state = sluice_tests::TempDir::new();
        let governed = if args.governance {
            Some(governed_gateway(&mock, &state)?)
        } else {
            None
        };
        let key = governed.as_ref().map(|(_, k)| k.clone()).unwrap_or_default();
        let cached_config =
            serde_json::json!({"provider": "mock", "cache": {"mode": "simple", "max_age": 3600}})
                .to_string();
        // Governance sends a different body every time: every lookup misses and
        // every answer is stored (the cache's whole cost on the way through).
        let unique = args.governance;
        let guarded_headers = if args.governance {
            vec![
                ("x-portkey-config", cached_config.as_str()),
                ("authorization", "Bearer sk-load"),
                ("x-portkey-api-key", key.as_str()),
            ]
        } else {
            vec![
                ("x-portkey-config", guarded_config.as_str()),
                ("authorization", "Bearer sk-load"),
            ]
        };
        let guarded = guarded_headers.as_slice();
        let (guarded_url, guarded_pid) = match &governed {
            Some((g, _)) => (g.at("/v1/chat/completions"), g.pid()),
            None => (gw.at("/v1/chat/completions"), gw.pid()),
        };
        let single_config = serde_json::json!({"provider": "mock"}).to_string();
        let leaf = |w: u32| serde_json::json!({"provider": "mock", "weight": w});
        let tree_config = serde_json::json!({
            "strategy": {"mode": "fallback"},
            "retry": {"attempts": 2},
            "targets": [
                {"strategy": {"mode": "loadbalance"}, "targets": [leaf(1), leaf(2), leaf(1)]},
                {"strategy": {"mode": "loadbalance", "balance": "least_in_flight"}, "targets": [leaf(1), leaf(1)]}
            ]
        })
        .to_string();
        let single = [
            ("x-portkey-config", single_config.as_str()),
            ("authorization", "Bearer sk-load"),
        ];
        let tree = [
            ("x-portkey-config", tree_config.as_str()),
            ("authorization", "Bearer sk-load"),
        ];
        // Warm every path (connection pools, allocator, plugin instances).
        drive(&direct_url, &[], 4, 1, false).await;
        drive(&gw_url, &headers, 4, 1, false).await;
        if args.guardrails > 0 {
            drive(&guarded_url, guarded, 4, 1, unique).await;
        }
        if args.tree {
            drive(&gw_url, &single, 4, 1, false).await;
            drive(&gw_url, &tree, 4, 1, false).await;
        }

        println!();
        // "harness CPU/req" is this process (load generator + mock upstream): a
        // yardstick for what one plain HTTP exchange costs on this machine.
        println!(
            "| concurrency | path | rps | p50 | p99 | errors | gateway CPU/req | harness CPU/req | gateway peak RSS |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let me = std::process::id();
        for &c in &args.concurrency {
            let h0 = cpu_seconds(me)?;
            let direct = drive(&direct_url, &[], c, args.seconds, false).await;
            let direct_harness = (cpu_seconds(me)? - h0) / direct.requests.max(1) as f64 * 1e6;
            let (user0, sys0) = cpu_split(gw.pid())?;
            let h0 = cpu_seconds(me)?;
            let through = drive(&gw_url, &headers, c, args.seconds, false).await;
            let through_harness = (cpu_seconds(me)? - h0) / through.requests.max(1) as f64 * 1e6;
            let (user1, sys1) = cpu_split(gw.pid())?;
            let n = through.requests.max(1) as f64;
            let (user, sys) = ((user1 - user0) / n * 1e6, (sys1 - sys0) / n * 1e6);
            let cpu = (user1 - user0) + (sys1 - sys0);
            let (_, peak) = rss_mib(gw.pid())?;
            let per_req = cpu / through.requests.max(1) as f64 * 1e6;
            println!(
                "| {c} | direct | {:.0} | {} | {} | {} | | {direct_harness:.1} µs | |",
                direct.rps(),
                ms(direct.pct(0.5)),
                ms(direct.pct(0.99)),
                direct.errors
            );
            println!(
                "| {c} | gateway | {:.0} | {} | {} | {} | {per_req:.1} µs ({user:.0} user + {sys:.0} sys) | {through_harness:.1} µs | {peak:.1} MiB |",
                through.rps(),
                ms(through.pct(0.5)),
                ms(through.pct(0.99)),
                through.errors
            );
            println!(
                "| {c} | ratio | {:.2}x | +{} | +{} | | | | |",
                through.rps() / direct.rps().max(1e-9),
                ms(through.pct(0.5).saturating_sub(direct.pct(0.5))),
                ms(through.pct(0.99).saturating_sub(direct.pct(0.99))),
            );
            if args.guardrails > 0 {
                let m = measured(&guarded_url, guarded, c, args.seconds, guarded_pid, unique).await?;
                let (run, guarded_per_req) = (&m.run, m.cpu());
                println!(
                    "| {c} | gateway + {} | {:.0} | {} | {} | {} | {guarded_per_req:.1} µs ({:.0} user + {:.0} sys; {:.2}x plain) | | |",
                    if args.governance {
                        "key, limits, log, cache (misses)".to_owned()
                    } else {
                        format!("{} guardrails", args.guardrails)
                    },
                    run.rps(),
                    ms(run.pct(0.5)),
                    ms(run.pct(0.99)),
                    run.errors,
                    m.user,
                    m.sys,
                    guarded_per_req / per_req.max(1e-9),
                );
            }
            if args.guardrails > 0 && args.rounds > 0 {
                let (mut plain, mut with_hooks, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..args.rounds {
                    let p = cpu_per_req(&gw_url, &headers, c, args.seconds, gw.pid(), false).await?;
                    let g = cpu_per_req(&guarded_url, guarded, c, args.seconds, guarded_pid, unique)
                        .await?;
                    plain.push(p);
                    with_hooks.push(g);
                    diffs.push(g - p);
                }
                // In the rounds' order (the median sorts them).
                let each = diffs
                    .iter()
                    .map(|d| format!("{d:+.0}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                println!(
                    "| {c} | {} rounds of {} s, medians | | | | | plain {:.1} µs, guarded {:.1} µs: +{:.1} µs (rounds' differences {each}) | | |",
                    args.rounds,
                    args.seconds,
                    median(&mut plain),
                    median(&mut with_hooks),
                    median(&mut diffs),
                );
            }
        }
        if args.governance {
            // The same body every time: after the first, every answer is a hit.
            for &c in &args.concurrency {
                let m = measured(&guarded_url, guarded, c, args.seconds, guarded_pid, false).await?;
                let (run, hit) = (&m.run, m.cpu());
                let miss =
                    cpu_per_req(&guarded_url, guarded, c, args.seconds, guarded_pid, true).await?;
                println!(
                    "| {c} | governed, cache hits | {:.0} | {} | {} | {} | {hit:.1} µs (a miss: {miss:.1} µs; {:.2}x) | | |",
                    run.rps(),
                    ms(run.pct(0.5)),
                    ms(run.pct(0.99)),
                    run.errors,
                    hit / miss.max(1e-9),
                );
            }
        }
        if args.tree {
            for &c in &args.concurrency {
                let mut per_req = Vec::new();
                for (label, h) in [("one-target config", &single), ("3-level tree", &tree)] {
                    let m = measured(&gw_url, h, c, args.seconds, gw.pid(), false).await?;
                    let (run, cpu) = (&m.run, m.cpu());
                    let ratio = per_req.first().map_or(1.0, |base: &f64| cpu / base.max(1e-9));
                    per_req.push(cpu);
                    println!(
                        "| {c} | gateway, {label} | {:.0} | {} | {} | {} | {cpu:.1} µs ({ratio:.2}x one target) | | |",
                        run.rps(),
                        ms(run.pct(0.5)),
                        ms(run.pct(0.99)),
                        run.errors,
                    );
                }
            }
        }
        let (rss, peak) = rss_mib(gw.pid())?;
        println!();
        println!("gateway RSS idle {idle_rss:.1} MiB, after load {rss:.1} MiB, peak {peak:.1} MiB");
        Ok(())
    })
}
