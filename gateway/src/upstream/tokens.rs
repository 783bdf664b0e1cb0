//! Access tokens that providers exchange credentials for (an OAuth 2.0 token
//! endpoint: Vertex AI's service accounts), fetched through the guarded client
//! and cached until shortly before they expire.
//!
//! A provider describes the exchange as a [`TokenSource`]: a cache key (a
//! digest of the credentials, never the credentials) and a builder for the
//! token request, called only on a miss — signing a JWT costs an RSA
//! signature, which is not paid per call. Concurrent calls with one key wait
//! for one exchange. The answer is RFC 6749 §5.1 (`access_token`,
//! `expires_in`); an error answer is §5.2 (`error`, `error_description`),
//! whose text is shown to the client (it holds no secret).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::GatewayError;
use crate::config::Secret;
use crate::providers::UpstreamRequest;

/// How many credential sets are remembered; past it, expired entries go and
/// then the rest (a client cycling through credentials cannot grow memory).
const MAX_ENTRIES: usize = 1024;

/// A token is renewed this long before the endpoint says it expires.
const EARLY: Duration = Duration::from_secs(60);

/// Assumed lifetime when the answer gives no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The largest token answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A token exchange a provider needs before its call.
pub struct TokenSource {
    /// Identifies the credentials (a digest) and the endpoint.
    pub key: String,
    /// Builds the token request; called only when no cached token is valid.
    pub request: Box<dyn FnOnce() -> Result<UpstreamRequest, GatewayError> + Send>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<(Arc<Secret>, Instant)>>>;

/// The cache, shared by every request.
#[derive(Debug, Default)]
pub struct Tokens {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Tokens {
    fn slot(&self, key: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= MAX_ENTRIES {
            let now = Instant::now();
            slots.retain(|_, slot| {
                slot.try_lock()
                    .map_or(true, |t| t.as_ref().is_some_and(|(_, until)| *until > now))
            });
            if slots.len() >= MAX_ENTRIES {
                slots.clear();
            }
        }
        slots.entry(key.to_owned()).or_default().clone()
    }

