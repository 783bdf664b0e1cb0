//! The routing engine: walks a config's strategy tree for one request, trying
//! targets with retries, backoff, deadlines and circuit breakers, and returns
//! the answer to give the client with where it came from.
//!
//! The engine does no I/O itself: an [`Attempts`] (the proxy) prepares a body
//! for a target and sends it. So every rule here is tested with paused time and
//! a scripted upstream.
//!
//! - `single`: the first target (Portkey's meaning).
//! - `fallback`: targets in order. It moves on when the answer's status is in
//!   `on_status_codes`, or, when they are not given, on any non-2xx; a transport
//!   failure or a timeout always moves on. When every target failed, the last
//!   answer is returned. Targets whose circuit is open are skipped.
//! - `loadbalance`: one target by `weight` (0 never chosen), among those whose
//!   circuit is not open; `balance: "least_latency"` takes the lowest smoothed
//!   latency (one call in ten still goes by weight, so a recovered target is
//!   seen again), `"least_in_flight"` the fewest calls in flight per unit of
//!   weight (ties by weight).
//! - `conditional`: the first condition whose query matches, else `default`,
//!   else a 400 naming the config.
//! - `router`: a router plugin orders the targets; they are tried as a fallback.
//!
//! A subtree's health (for balancing and routers) is its first target's.
//!
//! At a target, `retry` decides: statuses in `retry.on_status_codes` (default
//! 429, 500, 502, 503, 504; a transport failure counts as 502, the server's
//! timeout as 504, the caller's `request_timeout` as 408) are retried up to
//! `attempts` times after full-jitter exponential backoff, or after the
//! upstream's `retry-after-ms` / `x-ms-retry-after-ms` / `retry-after` when
//! `use_retry_after_header` is set (a wait over `max_retry_after_ms`, or past
//! the request's deadline, ends the retries instead). The count of retries made
//! is Portkey's `x-portkey-retry-attempt-count`: -1 when they ran out.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::targets::{InFlight, Outcome, Targets};
use super::{ConfigLabel, Target, resolve_target};
use crate::GatewayError;
use crate::config::query::Facts;
use crate::config::routing::{Node, Retry, Strategy};
use crate::config::{RoutingConfig, ServerConfig};
use crate::keys::VirtualKeys;
use crate::plugins::{self, Kind, RouteCandidate};
use crate::providers::Endpoint;

/// What a target's preparation gives: a body to send, or an answer that ends
/// the attempt here (a guardrail's 446).
pub enum Step<P, B> {
    Send(P),
    Answer(http::Response<B>),
}

/// The side that does the work: prepares a body for a target and sends it.
pub trait Attempts: Sync {
    type Body: Send;
    type Prepared: Send + Sync;

    /// Builds what to send to `target` (once per target, whatever the retries).
    fn prepare(
        &self,
        target: &Target,
    ) -> impl Future<Output = Result<Step<Self::Prepared, Self::Body>, GatewayError>> + Send;

    /// One call, answered by `deadline`. `in_flight` is held for as long as the
    /// call lasts (for a stream, until its end).
    fn send(
        &self,
        target: &Target,
        prepared: &Self::Prepared,
        deadline: &Deadline,
        in_flight: InFlight,
    ) -> impl Future<Output = Result<http::Response<Self::Body>, GatewayError>> + Send;
}

/// The request's deadline across every attempt.
#[derive(Debug, Clone, Copy)]
pub struct Total {
    pub at: Instant,
    ms: u64,
    /// Set by the caller's config (408 when passed) or the server (504).
    client: bool,
}

impl Total {
    pub fn new(client_ms: Option<u64>, server: Duration) -> Self {
        let (ms, client) = match client_ms {
            Some(ms) if u128::from(ms) <= server.as_millis() => (ms, true),
            _ => (server.as_millis() as u64, false),
        };
        Self {
            at: Instant::now() + Duration::from_millis(ms),
            ms,
            client,
        }
    }

    fn error(&self) -> GatewayError {
        GatewayError::DeadlinePassed {
            timeout_ms: self.ms,
            client: self.client,
        }
    }
}

/// The time by which one attempt must have answered, and what passing it means:
/// the caller's `request_timeout` (408), the server's `upstream.timeout_ms`
/// (504), or the request's total deadline.
#[derive(Debug, Clone)]
pub struct Deadline {
    pub at: Instant,
    kind: DeadlineKind,
    provider: String,
}

