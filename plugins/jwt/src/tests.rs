//! Tokens signed here with every supported algorithm, verified natively.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::json;

use super::token::{self, Alg, Jwks, Policy, Sha};
use super::*;

const NOW: u64 = 1_800_000_000;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::from_pkcs8_pem(include_str!(
        "../../../gateway/src/providers/vertex/test-key.pem"
    ))
    .expect("test key")
}

/// A token with `header` and `claims`, signed by `sign`.
fn token(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(signed.as_bytes());
    format!("{signed}.{}", b64(&sig))
}

fn claims() -> Value {
    json!({"sub": "user-1", "iss": "https://issuer.test", "aud": ["api"], "iat": NOW - 60, "exp": NOW + 600})
}

fn rs256(claims: Value, kid: &str) -> String {
    let key = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_key());
    token(json!({"alg": "RS256", "kid": kid}), claims, |m| {
        key.sign(m).to_vec()
    })
}

/// Salt for PSS signatures: any bytes do for a test.
struct Counter(u8);

impl rsa::rand_core::RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        u64::from(self.0)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for Counter {}

fn p256_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("p256")
}

fn p384_key() -> p384::ecdsa::SigningKey {
    p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).expect("p384")
}

fn ed_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
}

const SECRET: &[u8] = b"a shared secret of thirty-two bytes";

fn jwks() -> Jwks {
    let public = rsa::RsaPublicKey::from(&rsa_key());
    let p256 = p256_key().verifying_key().to_encoded_point(false);
    let p384 = p384_key().verifying_key().to_encoded_point(false);
    Jwks::parse(&json!({"keys": [
        {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "rsa-1", "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())},
        {"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64(p256.x().expect("x")), "y": b64(p256.y().expect("y"))},
        {"kty": "EC", "crv": "P-384", "kid": "ec-2", "x": b64(p384.x().expect("x")), "y": b64(p384.y().expect("y"))},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": b64(ed_key().verifying_key().as_bytes())},
        {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64(SECRET)},
        {"kty": "unknown", "kid": "skipped"}
    ]}))
    .expect("jwks")
}

fn policy(algs: &[&str]) -> Policy {
    Policy {
        algorithms: algs.iter().map(|a| Alg::parse(a).expect("alg")).collect(),
        tolerance: 5,
        max_age: Some(86_400),
        issuer: None,
        audience: None,
    }
}

#[test]
fn every_algorithm_verifies_with_its_key() {
    let keys = jwks();
    let all = policy(&[
        "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256",
    ]);
    let rsa384 = rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(rsa_key());
    let pss = rsa::pss::SigningKey::<sha2::Sha256>::new(rsa_key());
    let tokens = [
        rs256(claims(), "rsa-1"),
        token(json!({"alg": "RS384"}), claims(), |m| {
            rsa384.sign(m).to_vec()
        }),
        token(json!({"alg": "PS256", "kid": "rsa-1"}), claims(), |m| {
            pss.sign_with_rng(&mut Counter(0), m).to_vec()
        }),
        token(json!({"alg": "ES256", "kid": "ec-1"}), claims(), |m| {
            let s: p256::ecdsa::Signature = p256_key().sign(m);
            s.to_bytes().to_vec()
        }),
        token(json!({"alg": "ES384", "kid": "ec-2"}), claims(), |m| {
            let s: p384::ecdsa::Signature = p384_key().sign(m);
            s.to_bytes().to_vec()
        }),
        token(json!({"alg": "EdDSA", "kid": "ed-1"}), claims(), |m| {
            ed_key().sign(m).to_bytes().to_vec()
        }),
        token(json!({"alg": "HS256", "kid": "hs-1"}), claims(), |m| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("hmac");
            mac.update(m);
            mac.finalize().into_bytes().to_vec()
        }),
    ];
    for t in &tokens {
        let claims = token::verify(t, &keys, &all, NOW).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(claims["sub"], "user-1");
    }
    // The default policy accepts RS256 only.
    let rs_only = policy(&["RS256"]);
    assert!(token::verify(&tokens[0], &keys, &rs_only, NOW).is_ok());
    for t in &tokens[1..] {
        let err = token::verify(t, &keys, &rs_only, NOW).expect_err("not RS256");
        assert!(err.contains("is not allowed"), "{err}");
    }
}

#[test]
fn forged_unknown_and_unsigned_tokens_are_rejected() {
    let keys = jwks();
    let rs = policy(&["RS256", "HS256"]);
    let good = rs256(claims(), "rsa-1");
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_claims = b64(json!({"sub": "admin", "iat": NOW, "exp": NOW + 600})
        .to_string()
        .as_bytes());
    parts[1] = &forged_claims;
    let forged = parts.join(".");
    let cases = [
        (forged, "does not verify"),
        (rs256(claims(), "other"), "no key with kid `other`"),
        (
            token(json!({"alg": "none"}), claims(), |_| Vec::new()),
            "`none` is not allowed",
        ),
        // An RSA public key used as an HMAC secret (the classic confusion).
        (
            token(json!({"alg": "HS256", "kid": "rsa-1"}), claims(), |m| {
                let n = rsa::RsaPublicKey::from(&rsa_key()).n().to_bytes_be();
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&n).expect("hmac");
                mac.update(m);
                mac.finalize().into_bytes().to_vec()
            }),
            "does not verify",
        ),
        ("a.b".to_owned(), "three base64url parts"),
        ("!!.e30.e30".to_owned(), "header is not base64url"),
    ];
    for (t, why) in cases {
        let err = token::verify(&t, &keys, &rs, NOW).expect_err(why);
        assert!(err.contains(why), "{why}: {err}");
    }
}

