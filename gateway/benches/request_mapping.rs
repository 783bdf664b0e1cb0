//! The per-request mapping work of the proxy, without I/O: deciding the target
//! from headers (and a config header), checking the body, building the upstream
//! request, and the routing engine's walk over a config with an upstream that
//! answers at once. `cargo bench -p sluice --bench request_mapping`.
#![expect(clippy::expect_used, reason = "benchmark set-up fails loudly")]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};
use sluice::config::ServerConfig;
use sluice::providers::{Endpoint, body};
use sluice::routing;

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly and precisely."},{"role":"user","content":"Summarise the following text in one sentence: Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur."}],"temperature":0.2,"max_tokens":64,"stream":false}"#;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    h
}

fn mapping(c: &mut Criterion) {
    let config = ServerConfig::defaults().expect("defaults");
    let cache = routing::ConfigCache::default();
    let plugins = sluice::plugins::Registry::without_plugins().expect("registry");
    let vkeys = sluice::keys::VirtualKeys::none().expect("no virtual keys");
    let no_cache = || routing::ConfigCache::default();
    let plain = headers(&[
        ("x-portkey-provider", "openai"),
        ("authorization", "Bearer sk-bench"),
    ]);
    let with_config = headers(&[(
        "x-portkey-config",
        r#"{"strategy":{"mode":"single"},"override_params":{"temperature":0},"targets":[{"provider":"azure-openai","api_key":"k","resource_name":"r","deployment_id":"d"}]}"#,
    )]);

    c.bench_function("plan/headers", |b| {
        b.iter(|| routing::plan(&config, &cache, &plugins, &vkeys, black_box(&plain), None))
    });
    c.bench_function("plan/config_header_cold", |b| {
        b.iter(|| {
            routing::plan(
                &config,
                &no_cache(),
                &plugins,
                &vkeys,
                black_box(&with_config),
                None,
            )
        })
    });
    c.bench_function("plan/config_header_cached", |b| {
        b.iter(|| {
            routing::plan(
                &config,
                &cache,
                &plugins,
                &vkeys,
                black_box(&with_config),
                None,
            )
        })
    });
    c.bench_function("body/peek_1kb", |b| {
        b.iter(|| body::peek(black_box(BODY)).map(|p| p.stream))
    });
    c.bench_function("body/override_1kb", |b| {
        let overrides = serde_json::json!({"model": "x", "temperature": 0});
        let overrides = overrides.as_object().expect("object");
        b.iter(|| {
            let mut map = body::parse_object(black_box(BODY)).expect("object");
            body::apply_overrides(&mut map, overrides);
            serde_json::to_vec(&map)
        })
    });

    let openai = routing::plan(&config, &cache, &plugins, &vkeys, &plain, None)
        .and_then(|p| p.first_target(&config, &plugins, &vkeys, &plain))
        .expect("plan");
    let azure = routing::plan(&config, &cache, &plugins, &vkeys, &with_config, None)
        .and_then(|p| p.first_target(&config, &plugins, &vkeys, &with_config))
        .expect("plan");
    for (name, target) in [("build/openai", openai), ("build/azure", azure)] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let call = target.call(
                    Endpoint::Chat,
                    Method::POST,
                    &plain,
                    None,
                    "",
                    Bytes::from_static(BODY),
                );
                target
                    .provider
                    .build_request(black_box(&call))
                    .now_or_never()
                    .map(|r| r.map(|r| r.url))
            })
        });
    }
}

/// An upstream that answers 200 at once: what is left is the engine's own work.
struct Instant200;

impl routing::Attempts for Instant200 {
    type Body = ();
    type Prepared = ();

    async fn prepare(
        &self,
        _: &routing::Target,
    ) -> Result<routing::Step<(), ()>, sluice::GatewayError> {
        Ok(routing::Step::Send(()))
    }

    async fn send(
        &self,
        _: &routing::Target,
        _: &(),
        _: &routing::Deadline,
        _: routing::InFlight,
    ) -> Result<http::Response<()>, sluice::GatewayError> {
        Ok(http::Response::new(()))
    }
}