#[derive(Debug, Clone, Copy)]
enum DeadlineKind {
    Client(u64),
    Server(u64),
    Total(Total),
}

impl Deadline {
    /// The earliest of the attempt's limits.
    pub fn new(client: Option<Duration>, server: Duration, total: &Total, provider: &str) -> Self {
        let now = Instant::now();
        let (mut at, mut kind) = match client {
            Some(c) if c <= server => (now + c, DeadlineKind::Client(c.as_millis() as u64)),
            _ => (
                now + server,
                DeadlineKind::Server(server.as_millis() as u64),
            ),
        };
        if total.at < at {
            at = total.at;
            kind = DeadlineKind::Total(*total);
        }
        Self {
            at,
            kind,
            provider: provider.to_owned(),
        }
    }

    /// The error for a passed deadline.
    pub fn error(&self) -> GatewayError {
        match self.kind {
            DeadlineKind::Client(timeout_ms) => GatewayError::RequestTimeout {
                provider: self.provider.clone(),
                timeout_ms,
            },
            DeadlineKind::Server(timeout_ms) => GatewayError::UpstreamTimeout {
                provider: self.provider.clone(),
                timeout_ms,
            },
            DeadlineKind::Total(total) => total.error(),
        }
    }
}

/// The answer for the client, and where it came from.
pub struct Tried<B> {
    pub answer: Result<http::Response<B>, GatewayError>,
    /// The answering target's path in the config and provider.
    pub target: Option<(String, String)>,
    /// Portkey's `x-portkey-retry-attempt-count`.
    pub retries: i32,
    kind: Fate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Answered,
    /// Not tried: its circuit is open.
    Skipped,
    /// The request's deadline passed: nothing more is tried.
    Fatal,
}

impl<B> Tried<B> {
    fn answered(
        answer: Result<http::Response<B>, GatewayError>,
        target: Option<(String, String)>,
    ) -> Self {
        Self {
            answer,
            target,
            retries: 0,
            kind: Fate::Answered,
        }
    }

    /// The status the client would see.
    pub fn status(&self) -> u16 {
        match &self.answer {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status().as_u16(),
        }
    }
}

/// One request's walk through a config.
pub struct Engine<'a, A> {
    pub server: &'a ServerConfig,
    pub plugins: &'a plugins::Registry,
    pub vkeys: &'a VirtualKeys,
    pub targets: &'a Targets,
    pub headers: &'a HeaderMap,
    pub label: &'a ConfigLabel,
    /// Whether open circuits are skipped (config targets; not plain headers).
    pub breakers: bool,
    pub endpoint: Endpoint,
    pub metadata: &'a Map<String, Value>,
    pub pathname: &'a str,
    pub body: &'a [u8],
    pub total: Total,
    pub attempts: &'a A,
    params: OnceLock<Option<Map<String, Value>>>,
}

type BoxFuture<'s, T> = Pin<Box<dyn Future<Output = T> + Send + 's>>;

fn child_path(path: &str, i: usize) -> String {
    format!("{path}.targets[{i}]")
}

impl<'a, A: Attempts> Engine<'a, A> {
    #[expect(clippy::too_many_arguments, reason = "one request's parts, named")]
    pub fn new(
        server: &'a ServerConfig,
        plugins: &'a plugins::Registry,
        vkeys: &'a VirtualKeys,
        targets: &'a Targets,
        headers: &'a HeaderMap,
        label: &'a ConfigLabel,
        breakers: bool,
        endpoint: Endpoint,
        metadata: &'a Map<String, Value>,
        pathname: &'a str,
        body: &'a [u8],
        total: Total,
        attempts: &'a A,
    ) -> Self {
        Self {
            server,
            plugins,
            vkeys,
            targets,
            headers,
            label,
            breakers,
            endpoint,
            metadata,
            pathname,
            body,
            total,
            attempts,
            params: OnceLock::new(),
        }
    }

    /// Runs the config for this request.
    pub async fn run(&self, config: &RoutingConfig) -> Tried<A::Body> {
        let mut tried = self.node(&config.root, "config".to_owned()).await;
        if tried.kind == Fate::Skipped {
            tracing::warn!("every target that could answer has an open circuit");
        }
        tried.kind = Fate::Answered;
        tried
    }

