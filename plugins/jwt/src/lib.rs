//! `jwt` (`default.jwt`): verifies a JSON Web Token sent in a request header,
//! with Portkey's parameters.
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `jwksUri` | | where the JWK Set is; the **host** fetches it (`host.fetch`) and keeps it `cacheMaxAge` seconds |
//! | `jwks` | | the JWK Set itself (`{"keys": [...]}`), instead of `jwksUri` |
//! | `headerKey` | `Authorization` | the header holding the token (`Bearer ` is stripped) |
//! | `cacheMaxAge` | 86400 | seconds the fetched JWK Set is reused |
//! | `clockTolerance` | 5 | seconds of clock skew forgiven |
//! | `maxTokenAge` | `1d` | oldest `iat` accepted (a token must carry `iat`), as jose reads it; `null` for no limit |
//! | `algorithms` | `["RS256"]` | accepted: `RS*`, `PS*`, `ES256`, `ES384`, `EdDSA`, `HS*` (with `oct` keys) |
//! | `issuer`, `audience` | | when given, `iss` must equal it and `aud` contain it |
//!
//! A missing, malformed, expired or badly signed token fails the check; a JWK
//! Set that cannot be fetched is a plugin error (the hook's `on_error`
//! decides). Before the request only: after it, the check passes.

mod token;

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_plugin_sdk::guardrail::*;

use token::{Alg, Jwks, Policy};

/// Where the keys come from.
#[derive(Debug)]
enum Keys {
    Inline(Jwks),
    Fetched { uri: String, cache_seconds: u32 },
}

#[derive(Debug)]
pub struct Config {
    keys: Keys,
    header: String,
    policy: Policy,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    jwks_uri: Option<String>,
    jwks: Option<Value>,
    header_key: Option<String>,
    cache_max_age: Option<u32>,
    clock_tolerance: Option<u64>,
    #[serde(default = "one_day")]
    max_token_age: Value,
    algorithms: Option<Vec<String>>,
    issuer: Option<String>,
    audience: Option<String>,
}

fn one_day() -> Value {
    Value::String("1d".into())
}

impl Config {
    fn read(raw: Raw) -> Result<Config, String> {
        let keys = match (raw.jwks_uri, raw.jwks) {
            (Some(_), Some(_)) => return Err("give `jwksUri` or `jwks`, not both".into()),
            (None, None) => return Err("give `jwksUri` (fetched by the gateway) or `jwks`".into()),
            (None, Some(set)) => Keys::Inline(Jwks::parse(&set)?),
            (Some(uri), None) => {
                if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                    return Err("`jwksUri` must be an http or https URL".into());
                }
                Keys::Fetched {
                    uri,
                    cache_seconds: raw.cache_max_age.unwrap_or(86_400),
                }
            }
        };
        let names = raw.algorithms.unwrap_or_else(|| vec!["RS256".into()]);
        let algorithms = names
            .iter()
            .map(|n| Alg::parse(n).ok_or(format!("algorithm `{n}` is not supported")))
            .collect::<Result<Vec<_>, _>>()?;
        if algorithms.is_empty() {
            return Err("`algorithms` must name at least one algorithm".into());
        }
        Ok(Config {
            keys,
            header: raw
                .header_key
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "Authorization".into()),
            policy: Policy {
                algorithms,
                tolerance: raw.clock_tolerance.unwrap_or(5),
                max_age: match raw.max_token_age {
                    Value::Null => None,
                    v => Some(token::seconds(&v).map_err(|e| format!("`maxTokenAge`: {e}"))?),
                },
                issuer: raw.issuer,
                audience: raw.audience,
            },
        })
    }
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Config::read(Raw::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The token in a header's value: `Bearer X` or `X`.
fn bearer(value: &str) -> &str {
    let v = value.trim();
    match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => v,
    }
}

/// The JWK Set at `uri`, through the host (which keeps it `cache_seconds`).
fn fetch_jwks(uri: &str, cache_seconds: u32) -> Result<Jwks, Error> {
    let answer = fetch(&HttpRequest {
        method: "GET".into(),
        url: uri.to_owned(),
        headers: vec![Pair {
            key: "accept".into(),
            value: "application/json".into(),
        }],
        body: Vec::new(),
        timeout_ms: 3000,
        cache_seconds,
    })
    .map_err(|e| Error::Internal(format!("cannot fetch the JWK Set at {uri}: {e}")))?;
    if !(200..300).contains(&answer.status) {
        return Err(Error::Internal(format!(
            "the JWK Set at {uri} answered {}",
            answer.status
        )));
    }
    let set: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| Error::Internal(format!("the JWK Set at {uri} is not JSON: {e}")))?;
    Jwks::parse(&set).map_err(|e| Error::Internal(format!("{uri}: {e}")))
}

struct Jwt;

impl Guardrail for Jwt {
    type Config = Config;
    const DESCRIPTION: &'static str =
        "Verifies a JWT from a request header against a JWK Set (given, or fetched by the gateway)";

    fn check(config: &Config, input: &CheckInput) -> Result<Verdict, Error> {
        if input.stage == Stage::AfterResponse {
            return Ok(Verdict::pass());
        }
        let Some(value) = request_header(&config.header) else {
            return Ok(Verdict::fail(format!(
                "no token in the `{}` header",
                config.header
            )));
        };
        let fetched;
        let keys = match &config.keys {
            Keys::Inline(keys) => keys,
            Keys::Fetched { uri, cache_seconds } => {
                fetched = fetch_jwks(uri, *cache_seconds)?;
                &fetched
            }
        };
        let now = now_millis() / 1000;
        Ok(
            match token::verify(bearer(&value), keys, &config.policy, now) {
                Ok(claims) => Verdict::pass().with_data(&json!({
                    "sub": claims.get("sub"),
                    "iss": claims.get("iss"),
                    "exp": claims.get("exp"),
                })),
                Err(why) => Verdict::fail(format!("JWT rejected: {why}")),
            },
        )
    }
}

sluice_plugin_sdk::export_guardrail!(Jwt);

#[cfg(test)]
mod tests;