    /// A valid token for `source`: cached, or fetched with `fetch` (which sends
    /// the request and returns the status and body).
    pub async fn get<F, Fut>(
        &self,
        provider: &str,
        source: TokenSource,
        fetch: F,
    ) -> Result<Arc<Secret>, GatewayError>
    where
        F: FnOnce(UpstreamRequest) -> Fut,
        Fut: std::future::Future<Output = Result<(http::StatusCode, bytes::Bytes), GatewayError>>,
    {
        let slot = self.slot(&source.key);
        let mut held = slot.lock().await;
        if let Some((token, until)) = held.as_ref()
            && *until > Instant::now()
        {
            return Ok(token.clone());
        }
        let request = (source.request)()?;
        let (status, body) = fetch(request).await.map_err(|e| match e {
            GatewayError::UpstreamUnreachable { detail, .. }
            | GatewayError::UpstreamGarbage { detail, .. } => GatewayError::CredentialExchange {
                provider: provider.to_owned(),
                status: 0,
                detail: format!("the token endpoint could not be reached: {detail}"),
            },
            other => other,
        })?;
        let (token, lifetime) = read_answer(provider, status, &body)?;
        let token = Arc::new(token);
        let until = Instant::now() + lifetime.saturating_sub(EARLY);
        *held = Some((token.clone(), until));
        Ok(token)
    }
}

/// The token and its lifetime from a token endpoint's answer.
fn read_answer(
    provider: &str,
    status: http::StatusCode,
    body: &[u8],
) -> Result<(Secret, Duration), GatewayError> {
    let failed = |detail: String| GatewayError::CredentialExchange {
        provider: provider.to_owned(),
        status: status.as_u16(),
        detail,
    };
    let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if !status.is_success() {
        let error = answer["error"].as_str().unwrap_or("no error code");
        let description = answer["error_description"].as_str().unwrap_or_default();
        return Err(failed(format!(
            "the token endpoint answered HTTP {}: {error}{}{description}",
            status.as_u16(),
            if description.is_empty() { "" } else { ": " },
        )));
    }
    let token = answer["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| failed("the token endpoint's answer has no `access_token`".into()))?;
    let lifetime = answer["expires_in"]
        .as_u64()
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
    Ok((Secret::new(token.to_owned()), lifetime))
}

/// Reads a token answer body within [`MAX_ANSWER_BYTES`] (the endpoint may be
/// the client's: it must not make the gateway buffer without bound).
pub async fn read_body(
    provider: &str,
    response: reqwest::Response,
) -> Result<(http::StatusCode, bytes::Bytes), GatewayError> {
    let status = response.status();
    let body = super::read_limited(
        response,
        MAX_ANSWER_BYTES,
        provider,
        "the token answer's limit",
    )
    .await
    .map_err(|e| match e {
        GatewayError::UpstreamGarbage { detail, .. } => GatewayError::CredentialExchange {
            provider: provider.to_owned(),
            status: status.as_u16(),
            detail: format!("the token endpoint's answer is unusable: {detail}"),
        },
        other => other,
    })?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn source(key: &str) -> TokenSource {
        TokenSource {
            key: key.into(),
            request: Box::new(|| {
                Ok(UpstreamRequest {
                    method: http::Method::POST,
                    url: url::Url::parse("http://127.0.0.1:9/token").expect("url"),
                    headers: http::HeaderMap::new(),
                    body: bytes::Bytes::new(),
                })
            }),
        }
    }

    async fn answer(
        fetches: &AtomicUsize,
        status: u16,
        body: &'static str,
    ) -> Result<(http::StatusCode, bytes::Bytes), GatewayError> {
        fetches.fetch_add(1, Ordering::SeqCst);
        Ok((
            http::StatusCode::from_u16(status).expect("status"),
            bytes::Bytes::from_static(body.as_bytes()),
        ))
    }

    #[tokio::test]
    async fn a_token_is_fetched_once_and_reused_until_it_expires() {
        let tokens = Tokens::default();
        let fetches = AtomicUsize::new(0);
        for _ in 0..3 {
            let token = tokens
                .get("vertex-ai", source("a"), |_| {
                    answer(
                        &fetches,
                        200,
                        r#"{"access_token":"tok-1","expires_in":3599}"#,
                    )
                })
                .await
                .expect("token");
            assert_eq!(token.expose(), "tok-1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A token that lives less than the early-renewal margin is fetched again.
        for _ in 0..2 {
            tokens
                .get("vertex-ai", source("b"), |_| {
                    answer(&fetches, 200, r#"{"access_token":"tok-2","expires_in":30}"#)
                })
                .await
                .expect("token");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_exchange_is_a_401_with_the_endpoints_reason() {
        let tokens = Tokens::default();
        let fetches = AtomicUsize::new(0);
        let err = tokens
            .get("vertex-ai", source("a"), |_| {
                answer(
                    &fetches,
                    400,
                    r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
                )
            })
            .await
            .expect_err("refused");
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(err.code(), "credential_exchange_failed");
        assert!(
            err.to_string()
                .contains("invalid_grant: Invalid JWT Signature.")
        );
        let err = tokens
            .get("vertex-ai", source("a"), |_| answer(&fetches, 200, "{}"))
            .await
            .expect_err("no token");
        assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY);
        let err = tokens
            .get("vertex-ai", source("a"), |_| answer(&fetches, 503, "busy"))
            .await
            .expect_err("down");
        assert!(err.is_retryable());
    }

    #[test]
    fn the_cache_is_bounded() {
        let tokens = Tokens::default();
        for i in 0..MAX_ENTRIES + 10 {
            tokens.slot(&i.to_string());
        }
        assert!(tokens.slots.lock().expect("lock").len() <= MAX_ENTRIES);
    }
}
