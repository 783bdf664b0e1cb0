//! Guardrails: hooks that see a request before it leaves (and, with the guardrail
//! suite, the response before it returns) and may let it pass, rewrite it, or
//! answer it themselves.
//!
//! This is the seam the pipeline calls at a fixed point: after routing decided the
//! target and before the provider builds the upstream request. Wasm guardrail
//! plugins and Portkey's hook semantics (446/246, `hook_results`) plug in here as
//! [`RequestHook`]s; a gateway with none configured pays one empty-slice check.
//! Hooks may call nothing in the pipeline; they get the context and the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value};

use crate::GatewayError;
use crate::providers::Endpoint;

/// What a hook sees besides the body.
#[derive(Debug)]
pub struct HookContext<'a> {
    pub request_id: &'a str,
    pub endpoint: Endpoint,
    pub provider: &'a str,
    pub metadata: &'a Map<String, Value>,
}

/// A hook's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Go on, with the body as the hook left it.
    Continue,
    /// Answer the client with this status and JSON body; no upstream call.
    Respond { status: StatusCode, body: Value },
}

/// A boxed future, so hooks can be trait objects.
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, GatewayError>> + Send + 'a>>;

/// A before-request hook.
pub trait RequestHook: Send + Sync + std::fmt::Debug {
    /// Its name, for logs.
    fn name(&self) -> &str;
    /// Inspects (and may rewrite) a JSON request body.
    fn before_request<'a>(
        &'a self,
        ctx: &'a HookContext<'a>,
        body: &'a mut Map<String, Value>,
    ) -> HookFuture<'a>;
}

/// The hooks of a gateway, run in order; the first that answers ends the chain.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    hooks: Vec<Arc<dyn RequestHook>>,
}

impl Guardrails {
    /// A chain of hooks.
    pub fn new(hooks: Vec<Arc<dyn RequestHook>>) -> Self {
        Self { hooks }
    }

    /// Whether any hook would run.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Runs every hook until one answers.
    pub async fn before_request(
        &self,
        ctx: &HookContext<'_>,
        body: &mut Map<String, Value>,
    ) -> Result<Outcome, GatewayError> {
        for hook in &self.hooks {
            match hook.before_request(ctx, body).await? {
                Outcome::Continue => {}
                answer => {
                    tracing::info!(hook = hook.name(), "hook answered the request");
                    return Ok(answer);
                }
            }
        }
        Ok(Outcome::Continue)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Rewrites `model`, or denies when the last message says "deny".
    #[derive(Debug)]
    pub(crate) struct TestHook;

    impl RequestHook for TestHook {
        fn name(&self) -> &str {
            "test"
        }
        fn before_request<'a>(
            &'a self,
            _ctx: &'a HookContext<'a>,
            body: &'a mut Map<String, Value>,
        ) -> HookFuture<'a> {
            Box::pin(async move {
                if body
                    .get("messages")
                    .and_then(|m| m.as_array())
                    .and_then(|m| m.last())
                    .is_some_and(|m| m["content"] == "deny")
                {
                    return Ok(Outcome::Respond {
                        status: StatusCode::from_u16(446)
                            .map_err(|e| GatewayError::Internal(e.to_string()))?,
                        body: json!({"error": {"message": "denied by test hook", "type": "guardrail", "param": null, "code": "denied"}}),
                    });
                }
                body.insert("model".into(), json!("rewritten"));
                Ok(Outcome::Continue)
            })
        }
    }

    #[tokio::test]
    async fn hooks_rewrite_or_answer() {
        let chain = Guardrails::new(vec![Arc::new(TestHook)]);
        let meta = Map::new();
        let ctx = HookContext {
            request_id: "r",
            endpoint: Endpoint::Chat,
            provider: "openai",
            metadata: &meta,
        };
        let mut body = json!({"model": "a", "messages": [{"role": "user", "content": "hi"}]})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            chain.before_request(&ctx, &mut body).await.ok(),
            Some(Outcome::Continue)
        );
        assert_eq!(body["model"], "rewritten");
        body.insert(
            "messages".into(),
            json!([{"role": "user", "content": "deny"}]),
        );
        let out = chain.before_request(&ctx, &mut body).await.ok();
        assert!(matches!(out, Some(Outcome::Respond { status, .. }) if status.as_u16() == 446));
        assert!(Guardrails::default().is_empty());
    }
}
