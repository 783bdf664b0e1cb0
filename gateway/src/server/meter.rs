//! The meter on a proxied answer: it reads the token usage as the answer
//! passes to the client (a JSON answer whole, a stream event by event),
//! and when the last byte has left (or the client has gone) it prices the
//! tokens, charges token rate limits and budgets, and queues the request's
//! record for the log ([`crate::usage`]). Nothing here delays a byte: the
//! answer's frames go on as they come (a stream whose usage chunk is hidden
//! goes on in whole events).

use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use bytes::Bytes;

use super::{AppState, observe};
use crate::limits::Bucket;
use crate::limits::budget::Charge;
use crate::usage::{Record, StreamMeter, Tokens};

/// What the pipeline learns about a request for its record.
pub struct Meter {
    state: Arc<AppState>,
    started: Instant,
    pub record: Record,
    /// Rate-limit buckets its tokens are charged to.
    pub buckets: Vec<Bucket>,
    /// Budgets its cost is charged to.
    pub charges: Vec<Charge>,
    /// The gateway asked the upstream for a stream's usage the client did
    /// not ask for: that chunk is taken out.
    pub hide_usage: bool,
    /// What the cache did.
    pub cache: crate::cache::Status,
}

impl Meter {
    pub fn new(state: Arc<AppState>, trace_id: &str, route: &str) -> Self {
        Self {
            state,
            started: Instant::now(),
            record: Record {
                ts_ms: crate::usage::now_ms(),
                trace_id: trace_id.to_owned(),
                route: route.to_owned(),
                ..Record::default()
            },
            buckets: Vec::new(),
            charges: Vec::new(),
            hide_usage: false,
            cache: crate::cache::Status::Disabled,
        }
    }

    /// Whether anything needs the answer's tokens or its record.
    pub fn needed(&self) -> bool {
        self.state.usage.enabled()
            || !self.charges.is_empty()
            || self.buckets.iter().any(|b| b.tpm.is_some())
    }

    /// Whether request and answer bodies go into the record.
    pub fn keeps_bodies(&self) -> bool {
        let s = self.state.usage.settings();
        s.enabled && s.log_bodies
    }

    /// The answer, metered as it leaves.
    pub fn attach(mut self, response: Response) -> Response {
        if !self.needed() {
            return response;
        }
        let (parts, body) = response.into_parts();
        self.record.status = parts.status.as_u16();
        let sse = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        self.record.stream = sse;
        let hide = sse && self.hide_usage;
        let running = Running {
            hide,
            stream: sse.then(|| StreamMeter::new(hide)),
            kept: observe::Kept::new(if self.keeps_bodies() || !sse {
                self.state
                    .usage
                    .settings()
                    .max_body_bytes
                    .max(if sse { 0 } else { MAX_JSON })
            } else {
                0
            }),
            first_byte: None,
            meter: self,
        };
        Response::from_parts(parts, observe::observed(body, running))
    }
}

/// The most of a JSON answer read for its usage.
const MAX_JSON: usize = 4 << 20;

struct Running {
    meter: Meter,
    /// The stream's usage chunk is taken out.
    hide: bool,
    stream: Option<StreamMeter>,
    /// The answer's bytes, as far as they are kept: a JSON answer whole
    /// (up to [`MAX_JSON`]) for its usage, a stream's when bodies are logged.
    kept: observe::Kept,
    first_byte: Option<Instant>,
}

impl observe::Observer for Running {
    fn data(&mut self, data: &Bytes) -> Option<Bytes> {
        self.first_byte.get_or_insert_with(Instant::now);
        self.kept.push(data);
        self.stream
            .as_mut()
            .and_then(|s| s.push(data))
            .map(Bytes::from)
    }

    fn rewrites(&self) -> bool {
        self.hide
    }

    /// The answer is over, or the client went away (recorded as 499).
    fn end(mut self, how: observe::End) -> Option<Bytes> {
        let complete = how != observe::End::Dropped;
        // What the stream meter held back of the last event.
        let tail = match &mut self.stream {
            Some(s) if complete => Some(Bytes::from(s.finish())),
            _ => None,
        };
        let now = Instant::now();
        let meter = &mut self.meter;
        let state = meter.state.clone();
        let keeps_bodies = meter.keeps_bodies();
        let body = self.kept.into_bytes();
        let tokens: Option<Tokens> = match &mut self.stream {
            Some(s) => s.tokens(),
            None => crate::usage::tokens::from_json(&body),
        };
        let r = &mut meter.record;
        r.latency_ms = now.duration_since(meter.started).as_millis() as u64;
        r.ttft_ms = self
            .first_byte
            .map(|t| t.duration_since(meter.started).as_millis() as u64);
        if !complete {
            // nginx's "client closed request".
            r.status = 499;
        }
        r.tokens = tokens;
        let unix = r.ts_ms / 1000 + r.latency_ms as i64 / 1000;
        let hit = meter.cache.is_hit();
        if meter.cache != crate::cache::Status::Disabled {
            r.cache = Some(meter.cache.label().to_owned());
        }
        if let Some(t) = tokens {
            let cost = match (&r.provider, &r.model) {
                (Some(p), Some(m)) => state.pricing.cost(p, m, &t),
                _ => None,
            };
            if hit {
                // Nothing reached the provider: no tokens spent, the price saved.
                r.saved_cost = cost;
                r.cost = cost.map(|_| 0.0);
            } else {
                match &state.redis {
                    Some(redis) if meter.buckets.iter().any(|b| b.tpm.is_some()) => {
                        let buckets = meter.buckets.clone();
                        crate::shared::tell(redis.clone(), "token counts", move |r| async move {
                            r.charge_tokens(&buckets, t.total(), unix.max(0) as u64)
                                .await
                        });
                    }
                    _ => state
                        .rate
                        .charge_tokens(&meter.buckets, t.total(), unix.max(0) as u64),
                }
                r.cost = cost;
            }
        }
        if let Some(cost) = r.cost {
            // This gateway's own spend is kept either way: it is what the
            // state database restores, and what it falls back on.
            r.budgets = state.budgets.spend(&meter.charges, cost, unix);
            if let Some(redis) = state
                .redis
                .clone()
                .filter(|_| !meter.charges.is_empty() && cost > 0.0)
            {
                let charges = meter.charges.clone();
                crate::shared::tell(redis, "budget spend", move |r| async move {
                    r.spend(&charges, cost, unix).await
                });
            }
        }
        if self.stream.is_none() {
            r.hook_results = super::proxy::hook_results::<&serde_json::value::RawValue>(&body)
                .map(|r| r.get().to_owned());
        }
        if keeps_bodies {
            let max = state.usage.settings().max_body_bytes;
            r.response_body = Some(crate::usage::redacted_body(&body, max));
        }
        state.usage.record(std::mem::take(&mut meter.record));
        tail
    }
}
