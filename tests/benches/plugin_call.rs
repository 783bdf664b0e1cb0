//! One guardrail call (host conversion + a warm pooled instance), with a 1 KB and
//! a 64 KB request, for the Rust built-in (`blocklist`) and the Python,
//! JavaScript and C examples; plus a fresh instance per call for the Rust one;
//! each of the `default` plugin's checks on 1 KB; and whole guardrail stages
//! (the load harness's three input checks and two output checks) against the
//! same checks called one by one, which is the stages' own cost.
//!
//! The `…/cold` variants evict the caches (8 MiB walked) before each call, as
//! a request's network work does between its stages: the difference to the
//! hot number is what cold caches cost the call itself.
//!
//! ```text
//! cargo bench -p sluice-tests --bench plugin_call
//! ```
//! The examples are built by their scripts first (see tests/run.sh for their
//! toolchains); a language whose build fails is skipped with a note.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::plugins::{
    CheckInput, EngineLimits, Isolation, Limits, Plugin, PluginEngine, Source, load,
};
use sluice::providers::Endpoint;

fn input(bytes: usize) -> CheckInput {
    let sentence = "The quick brown fox jumps over the lazy dog and keeps running. ";
    let text: String = sentence.repeat(bytes / sentence.len() + 1)[..bytes].to_owned();
    CheckInput {
        after_response: false,
        endpoint: Endpoint::Chat,
        provider: "openai".into(),
        model: Some("gpt-4o".into()),
        metadata: vec![("user".into(), "u1".into())],
        segments: vec![("system".into(), "Be brief.".into()), ("user".into(), text)],
        body: None,
        grants: Default::default(),
    }
}