    fn facts(&self) -> Facts<'_> {
        let params = self
            .params
            .get_or_init(|| match serde_json::from_slice(self.body) {
                Ok(Value::Object(m)) => Some(m),
                _ => None,
            });
        Facts {
            metadata: self.metadata,
            params: params.as_ref(),
            pathname: self.pathname,
        }
    }

    fn node<'s>(&'s self, node: &'s Node, path: String) -> BoxFuture<'s, Tried<A::Body>> {
        Box::pin(async move {
            let Some(strategy) = &node.strategy else {
                return self.leaf(node, path).await;
            };
            // The older form puts `on_status_codes` beside the strategy.
            let codes = strategy
                .on_status_codes
                .as_deref()
                .or(node.on_status_codes.as_deref());
            match strategy.mode {
                "fallback" => {
                    let order: Vec<usize> = (0..node.targets.len()).collect();
                    self.fallback(node, codes, &order, &path).await
                }
                "loadbalance" => {
                    let i = self.choose(node, strategy.balance);
                    self.node(&node.targets[i], child_path(&path, i)).await
                }
                "conditional" => match self.condition(node, strategy) {
                    Some(i) => self.node(&node.targets[i], child_path(&path, i)).await,
                    None => Tried::answered(
                        Err(GatewayError::invalid(
                            format!(
                                "no condition of the conditional strategy at `{path}` in {} matched this request, and it has no `default`",
                                self.label
                            ),
                            Some("x-portkey-config"),
                        )),
                        None,
                    ),
                },
                "router" => match self.route(node, strategy, &path).await {
                    Ok(order) => self.fallback(node, codes, &order, &path).await,
                    Err(e) => Tried::answered(Err(e), None),
                },
                // `single`, and any mode validation let through: the first target.
                _ => self.node(&node.targets[0], child_path(&path, 0)).await,
            }
        })
    }

    async fn fallback(
        &self,
        node: &Node,
        codes: Option<&[u16]>,
        order: &[usize],
        path: &str,
    ) -> Tried<A::Body> {
        let mut last: Option<Tried<A::Body>> = None;
        let mut skipped: Option<Tried<A::Body>> = None;
        for &i in order {
            let tried = self.node(&node.targets[i], child_path(path, i)).await;
            match tried.kind {
                Fate::Fatal => return tried,
                Fate::Skipped => {
                    skipped.get_or_insert(tried);
                }
                Fate::Answered => {
                    if !moves_on(&tried.answer, codes) {
                        return tried;
                    }
                    tracing::info!(at = %path, from = i, status = tried.status(), "fallback: trying the next target");
                    last = Some(tried);
                }
            }
        }
        match (last, skipped) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => Tried::answered(
                Err(GatewayError::Internal(format!("{path}: no target to try"))),
                None,
            ),
        }
    }

    /// The first leaf under `node` (a subtree is judged by it).
    fn first_leaf<'n>(&self, node: &'n Node) -> &'n Node {
        let mut n = node;
        while let Some(first) = n.targets.first() {
            n = first;
        }
        n
    }

    fn identity(&self, node: &Node) -> Option<String> {
        let leaf = self.first_leaf(node);
        super::leaf_key(leaf, self.headers)
    }

    fn choose(&self, node: &Node, balance: &str) -> usize {
        let all_zero = node.targets.iter().all(|t| t.weight <= 0.0);
        let mut candidates: Vec<(usize, f64, super::TargetHealth)> = node
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| all_zero || t.weight > 0.0)
            .map(|(i, t)| {
                let health = self
                    .identity(t)
                    .map(|k| self.targets.get(&k))
                    .unwrap_or_default();
                (i, if all_zero { 1.0 } else { t.weight }, health)
            })
            .collect();
        if self.breakers && candidates.iter().any(|c| !c.2.circuit_open) {
            candidates.retain(|c| !c.2.circuit_open);
        }
        let weighted = |cs: &[(usize, f64, super::TargetHealth)]| -> usize {
            let total: f64 = cs.iter().map(|c| c.1).sum();
            let mut x = fastrand::f64() * total;
            for c in cs {
                if x < c.1 {
                    return c.0;
                }
                x -= c.1;
            }
            cs.last().map_or(0, |c| c.0)
        };
        match balance {
            "least_latency" if fastrand::u8(0..10) != 0 => {
                // Unknown latency first: every target gets measured.
                let best = candidates.iter().min_by(|a, b| {
                    let la = a.2.latency_ms.unwrap_or(-1.0);
                    let lb = b.2.latency_ms.unwrap_or(-1.0);
                    la.total_cmp(&lb)
                });
                best.map_or_else(|| weighted(&candidates), |c| c.0)
            }
            "least_in_flight" => {
                let load = |c: &(usize, f64, super::TargetHealth)| f64::from(c.2.in_flight) / c.1;
                let min = candidates.iter().map(load).fold(f64::INFINITY, f64::min);
                let least: Vec<_> = candidates
                    .iter()
                    .filter(|c| load(c) <= min)
                    .cloned()
                    .collect();
                weighted(&least)
            }
            _ => weighted(&candidates),
        }
    }

    fn condition(&self, node: &Node, strategy: &Strategy) -> Option<usize> {
        let facts = self.facts();
        let name = strategy
            .conditions
            .iter()
            .find(|c| c.query.matches(&facts))
            .map(|c| &c.then)
            .or(strategy.default.as_ref())?;
        node.targets
            .iter()
            .position(|t| t.name.as_deref() == Some(name.as_str()))
    }

    /// A router plugin's order of the targets.
    async fn route(
        &self,
        node: &Node,
        strategy: &Strategy,
        path: &str,
    ) -> Result<Vec<usize>, GatewayError> {
        let name = strategy.router.as_deref().unwrap_or_default();
        let router = self.plugins.get_kind(name, Kind::Router)?;
        let candidates: Vec<RouteCandidate> = node
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let leaf = self.first_leaf(t);
                let seen = self
                    .identity(t)
                    .map(|k| self.targets.get(&k))
                    .unwrap_or_default();
                RouteCandidate {
                    index: i as u32,
                    provider: leaf.target.provider.clone().unwrap_or_default(),
                    model: leaf
                        .inherit
                        .override_params
                        .get("model")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    weight: t.weight,
                    circuit_open: self.breakers && seen.circuit_open,
                    error_rate: seen.error_rate,
                    latency_ms: seen.latency_ms,
                    in_flight: seen.in_flight,
                    requests: seen.requests,
                }
            })
            .collect();
        let meta: Vec<(String, String)> = self
            .metadata
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect();
        let model = self
            .facts()
            .params
            .and_then(|p| p.get("model"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let parameters = strategy
            .parameters
            .as_ref()
            .map_or_else(|| "{}".to_owned(), Value::to_string);
        let order = router
            .route(
                &parameters,
                self.endpoint,
                model,
                &meta,
                &candidates,
                Some(String::from_utf8_lossy(self.body).into_owned()),
            )
            .await?;
        let mut seen = vec![false; node.targets.len()];
        let order: Vec<usize> = order
            .into_iter()
            .map(|i| i as usize)
            .filter(|&i| i < seen.len() && !std::mem::replace(&mut seen[i], true))
            .collect();
        tracing::debug!(router = name, at = %path, ?order, "router ordered the targets");
        if order.is_empty() {
            return Err(GatewayError::Unsupported(format!(
                "router `{name}` chose no target for this request"
            )));
        }
        Ok(order)
    }

    async fn leaf(&self, node: &Node, path: String) -> Tried<A::Body> {
        let target = match resolve_target(self.server, self.plugins, self.vkeys, self.headers, node)
        {
            Ok(t) => t,
            Err(e) => {
                let provider = node.target.provider.clone().unwrap_or_default();
                return Tried::answered(Err(e), Some((path, provider)));
            }
        };
        let who = Some((path, target.provider.slug().to_owned()));
        let skipped = |wait: Duration| Tried {
            answer: Err(GatewayError::CircuitOpen {
                target: target.key.clone(),
                retry_after: wait,
            }),
            target: who.clone(),
            retries: 0,
            kind: Fate::Skipped,
        };
        // A look first (an open target's body is not prepared); the probe of a
        // half-open circuit is taken only right before the call.
        if self.breakers
            && let Err(wait) = self.targets.peek(&target.key)
        {
            return skipped(wait);
        }
        let prepared = match self.attempts.prepare(&target).await {
            Ok(Step::Send(p)) => p,
            Ok(Step::Answer(r)) => return Tried::answered(Ok(r), who),
            Err(e) => return Tried::answered(Err(e), who),
        };
        if self.breakers
            && let Err(wait) = self.targets.admit(&target.key)
        {
            return skipped(wait);
        }
        let mut retries = 0u32;
        loop {
            if Instant::now() >= self.total.at {
                return Tried {
                    answer: Err(self.total.error()),
                    target: who,
                    retries: retries as i32,
                    kind: Fate::Fatal,
                };
            }
            let deadline = Deadline::new(
                target.request_timeout,
                self.server.upstream.timeout,
                &self.total,
                target.provider.slug(),
            );
            let in_flight = self.targets.start(&target.key);
            let started = Instant::now();
            let answer = self
                .attempts
                .send(&target, &prepared, &deadline, in_flight)
                .await;
            let local = matches!(&answer, Ok(r) if r.extensions().get::<super::Local>().is_some());
            if !local {
                self.targets
                    .record(&target.key, outcome(&answer), started.elapsed());
            }
            let done = |answer, retries: i32| Tried {
                answer,
                target: who.clone(),
                retries,
                kind: Fate::Answered,
            };
            let Some(retry) = target.retry.as_ref().filter(|r| retryable(&answer, r)) else {
                return done(answer, retries as i32);
            };
            if retries >= retry.attempts {
                return done(answer, if retry.attempts == 0 { 0 } else { -1 });
            }
            let Some(wait) = wait_before_retry(retry, retries, &answer) else {
                tracing::info!(target = %target.key, "retry-after is longer than max_retry_after_ms: not retrying");
                return done(answer, retries as i32);
            };
            if Instant::now() + wait >= self.total.at {
                return done(answer, retries as i32);
            }
            tracing::info!(target = %target.key, status = status_of(&answer), retry = retries + 1, wait_ms = wait.as_millis() as u64, "retrying");
            // An error answer is already read whole: holding it costs no connection.
            tokio::time::sleep(wait).await;
            if self.breakers && self.targets.admit(&target.key).is_err() {
                // The failures so far opened the circuit: this answer is the last.
                return done(answer, retries as i32);
            }
            retries += 1;
        }
    }
}

