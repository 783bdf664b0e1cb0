//! JWT verification against a JWK Set: pure functions of the token, the keys,
//! the policy and the time, so they run natively in tests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rsa::signature::Verifier;
use serde_json::{Map, Value};

/// The signing algorithms this plugin verifies (`none` never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs(Sha),
    Ps(Sha),
    Hs(Sha),
    Es256,
    Es384,
    EdDsa,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sha {
    S256,
    S384,
    S512,
}

impl Alg {
    pub fn parse(name: &str) -> Option<Alg> {
        let sha = |n: &str| match n {
            "256" => Some(Sha::S256),
            "384" => Some(Sha::S384),
            "512" => Some(Sha::S512),
            _ => None,
        };
        match name {
            "ES256" => Some(Alg::Es256),
            "ES384" => Some(Alg::Es384),
            "EdDSA" | "Ed25519" => Some(Alg::EdDsa),
            _ => match name.split_at_checked(2)? {
                ("RS", n) => sha(n).map(Alg::Rs),
                ("PS", n) => sha(n).map(Alg::Ps),
                ("HS", n) => sha(n).map(Alg::Hs),
                _ => None,
            },
        }
    }
}

/// One public (or, for `HS*`, shared) key.
#[derive(Debug)]
enum Key {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Oct(Vec<u8>),
}

#[derive(Debug)]
struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    key: Key,
}

/// A JWK Set's signing keys.
#[derive(Debug)]
pub struct Jwks(Vec<Jwk>);

fn b64(v: Option<&Value>, what: &str) -> Result<Vec<u8>, String> {
    let s = v
        .and_then(Value::as_str)
        .ok_or(format!("a key has no `{what}`"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("a key's `{what}` is not base64url"))
}

impl Jwks {
    /// Reads `{"keys": [...]}`. Keys for encryption (`use: enc`) and of
    /// unknown types are skipped; a set with no usable key is an error.
    pub fn parse(set: &Value) -> Result<Jwks, String> {
        let keys = set
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("a JWK Set is an object with a `keys` list")?;
        let mut out = Vec::new();
        for k in keys {
            if k.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            let curve = k.get("crv").and_then(Value::as_str);
            let key = match (k.get("kty").and_then(Value::as_str), curve) {
                (Some("RSA"), _) => {
                    let n = rsa::BigUint::from_bytes_be(&b64(k.get("n"), "n")?);
                    let e = rsa::BigUint::from_bytes_be(&b64(k.get("e"), "e")?);
                    Key::Rsa(
                        rsa::RsaPublicKey::new(n, e)
                            .map_err(|e| format!("an RSA key is not valid: {e}"))?,
                    )
                }
                (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                    let mut point = vec![4u8];
                    point.extend(b64(k.get("x"), "x")?);
                    point.extend(b64(k.get("y"), "y")?);
                    let bad = |_| format!("a {crv} key is not a point on the curve");
                    if crv == "P-256" {
                        Key::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad)?)
                    } else {
                        Key::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad)?)
                    }
                }
                (Some("OKP"), Some("Ed25519")) => {
                    let x: [u8; 32] = b64(k.get("x"), "x")?
                        .try_into()
                        .map_err(|_| "an Ed25519 key is not 32 bytes")?;
                    Key::Ed25519(
                        ed25519_dalek::VerifyingKey::from_bytes(&x)
                            .map_err(|_| "an Ed25519 key is not valid")?,
                    )
                }
                (Some("oct"), _) => Key::Oct(b64(k.get("k"), "k")?),
                _ => continue,
            };
            out.push(Jwk {
                kid: k.get("kid").and_then(Value::as_str).map(str::to_owned),
                alg: k.get("alg").and_then(Value::as_str).map(str::to_owned),
                key,
            });
        }
        if out.is_empty() {
            return Err("the JWK Set has no signing key this plugin can use".into());
        }
        Ok(Jwks(out))
    }
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct Policy {
    pub algorithms: Vec<Alg>,
    /// Seconds of clock skew forgiven on `exp`, `nbf` and `iat`.
    pub tolerance: u64,
    /// Oldest `iat` accepted, in seconds; requires `iat` when set.
    pub max_age: Option<u64>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

fn verifies(key: &Key, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
    use rsa::{pkcs1v15, pss};
    use sha2::{Sha256, Sha384, Sha512};
    macro_rules! rsa_with {
        ($scheme:ident, $k:expr, $sha:expr) => {{
            let Ok(s) = $scheme::Signature::try_from(sig) else {
                return false;
            };
            match $sha {
                Sha::S256 => $scheme::VerifyingKey::<Sha256>::new($k.clone()).verify(message, &s),
                Sha::S384 => $scheme::VerifyingKey::<Sha384>::new($k.clone()).verify(message, &s),
                Sha::S512 => $scheme::VerifyingKey::<Sha512>::new($k.clone()).verify(message, &s),
            }
            .is_ok()
        }};
    }
    match (key, alg) {
        (Key::Rsa(k), Alg::Rs(sha)) => rsa_with!(pkcs1v15, k, sha),
        (Key::Rsa(k), Alg::Ps(sha)) => rsa_with!(pss, k, sha),
        (Key::P256(k), Alg::Es256) => {
            p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(message, &s).is_ok())
        }
        (Key::P384(k), Alg::Es384) => {
            p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(message, &s).is_ok())
        }
        (Key::Ed25519(k), Alg::EdDsa) => {
            ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| k.verify(message, &s).is_ok())
        }
        (Key::Oct(secret), Alg::Hs(sha)) => {
            macro_rules! mac {
                ($d:ty) => {
                    Hmac::<$d>::new_from_slice(secret).is_ok_and(|mut m| {
                        m.update(message);
                        m.verify_slice(sig).is_ok()
                    })
                };
            }
            match sha {
                Sha::S256 => mac!(Sha256),
                Sha::S384 => mac!(Sha384),
                Sha::S512 => mac!(Sha512),
            }
        }
        _ => false,
    }
}