fn plugin(
    engine: &PluginEngine,
    rt: &tokio::runtime::Runtime,
    path: &PathBuf,
    limits: Limits,
) -> Plugin {
    let bytes = std::fs::read(path).expect("component");
    rt.block_on(load(
        engine,
        "bench",
        &bytes,
        Source::File(path.clone()),
        limits,
    ))
    .expect("load")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = sluice_tests::gateway::cache_dir();
    let engine = PluginEngine::new(&EngineLimits::default(), Some(cache)).expect("engine");
    let mut cases: Vec<(&str, PathBuf, &str)> = vec![(
        "rust",
        PathBuf::from(sluice_tests::fixtures::BLOCKLIST),
        r#"{"words": ["forbidden"]}"#,
    )];
    for (lang, name, config) in [
        ("python", "pii-email", "{}"),
        ("javascript", "word-count", r#"{"max": 100000}"#),
        ("c", "char-limit", r#"{"max": 1000000}"#),
    ] {
        match std::panic::catch_unwind(|| sluice_tests::examples::build(lang, name)) {
            Ok(path) => cases.push((lang, path, config)),
            Err(_) => eprintln!("skipping {lang}: its build failed"),
        }
    }
    let mut group = c.benchmark_group("guardrail_call");
    for (lang, path, config) in &cases {
        let p = plugin(&engine, &rt, path, Limits::default());
        rt.block_on(p.ensure_valid(config)).expect("valid config");
        for kb in [1usize, 64] {
            let input = input(kb * 1024);
            group.bench_function(format!("{lang}/{kb}KB"), |b| {
                b.iter(|| {
                    rt.block_on(p.check(config, black_box(&input)))
                        .expect("check")
                })
            });
        }
    }
    let fresh = plugin(
        &engine,
        &rt,
        &PathBuf::from(sluice_tests::fixtures::BLOCKLIST),
        Limits {
            isolation: Isolation::PerRequest,
            ..Limits::default()
        },
    );
    let one_kb = input(1024);
    group.bench_function("rust/1KB/fresh-instance", |b| {
        b.iter(|| {
            rt.block_on(fresh.check(r#"{"words": ["forbidden"]}"#, black_box(&one_kb)))
                .expect("check")
        })
    });
    group.finish();

    // The `default` plugin's checks, each on a 1 KB request (target: 10 µs).
    let default = plugin(
        &engine,
        &rt,
        &PathBuf::from(sluice_tests::fixtures::DEFAULT),
        Limits::default(),
    );
    let mut group = c.benchmark_group("default_check");
    let mut evictor = Evictor::new();
    for (check, parameters) in [
        ("wordCount", r#"{"maxWords": 500}"#),
        (
            "contains",
            r#"{"words": ["forbidden"], "operator": "none"}"#,
        ),
        ("regexMatch", r#"{"rule": "\\border-\\d+\\b", "not": true}"#),
        ("bannedWords", r#"{"words": ["darn", "heck"]}"#),
        ("pii", "{}"),
        ("promptInjection", "{}"),
        ("jsonKeys", r#"{"keys": ["q"], "operator": "none"}"#),
    ] {
        let config = format!(r#"{{"check": "{check}", "parameters": {parameters}}}"#);
        rt.block_on(default.ensure_valid(&config))
            .expect("valid config");
        let call = || {
            rt.block_on(default.check(&config, black_box(&one_kb)))
                .expect("check");
        };
        group.bench_function(format!("{check}/1KB"), |b| b.iter(call));
        // The floor of a call met with cold caches, as a request's first
        // call is.
        if check == "jsonKeys" {
            group.bench_function(format!("{check}/1KB/cold"), |b| evictor.bench(b, call));
        }
    }
    group.finish();
    stages(c, &rt, &engine, &mut evictor);
}

/// Evicts the caches and TLBs a request's network work would have: the loop
/// walks 8 MiB (8× this machine's L2), a line at a time.
struct Evictor(Vec<u8>);

impl Evictor {
    fn new() -> Self {
        Self(vec![1; 8 << 20])
    }

    fn evict(&mut self) {
        for i in (0..self.0.len()).step_by(64) {
            self.0[i] = self.0[i].wrapping_add(1);
        }
        black_box(&self.0);
    }

    /// Times `routine` alone, each iteration after an eviction.
    fn bench(&mut self, b: &mut criterion::Bencher<'_>, mut routine: impl FnMut()) {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                self.evict();
                let started = std::time::Instant::now();
                routine();
                total += started.elapsed();
            }
            total
        })
    }
}

/// The load harness's `--checks` hooks, through a registry of the built-ins:
/// each stage whole, and its checks called directly.
fn stages(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    engine: &PluginEngine,
    evictor: &mut Evictor,
) {
    use sluice::config::routing::{Hooks, parse_json};
    use sluice::guardrails::{self, Context, Stats};
    use std::sync::Arc;

    let registry = Arc::new(sluice::plugins::Registry::new(
        engine.clone(),
        PathBuf::new(),
        Limits::default(),
        Default::default(),
    ));
    let errors = rt.block_on(registry.load_builtins());
    assert!(errors.is_empty(), "{errors:?}");
    let hooks_of = |config: &serde_json::Value| {
        parse_json(&config.to_string(), &|_| true)
            .expect("config")
            .root
            .inherit
            .hooks
    };
    let hooks = hooks_of(&sluice_tests::load::checks_config("openai"));
    let metadata = serde_json::Map::new();
    let stats = Arc::new(Stats::default());
    let ctx = Context {
        endpoint: Endpoint::Chat,
        provider: "openai",
        metadata: &metadata,
        plugins: &registry,
        stats: &stats,
        grants: Default::default(),
    };
    let answer = sluice_tests::mock::chat_completion("gpt-load");
    let mut group = c.benchmark_group("guardrail_stage");
    let answer_bytes = answer.to_string();
    let before = |hooks: &Hooks| {
        let (stage, _) = rt
            .block_on(guardrails::before_request_bytes(
                hooks,
                &ctx,
                black_box(sluice_tests::load::BODY.as_bytes()),
                guardrails::BodyText::request(black_box(sluice_tests::load::BODY.as_bytes()))
                    .expect("reads"),
            ))
            .expect("stage");
        assert!(!stage.failed);
    };
    let after = |hooks: &Hooks| {
        let (stage, _) = rt
            .block_on(guardrails::after_response_bytes(
                hooks,
                &ctx,
                black_box(answer_bytes.as_bytes()),
            ))
            .expect("a JSON answer")
            .expect("stage");
        assert!(!stage.failed);
    };
    // A hook without checks: the stage's own machinery alone.
    let empty = hooks_of(&serde_json::json!({
        "provider": "openai",
        "before_request_hooks": [{"id": "b", "checks": []}],
        "after_request_hooks": [{"id": "a", "checks": []}],
    }));
    for (name, hooks) in [("", &hooks), ("/no-checks", &empty)] {
        let (before_name, after_name) = if name.is_empty() {
            ("before/3-checks".to_owned(), "after/2-checks".to_owned())
        } else {
            (format!("before{name}"), format!("after{name}"))
        };
        group.bench_function(&before_name, |b| b.iter(|| before(hooks)));
        group.bench_function(format!("{before_name}/cold"), |b| {
            evictor.bench(b, || before(hooks))
        });
        group.bench_function(&after_name, |b| b.iter(|| after(hooks)));
        group.bench_function(format!("{after_name}/cold"), |b| {
            evictor.bench(b, || after(hooks))
        });
    }
    // The same checks, each called directly on the plugin with the stage's
    // input: what the stages add is the difference.
    let default = registry.get("default").expect("default");
    let direct = |after: bool, segments: Vec<(String, String)>| CheckInput {
        after_response: after,
        endpoint: Endpoint::Chat,
        provider: "openai".into(),
        model: Some("gpt-load".into()),
        metadata: Vec::new(),
        segments,
        body: None,
        grants: Default::default(),
    };
    let request: serde_json::Value = serde_json::from_str(sluice_tests::load::BODY).expect("json");
    let texts = |v: &serde_json::Value, pointer: &str| -> Vec<(String, String)> {
        v.pointer(pointer)
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .map(|m| {
                let m = m.get("message").unwrap_or(m);
                (
                    m["role"].as_str().unwrap_or("user").to_owned(),
                    m["content"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    for (after, input, stage_hooks) in [
        (
            false,
            direct(false, texts(&request, "/messages")),
            &hooks.before,
        ),
        (true, direct(true, texts(&answer, "/choices")), &hooks.after),
    ] {
        let configs: Vec<String> = stage_hooks
            .iter()
            .flat_map(|h| &h.checks)
            .map(|c| c.namespaced.as_ref().expect("default.X").parameters.clone())
            .collect();
        for config in &configs {
            rt.block_on(default.ensure_valid(config)).expect("valid");
        }
        let name = if after {
            "after/2-checks-direct"
        } else {
            "before/3-checks-direct"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                for config in &configs {
                    rt.block_on(default.check(config, black_box(&input)))
                        .expect("check");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
