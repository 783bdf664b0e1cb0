//! Vertex AI's OAuth: a service account's key signs a JWT (RS256), which its
//! token endpoint exchanges for an access token (RFC 7523, Google's
//! "service account" flow). The exchange itself is the pipeline's
//! ([`crate::upstream::Tokens`]); this builds it.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderValue;
use serde_json::{Value, json};

use crate::GatewayError;
use crate::providers::UpstreamRequest;
use crate::upstream::TokenSource;

/// Google's token endpoint, when the service account names none.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The scope Vertex AI's API takes.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How long an assertion is valid (Google's maximum).
const LIFETIME_SECS: u64 = 3600;

/// The fields of a service account key file the exchange uses.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    pub private_key_id: Option<String>,
    pub project_id: Option<String>,
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("project_id", &self.project_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some("vertex_service_account_json"))
}

impl ServiceAccount {
    /// Reads a key file's JSON (an object, or a string holding one).
    pub fn from_value(value: &Value) -> Result<Self, GatewayError> {
        let parsed;
        let object = match value {
            Value::Object(_) => value,
            Value::String(text) => {
                parsed = serde_json::from_str::<Value>(text)
                    .map_err(|e| bad(format!("the service account JSON does not parse: {e}")))?;
                &parsed
            }
            _ => return Err(bad("the service account must be a JSON object")),
        };
        let field = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
        let required = |name: &str| {
            field(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| bad(format!("the service account has no `{name}`")))
        };
        let token_uri = field("token_uri").unwrap_or_else(|| GOOGLE_TOKEN_URI.to_owned());
        let scheme_ok = url::Url::parse(&token_uri)
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
        if !scheme_ok {
            return Err(bad(
                "the service account's `token_uri` is not an http(s) URL",
            ));
        }
        Ok(Self {
            client_email: required("client_email")?,
            private_key: required("private_key")?,
            private_key_id: field("private_key_id"),
            project_id: field("project_id"),
            token_uri,
        })
    }

    /// The cache key: a digest of what identifies the token (never the key).
    pub fn cache_key(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [&self.token_uri, &self.client_email, &self.private_key] {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        let digest = ctx.finish();
        let hex: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("vertex-ai:{hex}")
    }

    /// The signed assertion, issued at `iat` (seconds since the epoch).
    pub fn assertion(&self, iat: u64) -> Result<String, GatewayError> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = Value::String(kid.clone());
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key =
            ring::signature::RsaKeyPair::from_pkcs8(&pem_der(&self.private_key)?).map_err(|e| {
                bad(format!(
                    "the service account's `private_key` is not usable: {e}"
                ))
            })?;
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| GatewayError::Internal("RSA signing failed".into()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// The token request: the assertion posted as a form.
    pub fn token_request(&self, iat: u64) -> Result<UpstreamRequest, GatewayError> {
        let assertion = self.assertion(iat)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        Ok(UpstreamRequest {
            method: http::Method::POST,
            url: url::Url::parse(&self.token_uri)
                .map_err(|e| bad(format!("bad `token_uri`: {e}")))?,
            headers,
            body: body.into(),
        })
    }

    /// The exchange, for the pipeline to run when no cached token is valid.
    pub fn token_source(&self) -> TokenSource {
        let account = self.clone();
        TokenSource {
            key: self.cache_key(),
            request: Box::new(move || account.token_request(crate::providers::native::now())),
        }
    }
}

/// A PEM block's DER bytes (`-----BEGIN PRIVATE KEY-----`, PKCS#8).
fn pem_der(pem: &str) -> Result<Vec<u8>, GatewayError> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    if !pem.contains("BEGIN PRIVATE KEY") {
        return Err(bad(
            "the service account's `private_key` must be a PKCS#8 PEM (`BEGIN PRIVATE KEY`)",
        ));
    }
    STANDARD.decode(body.as_bytes()).map_err(|e| {
        bad(format!(
            "the service account's `private_key` is not base64: {e}"
        ))
    })
}