fn engine(c: &mut Criterion) {
    let config = ServerConfig::defaults().expect("defaults");
    let cache = routing::ConfigCache::default();
    let plugins = sluice::plugins::Registry::without_plugins().expect("registry");
    let vkeys = sluice::keys::VirtualKeys::none().expect("no virtual keys");
    let targets = routing::Targets::default();
    let metadata = serde_json::Map::new();
    let leaf = |w: u32| format!(r#"{{"provider":"openai","weight":{w}}}"#);
    let tree = format!(
        r#"{{"strategy":{{"mode":"fallback"}},"retry":{{"attempts":2}},"targets":[
            {{"strategy":{{"mode":"loadbalance"}},"targets":[{},{},{}]}},
            {{"strategy":{{"mode":"loadbalance","balance":"least_in_flight"}},"targets":[{},{}]}}]}}"#,
        leaf(1),
        leaf(2),
        leaf(1),
        leaf(1),
        leaf(1)
    )
    .replace('\n', "");
    let cases = [
        (
            "engine/plain_headers",
            headers(&[
                ("x-portkey-provider", "openai"),
                ("authorization", "Bearer sk-bench"),
            ]),
        ),
        (
            "engine/one_target_config",
            headers(&[
                ("x-portkey-config", r#"{"provider":"openai"}"#),
                ("authorization", "Bearer sk-bench"),
            ]),
        ),
        (
            "engine/three_level_tree",
            headers(&[
                ("x-portkey-config", &tree),
                ("authorization", "Bearer sk-bench"),
            ]),
        ),
    ];
    for (name, h) in cases {
        c.bench_function(name, |b| {
            b.iter(|| {
                let plan =
                    routing::plan(&config, &cache, &plugins, &vkeys, &h, None).expect("plan");
                let engine = routing::Engine::new(
                    &config,
                    &plugins,
                    &vkeys,
                    &targets,
                    &h,
                    &plan.label,
                    plan.breakers(),
                    Endpoint::Chat,
                    &metadata,
                    "/v1/chat/completions",
                    BODY,
                    routing::Total::new(None, config.upstream.total_timeout),
                    &Instant200,
                );
                let tried = engine.run(&plan.config).now_or_never().expect("no waiting");
                black_box(tried.retries)
            })
        });
    }
}

/// Native adapters' request building (the OpenAI body read and rewritten in
/// the provider's format, SigV4 for Bedrock), and Vertex AI's token: a cache
/// hit, and the RSA-signed JWT a miss costs.
fn native(c: &mut Criterion) {
    let config = ServerConfig::defaults().expect("defaults");
    let cache = routing::ConfigCache::default();
    let plugins = sluice::plugins::Registry::without_plugins().expect("registry");
    let vkeys = sluice::keys::VirtualKeys::none().expect("no virtual keys");
    let none = HeaderMap::new();
    let cases = [
        (
            "build/anthropic",
            r#"{"provider":"anthropic","api_key":"k"}"#,
        ),
        ("build/google", r#"{"provider":"google","api_key":"k"}"#),
        ("build/cohere", r#"{"provider":"cohere","api_key":"k"}"#),
        (
            "build/bedrock_sigv4",
            r#"{"provider":"bedrock","aws_access_key_id":"AKID","aws_secret_access_key":"s","aws_region":"us-east-1"}"#,
        ),
        (
            "build/vertex_gemini",
            r#"{"provider":"vertex-ai","api_key":"ya29.t","vertex_project_id":"p"}"#,
        ),
    ];
    for (name, target) in cases {
        let h = headers(&[("x-portkey-config", target)]);
        let target = routing::plan(&config, &cache, &plugins, &vkeys, &h, None)
            .and_then(|p| p.first_target(&config, &plugins, &vkeys, &h))
            .expect("plan");
        c.bench_function(name, |b| {
            b.iter(|| {
                let call = target.call(
                    Endpoint::Chat,
                    Method::POST,
                    &none,
                    None,
                    "",
                    Bytes::from_static(BODY),
                );
                target
                    .provider
                    .build_request(black_box(&call))
                    .now_or_never()
                    .map(|r| r.map(|r| r.body.len()))
            })
        });
    }

    let account = serde_json::json!({
        "client_email": "bench@p.iam.gserviceaccount.com", "project_id": "p",
        "private_key": include_str!("../src/providers/vertex/test-key.pem"),
    });
    let h = headers(&[
        ("x-portkey-provider", "vertex-ai"),
        (
            "x-portkey-vertex-service-account-json",
            &account.to_string(),
        ),
    ]);
    let target = routing::plan(&config, &cache, &plugins, &vkeys, &h, None)
        .and_then(|p| p.first_target(&config, &plugins, &vkeys, &h))
        .expect("plan");
    let source = || {
        let call = target.call(
            Endpoint::Chat,
            Method::POST,
            &h,
            None,
            "",
            Bytes::from_static(BODY),
        );
        target
            .provider
            .token_source(&call)
            .expect("valid")
            .expect("a service account")
    };
    c.bench_function("vertex/token_miss_sign_jwt", |b| {
        b.iter(|| (source().request)().map(|r| r.body.len()))
    });
    let tokens = sluice::upstream::Tokens::default();
    let answer = || async {
        Ok((
            http::StatusCode::OK,
            Bytes::from_static(br#"{"access_token":"ya29.x","expires_in":3599}"#),
        ))
    };
    c.bench_function("vertex/token_hit", |b| {
        b.iter(|| {
            tokens
                .get("vertex-ai", source(), |_| answer())
                .now_or_never()
                .map(|t| t.map(|t| t.expose().len()))
        })
    });
}

criterion_group!(benches, mapping, engine, native);
criterion_main!(benches);
