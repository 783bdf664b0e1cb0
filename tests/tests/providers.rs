//! The provider conformance suite: every provider in the built-in catalog, every
//! endpoint, through the real binary. A provider added to `catalog.toml` runs
//! through all of it with no new test code.
//!
//! Each provider is pointed at the mock by a custom host, so what is checked is
//! everything the catalog entry decides: which endpoints it serves (the others
//! are a 400 that never reaches the upstream), the upstream path (with Azure's
//! deployment segment and `api-version`), and how the key is sent.

use serde_json::{Value, json};
use sluice::providers::{Auth, CATALOG, Endpoint, ProviderSpec, parse_catalog};
use sluice_tests::{Gateway, MockUpstream, client};

fn request(
    c: &reqwest::Client,
    gw: &Gateway,
    endpoint: Endpoint,
    config: &str,
) -> reqwest::RequestBuilder {
    let with = |r: reqwest::RequestBuilder| r.header("x-portkey-config", config);
    match endpoint {
        Endpoint::Models => with(c.get(gw.at("/v1/models"))),
        Endpoint::Proxy => with(c.get(gw.at("/v1/files?limit=1"))),
        Endpoint::Transcriptions | Endpoint::Translations => {
            let form = reqwest::multipart::Form::new()
                .text("model", "whisper")
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(vec![7u8; 100]).file_name("a.wav"),
                );
            with(
                c.post(gw.at(&format!("/v1{}", endpoint.path())))
                    .multipart(form),
            )
        }
        other => {
            let body = match other {
                Endpoint::Chat => {
                    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
                }
                Endpoint::Embeddings | Endpoint::Moderations => {
                    json!({"model": "m", "input": "hi"})
                }
                Endpoint::Speech => json!({"model": "m", "input": "hi", "voice": "alloy"}),
                _ => json!({"model": "m", "prompt": "hi"}),
            };
            with(c.post(gw.at(&format!("/v1{}", other.path()))).json(&body))
        }
    }
}

fn expected_path(spec: &ProviderSpec, endpoint: Endpoint) -> String {
    let deployment = match (&spec.deployment_path, endpoint.deployment_scoped()) {
        (Some(_), true) => "/deployments/dep-1",
        _ => "",
    };
    let tail = match endpoint {
        Endpoint::Proxy => "/files",
        other => other.path(),
    };
    format!("/p/{}{deployment}{tail}", spec.slug)
}

#[tokio::test]
async fn every_catalog_provider_serves_exactly_its_endpoints() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start("");
    let http = client();
    let specs = parse_catalog(CATALOG, "catalog").expect("catalog");
    assert!(specs.len() >= 24);
    let mut calls = 0;
    for spec in &specs {
        let key = format!("key-{}", spec.slug);
        let config = json!({
            "provider": spec.slug, "api_key": key, "custom_host": mock.url(&format!("/p/{}", spec.slug)),
            "resource_name": "res", "deployment_id": "dep-1", "api_version": "2024-10-21",
        })
        .to_string();
        for endpoint in Endpoint::ALL {
            let before = mock.received().len();
            let res = request(&http, &gw, endpoint, &config)
                .send()
                .await
                .expect("send");
            let status = res.status().as_u16();
            let label = format!("{} {}", spec.slug, endpoint.name());
            if !spec.supports(endpoint) {
                let body: Value = res.json().await.expect("json");
                assert_eq!(status, 400, "{label}: {body}");
                assert_eq!(body["error"]["code"], "unsupported_endpoint", "{label}");
                assert_eq!(
                    mock.received().len(),
                    before,
                    "{label}: must not reach the upstream"
                );
                continue;
            }
            assert_eq!(
                status,
                200,
                "{label}: {}",
                res.text().await.unwrap_or_default()
            );
            calls += 1;
            let got = mock.last().expect("received");
            assert_eq!(got.path, expected_path(spec, endpoint), "{label}");
            let expected_query = match (endpoint, spec.query.is_empty()) {
                (Endpoint::Proxy, true) => Some("limit=1".to_owned()),
                (Endpoint::Proxy, false) => Some("limit=1&api-version=2024-10-21".to_owned()),
                (_, true) => None,
                (_, false) => Some("api-version=2024-10-21".to_owned()),
            };
            assert_eq!(got.query, expected_query, "{label}");
            match &spec.auth {
                Auth::Bearer => assert_eq!(
                    got.headers["authorization"],
                    format!("Bearer {key}"),
                    "{label}"
                ),
                Auth::Header(name) => {
                    assert_eq!(got.headers[name], key.as_str(), "{label}");
                    assert!(!got.headers.contains_key("authorization"), "{label}");
                }
                Auth::None => assert!(
                    !got.headers.contains_key("authorization")
                        && got.headers.values().all(|v| v != key.as_str()),
                    "{label}: a keyless provider must not receive the key"
                ),
            }
        }
    }
    assert!(calls > 100, "the suite made {calls} calls");
}