#[test]
fn time_issuer_and_audience_claims_are_enforced() {
    let keys = jwks();
    let mut p = policy(&["RS256"]);
    let with = |patch: Value| {
        let mut c = claims();
        for (k, v) in patch.as_object().expect("object") {
            c[k] = v.clone();
        }
        rs256(c, "rsa-1")
    };
    assert!(
        token::verify(&with(json!({"exp": NOW - 3})), &keys, &p, NOW).is_ok(),
        "within tolerance"
    );
    for (t, why) in [
        (with(json!({"exp": NOW - 10})), "expired"),
        (with(json!({"nbf": NOW + 60})), "not valid yet"),
        (
            with(json!({"iat": NOW - 90_000})),
            "older than `maxTokenAge`",
        ),
        (with(json!({"iat": null})), "no `iat`"),
    ] {
        let err = token::verify(&t, &keys, &p, NOW).expect_err(why);
        assert!(err.contains(why), "{why}: {err}");
    }
    p.max_age = None;
    assert!(token::verify(&with(json!({"iat": null})), &keys, &p, NOW).is_ok());
    p.issuer = Some("https://issuer.test".into());
    p.audience = Some("api".into());
    assert!(token::verify(&with(json!({})), &keys, &p, NOW).is_ok());
    let err = token::verify(&with(json!({"iss": "https://evil.test"})), &keys, &p, NOW)
        .expect_err("issuer");
    assert!(err.contains("issuer"), "{err}");
    let err = token::verify(&with(json!({"aud": "web"})), &keys, &p, NOW).expect_err("aud");
    assert!(err.contains("audience"), "{err}");
}

#[test]
fn parameters_are_read_as_portkey_names_them() {
    let read = |v: Value| serde_json::from_value::<Config>(v).map_err(|e| e.to_string());
    let c = read(json!({"jwksUri": "https://idp.test/jwks.json"})).expect("config");
    assert_eq!(c.header, "Authorization");
    assert_eq!(c.policy.max_age, Some(86_400));
    assert_eq!(c.policy.algorithms, vec![Alg::Rs(Sha::S256)]);
    assert!(matches!(
        c.keys,
        Keys::Fetched {
            cache_seconds: 86_400,
            ..
        }
    ));
    let c = read(json!({
        "jwksUri": "https://idp.test/jwks.json", "headerKey": "x-user-token",
        "cacheMaxAge": 60, "clockTolerance": 0, "maxTokenAge": "2 hours",
        "algorithms": ["ES256", "EdDSA"]
    }))
    .expect("config");
    assert_eq!(
        (c.header.as_str(), c.policy.max_age, c.policy.tolerance),
        ("x-user-token", Some(7200), 0)
    );
    for (v, why) in [
        (json!({}), "give `jwksUri`"),
        (
            json!({"jwksUri": "https://a", "jwks": {"keys": []}}),
            "not both",
        ),
        (json!({"jwksUri": "file:///etc/keys"}), "http or https"),
        (json!({"jwks": {"keys": []}}), "no signing key"),
        (json!({"jwks": [1]}), "`keys` list"),
        (
            json!({"jwksUri": "https://a", "algorithms": ["XS1"]}),
            "not supported",
        ),
        (
            json!({"jwksUri": "https://a", "maxTokenAge": "1 fortnight"}),
            "not a unit of time",
        ),
    ] {
        let err = read(v.clone()).expect_err(why);
        assert!(err.contains(why), "{v}: {err}");
    }
    assert_eq!(token::seconds(&json!("90s")), Ok(90));
    assert_eq!(token::seconds(&json!("1d")), Ok(86_400));
    assert_eq!(token::seconds(&json!(30)), Ok(30));
    assert_eq!(bearer(" Bearer abc.def.ghi "), "abc.def.ghi");
    assert_eq!(bearer("bearer x"), "x");
    assert_eq!(bearer("abc"), "abc");
}
