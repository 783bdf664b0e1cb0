//! Randomised robustness of the request mapping (a stable-toolchain stand-in for
//! a fuzz target; cargo-fuzz needs nightly). Mutated bodies, header values and
//! configs go through the same functions the pipeline calls; none may panic, and
//! every refusal must be a client error (4xx) with a message.

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};
use sluice::config::ServerConfig;
use sluice::providers::{Endpoint, body};
use sluice::routing::{self, ConfigCache};

/// xorshift64*: deterministic, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    r#"{"provider":"openai","api_key":"k","override_params":{"model":"m"}}"#,
    r#"{"strategy":{"mode":"single"},"targets":[{"provider":"azure-openai","resource_name":"r","deployment_id":"d"}]}"#,
    r#"{"strategy":{"mode":"conditional","conditions":[{"query":{"metadata.a":{"$eq":"b"}},"then":"x"}],"default":"x"},"targets":[{"name":"x","provider":"groq"}]}"#,
];
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "-1",
    "1e309",
    "\"provider\"",
    "\"targets\"",
    "\"strategy\"",
    "\"mode\"",
    "\"custom_host\"",
    "\"http://10.0.0.1\"",
    "\"ftp://x\"",
    "\\u0000",
    "\u{e9}",
    "\"weight\"",
    "\"retry\"",
    "{\"attempts\":11}",
    "\"resource_name\"",
    "\"evil.com/#\"",
];

fn mutate(rng: &mut Rng, seed: &str) -> Vec<u8> {
    let mut text = seed.to_owned();
    for _ in 0..1 + rng.below(4) {
        let mut at = rng.below(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        match rng.below(3) {
            0 => text.insert_str(at, TOKENS[rng.below(TOKENS.len())]),
            1 => {
                let mut end = (at + rng.below(8)).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, "");
            }
            _ => text.truncate(at),
        }
    }
    text.into_bytes()
}

#[test]
fn mutated_inputs_never_panic_and_are_refused_as_client_errors() {
    let config = ServerConfig::defaults().expect("defaults");
    let cache = ConfigCache::default();
    let plugins = sluice::plugins::Registry::without_plugins().expect("registry");
    let vkeys = sluice::keys::VirtualKeys::none().expect("no virtual keys");
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut accepted = 0;
    for round in 0..20_000 {
        let seed = SEEDS[rng.below(SEEDS.len())];
        // A quarter of the rounds keep a valid input, so the success path runs too.
        let bytes = if rng.below(4) == 0 {
            seed.as_bytes().to_vec()
        } else {
            mutate(&mut rng, seed)
        };

        if let Err(e) = body::peek(&bytes) {
            assert!(e.status().is_client_error(), "round {round}: {e}");
        }

        let mut headers = HeaderMap::new();
        let Ok(value) = HeaderValue::from_bytes(&bytes) else {
            continue;
        };
        let name = [
            "x-portkey-config",
            "x-portkey-metadata",
            "x-portkey-provider",
            "x-portkey-azure-resource-name",
        ][rng.below(4)];
        headers.insert(name, value);
        if name != "x-portkey-provider" {
            headers.insert(
                "x-portkey-provider",
                HeaderValue::from_static("azure-openai"),
            );
        }
        let _ = routing::headers_metadata(&headers)
            .map_err(|e| assert!(e.status().is_client_error(), "{e}"));
        match routing::plan(&config, &cache, &plugins, &vkeys, &headers, None)
            .and_then(|p| p.first_target(&config, &plugins, &vkeys, &headers))
        {
            Err(e) => assert!(e.status().is_client_error(), "round {round}: {e}"),
            Ok(target) => {
                let call = target.call(
                    Endpoint::ALL[rng.below(Endpoint::ALL.len())],
                    Method::POST,
                    &headers,
                    None,
                    "/x",
                    Bytes::from(bytes.clone()),
                );
                match target
                    .provider
                    .build_request(&call)
                    .now_or_never()
                    .expect("catalog providers build without waiting")
                {
                    Ok(req) => {
                        accepted += 1;
                        assert!(
                            matches!(req.url.scheme(), "http" | "https" | "ftp"),
                            "{}",
                            req.url
                        );
                    }
                    Err(e) => assert!(e.status().is_client_error(), "round {round}: {e}"),
                }
            }
        }
    }
    assert!(
        accepted > 300,
        "the mutations should still leave valid requests ({accepted})"
    );
}