fn part(s: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("the token's {what} is not base64url"))
}

fn json_part(s: &str, what: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice(&part(s, what)?) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(format!("the token's {what} is not a JSON object")),
    }
}

/// Verifies `token` at `now` (seconds since the epoch); its claims, or why not.
pub fn verify(
    token: &str,
    keys: &Jwks,
    policy: &Policy,
    now: u64,
) -> Result<Map<String, Value>, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (three base64url parts joined by dots)".into());
    };
    let header = json_part(h, "header")?;
    let claims = json_part(p, "payload")?;
    let sig = part(s, "signature")?;
    let name = header.get("alg").and_then(Value::as_str).unwrap_or("none");
    let alg = Alg::parse(name)
        .filter(|a| policy.algorithms.contains(a))
        .ok_or(format!("algorithm `{name}` is not allowed"))?;
    let kid = header.get("kid").and_then(Value::as_str);
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
    let candidates = keys.0.iter().filter(|k| {
        kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
            && k.alg.as_deref().is_none_or(|a| a == name)
    });
    let mut tried = false;
    let mut valid = false;
    for k in candidates {
        tried = true;
        if verifies(&k.key, alg, signed, &sig) {
            valid = true;
            break;
        }
    }
    if !tried {
        return Err(match kid {
            Some(kid) => format!("no key with kid `{kid}` in the JWK Set"),
            None => "no key in the JWK Set fits the token".into(),
        });
    }
    if !valid {
        return Err("the signature does not verify".into());
    }
    let time = |claim: &str| claims.get(claim).and_then(Value::as_f64).map(|t| t as u64);
    let tol = policy.tolerance;
    if let Some(exp) = time("exp")
        && now >= exp.saturating_add(tol)
    {
        return Err("the token has expired".into());
    }
    if let Some(nbf) = time("nbf")
        && now.saturating_add(tol) < nbf
    {
        return Err("the token is not valid yet".into());
    }
    if let Some(max_age) = policy.max_age {
        let iat = time("iat").ok_or("the token has no `iat`, and its age is limited")?;
        if now > iat.saturating_add(max_age).saturating_add(tol) {
            return Err("the token is older than `maxTokenAge`".into());
        }
    }
    if let Some(iss) = &policy.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss)
    {
        return Err(format!("the issuer is not `{iss}`"));
    }
    if let Some(aud) = &policy.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == aud,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(format!("the audience is not `{aud}`"));
        }
    }
    Ok(claims)
}

/// A duration as jose reads `maxTokenAge`: seconds as a number, or `"90s"`,
/// `"30 m"`, `"2h"`, `"1d"`, `"1 week"`.
pub fn seconds(v: &Value) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let s = v
        .as_str()
        .ok_or("a duration is a number of seconds or a string like `1d`")?;
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("`{s}` is not a duration"))?;
    let per = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        "w" | "week" | "weeks" => 604_800.0,
        "y" | "yr" | "yrs" | "year" | "years" => 31_557_600.0,
        other => return Err(format!("`{other}` is not a unit of time")),
    };
    Ok((n * per) as u64)
}