fn status_of<B>(answer: &Result<http::Response<B>, GatewayError>) -> u16 {
    match answer {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status().as_u16(),
    }
}

/// How an answer counts for the target's health.
fn outcome<B>(answer: &Result<http::Response<B>, GatewayError>) -> Outcome {
    match answer {
        Ok(r) => Outcome::of_status(r.status().as_u16()),
        Err(e) if e.is_retryable() => Outcome::Failure,
        Err(e) => Outcome::of_status(e.status().as_u16()),
    }
}

fn retryable<B>(answer: &Result<http::Response<B>, GatewayError>, retry: &Retry) -> bool {
    match answer {
        Ok(r) => retry.retries(r.status().as_u16()),
        Err(e) => retry.retries(e.status().as_u16()),
    }
}

/// Whether a fallback moves past this answer.
fn moves_on<B>(answer: &Result<http::Response<B>, GatewayError>, codes: Option<&[u16]>) -> bool {
    match (answer, codes) {
        (Err(e), _) if e.is_retryable() => true,
        (Err(_), None) => true,
        (Ok(r), None) => !r.status().is_success(),
        (answer, Some(codes)) => codes.contains(&status_of(answer)),
    }
}

/// The wait before retry `n` (0-based): the upstream's Retry-After when asked
/// for and given (None when it is too long), else full-jitter backoff.
fn wait_before_retry<B>(
    retry: &Retry,
    n: u32,
    answer: &Result<http::Response<B>, GatewayError>,
) -> Option<Duration> {
    if retry.use_retry_after_header
        && let Ok(r) = answer
        && let Some(ms) = retry_after_ms(r.headers(), SystemTime::now())
    {
        return (ms <= retry.max_retry_after_ms).then(|| Duration::from_millis(ms));
    }
    Some(backoff(retry.backoff_base_ms, retry.backoff_max_ms, n))
}

/// Full jitter: uniform in `[0, min(max, base * 2^n)]` ms.
pub fn backoff(base_ms: u64, max_ms: u64, n: u32) -> Duration {
    let ceiling = base_ms.saturating_mul(1u64 << n.min(32)).min(max_ms);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

/// The upstream's wait, in ms: `retry-after-ms`, `x-ms-retry-after-ms`, then
/// `retry-after` (seconds or an HTTP date).
pub fn retry_after_ms(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(|t| t.parse::<f64>().ok())
            && ms.is_finite()
            && ms >= 0.0
        {
            return Some(ms.ceil() as u64);
        }
    }
    let value = text("retry-after")?;
    if let Ok(s) = value.parse::<u64>() {
        return Some(s.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |d| d.as_millis() as u64))
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
