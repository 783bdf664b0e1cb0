//! One guardrail call (host conversion + a warm pooled instance), with a 1 KB and
//! a 64 KB request, for the Rust built-in (`blocklist`) and the Python,
//! JavaScript and C examples; plus a fresh instance per call for the Rust one;
//! and each of the `default` plugin's checks on 1 KB.
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
        group.bench_function(format!("{check}/1KB"), |b| {
            b.iter(|| {
                rt.block_on(default.check(&config, black_box(&one_kb)))
                    .expect("check")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
