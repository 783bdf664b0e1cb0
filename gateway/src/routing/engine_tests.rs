//! The engine against a scripted upstream, in paused time: every wait (backoff,
//! Retry-After, timeouts, cool-downs) is exact and costs no wall-clock time.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::*;
use crate::config::routing::parse_json;
use crate::routing::ConfigLabel;

/// What a scripted upstream does with one call.
#[derive(Debug, Clone)]
enum Reply {
    Status(u16),
    /// A status with a header.
    StatusWith(u16, &'static str, String),
    /// Answers 200 after this long (or times out first).
    Slow(Duration),
    /// The connection fails.
    Down,
}

/// Scripted replies per provider (the last one repeats), and the calls made.
#[derive(Default)]
struct Script {
    replies: Mutex<HashMap<String, VecDeque<Reply>>>,
    calls: Mutex<Vec<(String, Instant)>>,
    prepared: Mutex<Vec<String>>,
}

impl Script {
    fn new(replies: &[(&str, &[Reply])]) -> Self {
        let s = Self::default();
        if let Ok(mut r) = s.replies.lock() {
            for (provider, list) in replies {
                r.insert((*provider).to_owned(), list.iter().cloned().collect());
            }
        }
        s
    }

    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .map(|c| c.iter().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default()
    }

    /// Time between consecutive calls.
    fn gaps(&self) -> Vec<Duration> {
        let calls = self.calls.lock().map(|c| c.clone()).unwrap_or_default();
        calls.windows(2).map(|w| w[1].1 - w[0].1).collect()
    }
}

impl Attempts for Script {
    type Body = ();
    type Prepared = ();

    async fn prepare(&self, target: &Target) -> Result<Step<(), ()>, GatewayError> {
        if let Ok(mut p) = self.prepared.lock() {
            p.push(target.provider.slug().to_owned());
        }
        Ok(Step::Send(()))
    }

    async fn send(
        &self,
        target: &Target,
        _: &(),
        deadline: &Deadline,
        _in_flight: InFlight,
    ) -> Result<http::Response<()>, GatewayError> {
        let slug = target.provider.slug().to_owned();
        if let Ok(mut c) = self.calls.lock() {
            c.push((slug.clone(), Instant::now()));
        }
        let reply = self.replies.lock().ok().and_then(|mut r| {
            let q = r.get_mut(&slug)?;
            if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().cloned()
            }
        });
        let status = |code: u16| {
            http::Response::builder()
                .status(code)
                .body(())
                .map_err(|e| GatewayError::Internal(e.to_string()))
        };
        match reply.unwrap_or(Reply::Status(200)) {
            Reply::Status(code) => status(code),
            Reply::StatusWith(code, name, value) => http::Response::builder()
                .status(code)
                .header(name, value)
                .body(())
                .map_err(|e| GatewayError::Internal(e.to_string())),
            Reply::Slow(d) => {
                tokio::time::timeout_at(deadline.at, tokio::time::sleep(d))
                    .await
                    .map_err(|_| deadline.error())?;
                status(200)
            }
            Reply::Down => Err(GatewayError::UpstreamUnreachable {
                provider: slug,
                detail: "connection refused".into(),
            }),
        }
    }
}

fn server() -> ServerConfig {
    let mut text = String::from("[upstream]\ntimeout_ms = 30000\ntotal_timeout_ms = 60000\n");
    for slug in ["a", "b", "c", "d"] {
        text.push_str(&format!(
            "[[providers]]\nslug = \"{slug}\"\nbase_url = \"http://127.0.0.1:9/v1\"\n"
        ));
    }
    ServerConfig::parse(&text).expect("server config")
}

struct Run {
    server: ServerConfig,
    plugins: plugins::Registry,
    targets: Targets,
    headers: HeaderMap,
    metadata: Map<String, Value>,
}

impl Run {
    fn new(breaker: BreakerSettingsForTest) -> Self {
        Self {
            server: server(),
            plugins: plugins::Registry::without_plugins().expect("registry"),
            targets: Targets::new(breaker.0),
            headers: HeaderMap::new(),
            metadata: Map::new(),
        }
    }

    async fn go(&self, config: &str, script: &Script, body: &str) -> Tried<()> {
        let config = parse_json(config, &|s| self.server.providers.contains(s)).expect("config");
        let label = ConfigLabel::Named("test".into());
        let vkeys = crate::keys::VirtualKeys::none().expect("no virtual keys");
        let engine = Engine::new(
            &self.server,
            &self.plugins,
            &vkeys,
            &self.targets,
            &self.headers,
            &label,
            true,
            Endpoint::Chat,
            &self.metadata,
            "/v1/chat/completions",
            body.as_bytes(),
            Total::new(config.total_timeout_ms, self.server.upstream.total_timeout),
            script,
        );
        engine.run(&config).await
    }
}

struct BreakerSettingsForTest(crate::config::BreakerSettings);

fn breakers(consecutive: u32) -> BreakerSettingsForTest {
    BreakerSettingsForTest(crate::config::BreakerSettings {
        consecutive_failures: consecutive,
        cool_down: Duration::from_secs(10),
        ..Default::default()
    })
}

fn path(t: &Tried<()>) -> &str {
    t.target.as_ref().map_or("", |(p, _)| p.as_str())
}

const FALLBACK_ABC: &str = r#"{"strategy":{"mode":"fallback"},"targets":[{"provider":"a"},{"provider":"b"},{"provider":"c"}]}"#;

#[tokio::test(start_paused = true)]
async fn fallback_moves_on_over_failures_and_returns_the_first_success() {
    let run = Run::new(breakers(100));
    let script = Script::new(&[("a", &[Reply::Status(500)]), ("b", &[Reply::Down])]);
    let t = run.go(FALLBACK_ABC, &script, "{}").await;
    assert_eq!(t.status(), 200);
    assert_eq!(path(&t), "config.targets[2]");
    assert_eq!(script.calls(), ["a", "b", "c"]);
    assert_eq!(t.retries, 0);
}

#[tokio::test(start_paused = true)]
async fn fallback_returns_the_last_answer_when_all_fail() {
    let run = Run::new(breakers(100));
    let script = Script::new(&[
        ("a", &[Reply::Status(500)]),
        ("b", &[Reply::Status(502)]),
        ("c", &[Reply::Status(429)]),
    ]);
    let t = run.go(FALLBACK_ABC, &script, "{}").await;
    assert_eq!(t.status(), 429);
    assert_eq!(path(&t), "config.targets[2]");
}

#[tokio::test(start_paused = true)]
async fn fallback_status_codes_decide_but_transport_failures_always_move_on() {
    let run = Run::new(breakers(100));
    let cfg = r#"{"strategy":{"mode":"fallback","on_status_codes":[429]},
        "targets":[{"provider":"a"},{"provider":"b"},{"provider":"c"}]}"#;
    // A 500 is not in the list: it is the answer.
    let script = Script::new(&[("a", &[Reply::Status(500)])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), path(&t)), (500, "config.targets[0]"));
    // A 429 is; a refused connection always moves on.
    let script = Script::new(&[("a", &[Reply::Status(429)]), ("b", &[Reply::Down])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), path(&t)), (200, "config.targets[2]"));
    // The older form, beside the strategy, means the same.
    let legacy = r#"{"strategy":{"mode":"fallback"},"on_status_codes":[429],
        "targets":[{"provider":"a"},{"provider":"b"}]}"#;
    let script = Script::new(&[("a", &[Reply::Status(500)])]);
    let t = run.go(legacy, &script, "{}").await;
    assert_eq!((t.status(), path(&t)), (500, "config.targets[0]"));
    // A 4xx without a list moves on too (any non-2xx).
    let script = Script::new(&[("a", &[Reply::Status(401)])]);
    let t = run.go(FALLBACK_ABC, &script, "{}").await;
    assert_eq!((t.status(), path(&t)), (200, "config.targets[1]"));
}

#[tokio::test(start_paused = true)]
async fn nested_trees_report_the_full_path() {
    let run = Run::new(breakers(100));
    let cfg = r#"{"strategy":{"mode":"fallback"},"targets":[
        {"provider":"a"},
        {"strategy":{"mode":"loadbalance"},"targets":[
            {"provider":"b","weight":0},
            {"strategy":{"mode":"single"},"targets":[{"provider":"c"}]}]}]}"#;
    let script = Script::new(&[("a", &[Reply::Status(503)])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!(path(&t), "config.targets[1].targets[1].targets[0]");
    assert_eq!(script.calls(), ["a", "c"]);
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_codes_and_count_like_portkey() {
    let run = Run::new(breakers(100));
    let cfg =
        r#"{"provider":"a","retry":{"attempts":3,"backoff_base_ms":100,"backoff_max_ms":1000}}"#;
    let script = Script::new(&[("a", &[Reply::Status(503), Reply::Down, Reply::Status(200)])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), t.retries), (200, 2));
    assert_eq!(script.calls().len(), 3);
    assert_eq!(
        script.prepared.lock().map(|p| p.len()).unwrap_or(0),
        1,
        "a body is prepared once per target, not per retry"
    );

    // Attempts ran out: -1, and 1 + attempts calls.
    let script = Script::new(&[("a", &[Reply::Status(500)])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), t.retries), (500, -1));
    assert_eq!(script.calls().len(), 4);

    // Not a retry status: answered at once.
    let script = Script::new(&[("a", &[Reply::Status(400)])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), t.retries), (400, 0));

    // Its own list replaces the defaults.
    let cfg = r#"{"provider":"a","retry":{"attempts":2,"on_status_codes":[401]}}"#;
    let script = Script::new(&[("a", &[Reply::Status(401), Reply::Status(500)])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), t.retries), (500, 1));
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_grow_within_full_jitter_bounds() {
    let run = Run::new(breakers(100));
    let cfg =
        r#"{"provider":"a","retry":{"attempts":5,"backoff_base_ms":100,"backoff_max_ms":350}}"#;
    let script = Script::new(&[("a", &[Reply::Status(503)])]);
    run.go(cfg, &script, "{}").await;
    let gaps = script.gaps();
    assert_eq!(gaps.len(), 5);
    for (n, gap) in gaps.iter().enumerate() {
        let ceiling = (100u64 << n).min(350);
        assert!(
            gap.as_millis() as u64 <= ceiling,
            "retry {n}: {gap:?} > {ceiling} ms"
        );
    }
}

#[test]
fn full_jitter_covers_its_range() {
    let samples: Vec<u64> = (0..2000)
        .map(|_| backoff(100, 10_000, 3).as_millis() as u64)
        .collect();
    assert!(samples.iter().all(|&s| s <= 800));
    assert!(samples.iter().any(|&s| s < 100), "low end reached");
    assert!(samples.iter().any(|&s| s > 700), "high end reached");
    // Capped, and no overflow for huge retry numbers.
    assert!(backoff(100, 350, 60).as_millis() <= 350);
    assert_eq!(backoff(0, 1000, 3), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_when_asked_and_capped() {
    let run = Run::new(breakers(100));
    let cfg = r#"{"provider":"a","retry":{"attempts":2,"use_retry_after_header":true,"max_retry_after_ms":5000}}"#;
    let script = Script::new(&[(
        "a",
        &[
            Reply::StatusWith(429, "retry-after-ms", "1500".into()),
            Reply::StatusWith(503, "retry-after", "2".into()),
            Reply::Status(200),
        ],
    )]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), t.retries), (200, 2));
    assert_eq!(
        script.gaps(),
        [Duration::from_millis(1500), Duration::from_secs(2)]
    );

    // Longer than max_retry_after_ms: no retry at all.
    let script = Script::new(&[("a", &[Reply::StatusWith(429, "retry-after", "60".into())])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), t.retries), (429, 0));
    assert_eq!(script.calls().len(), 1);

    // Without the flag, the header is ignored (backoff instead).
    let cfg = r#"{"provider":"a","retry":{"attempts":1,"backoff_base_ms":10}}"#;
    let script = Script::new(&[(
        "a",
        &[
            Reply::StatusWith(429, "retry-after", "30".into()),
            Reply::Status(200),
        ],
    )]);
    run.go(cfg, &script, "{}").await;
    assert!(script.gaps()[0] <= Duration::from_millis(10));
}

#[test]
fn retry_after_headers_in_every_form() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let h = |name: &'static str, v: &str| {
        let mut m = HeaderMap::new();
        m.insert(name, http::HeaderValue::from_str(v).expect("value"));
        m
    };
    assert_eq!(
        retry_after_ms(&h("retry-after-ms", "250.5"), now),
        Some(251)
    );
    assert_eq!(
        retry_after_ms(&h("x-ms-retry-after-ms", "40"), now),
        Some(40)
    );
    assert_eq!(retry_after_ms(&h("retry-after", "3"), now), Some(3000));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
    assert_eq!(retry_after_ms(&h("retry-after", &later), now), Some(7000));
    let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
    assert_eq!(retry_after_ms(&h("retry-after", &past), now), Some(0));
    assert_eq!(retry_after_ms(&h("retry-after", "soon"), now), None);
    assert_eq!(retry_after_ms(&h("retry-after-ms", "-1"), now), None);
    assert_eq!(retry_after_ms(&HeaderMap::new(), now), None);
}

#[tokio::test(start_paused = true)]
async fn a_request_timeout_is_a_408_and_fallback_moves_on() {
    let run = Run::new(breakers(100));
    let single = r#"{"provider":"a","request_timeout":100}"#;
    let script = Script::new(&[("a", &[Reply::Slow(Duration::from_secs(5))])]);
    let started = Instant::now();
    let t = run.go(single, &script, "{}").await;
    assert_eq!(t.status(), 408);
    assert_eq!(started.elapsed(), Duration::from_millis(100));

    let cfg = r#"{"strategy":{"mode":"fallback","on_status_codes":[500]},"request_timeout":100,
        "targets":[{"provider":"a"},{"provider":"b"}]}"#;
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), path(&t)), (200, "config.targets[1]"));
}

#[tokio::test(start_paused = true)]
async fn the_total_deadline_bounds_retries_and_fallbacks() {
    let run = Run::new(breakers(100));
    // Each try takes 400 ms and fails by timeout; the whole request has 1 s.
    let cfg = r#"{"strategy":{"mode":"fallback"},"total_timeout":1000,"request_timeout":400,
        "retry":{"attempts":10,"on_status_codes":[408],"backoff_base_ms":1,"backoff_max_ms":1},
        "targets":[{"provider":"a"},{"provider":"b"}]}"#;
    let script = Script::new(&[("a", &[Reply::Slow(Duration::from_secs(5))])]);
    let started = Instant::now();
    let t = run.go(cfg, &script, "{}").await;
    assert!(
        started.elapsed() <= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(t.status(), 408, "the caller's total_timeout");
    assert!(matches!(
        t.answer,
        Err(GatewayError::DeadlinePassed { client: true, .. })
    ));
    assert_eq!(
        script.calls().iter().filter(|c| *c == "b").count(),
        0,
        "fallback stops too"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_skipped_then_probed_after_the_cool_down() {
    let run = Run::new(breakers(2));
    let cfg = r#"{"strategy":{"mode":"fallback"},"targets":[{"provider":"a"},{"provider":"b"}]}"#;
    let script = Script::new(&[("a", &[Reply::Status(503)])]);
    for _ in 0..2 {
        let t = run.go(cfg, &script, "{}").await;
        assert_eq!(path(&t), "config.targets[1]");
    }
    assert_eq!(script.calls(), ["a", "b", "a", "b"]);
    // Open: a is not called at all.
    run.go(cfg, &script, "{}").await;
    assert_eq!(script.calls()[4..], ["b"]);

    // After the cool-down one probe goes to a; it succeeds and closes.
    tokio::time::advance(Duration::from_secs(10)).await;
    if let Ok(mut r) = script.replies.lock() {
        r.insert("a".into(), [Reply::Status(200)].into_iter().collect());
    }
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!(path(&t), "config.targets[0]");
    let key_a = super::super::targets::key("a", None, None, None);
    assert!(!run.targets.get(&key_a).circuit_open);
    assert_eq!(run.targets.admit(&key_a), Ok(()), "closed again");
}

#[tokio::test(start_paused = true)]
async fn every_circuit_open_is_a_503_with_retry_after() {
    let run = Run::new(breakers(1));
    let cfg = r#"{"provider":"a"}"#;
    let script = Script::new(&[("a", &[Reply::Down])]);
    assert_eq!(run.go(cfg, &script, "{}").await.status(), 502);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!(t.status(), 503);
    match &t.answer {
        Err(GatewayError::CircuitOpen { retry_after, .. }) => {
            assert_eq!(*retry_after, Duration::from_secs(10));
        }
        other => panic!("{:?}", other.as_ref().map(|r| r.status())),
    }
    assert_eq!(script.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_the_circuit_opens() {
    let run = Run::new(breakers(2));
    let cfg = r#"{"provider":"a","retry":{"attempts":5,"backoff_base_ms":1}}"#;
    let script = Script::new(&[("a", &[Reply::Status(500)])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!(script.calls().len(), 2, "the second failure opened it");
    assert_eq!((t.status(), t.retries), (500, 1));
}

#[tokio::test(start_paused = true)]
async fn loadbalance_follows_weights_and_skips_open_circuits() {
    let run = Run::new(breakers(1));
    let cfg = r#"{"strategy":{"mode":"loadbalance"},"targets":[
        {"provider":"a","weight":3},{"provider":"b","weight":1},{"provider":"c","weight":0}]}"#;
    let script = Script::new(&[]);
    for _ in 0..400 {
        run.go(cfg, &script, "{}").await;
    }
    let calls = script.calls();
    let a = calls.iter().filter(|c| *c == "a").count();
    assert!(!calls.iter().any(|c| c == "c"), "weight 0 is never chosen");
    assert!((240..=360).contains(&a), "a got {a} of 400 at weight 3:1");

    // b fails once: its circuit opens and every request goes to a.
    let script = Script::new(&[("b", &[Reply::Status(500)])]);
    while !script.calls().iter().any(|c| c == "b") {
        run.go(cfg, &script, "{}").await;
    }
    let before = script.calls().len();
    for _ in 0..50 {
        run.go(cfg, &script, "{}").await;
    }
    assert!(script.calls()[before..].iter().all(|c| c == "a"));
}

#[tokio::test(start_paused = true)]
async fn least_in_flight_and_least_latency_balancing() {
    let run = Run::new(breakers(100));
    let cfg = r#"{"strategy":{"mode":"loadbalance","balance":"least_in_flight"},
        "targets":[{"provider":"a"},{"provider":"b"}]}"#;
    let key_a = super::super::targets::key("a", None, None, None);
    let key_b = super::super::targets::key("b", None, None, None);
    let busy: Vec<InFlight> = (0..3).map(|_| run.targets.start(&key_a)).collect();
    let script = Script::new(&[]);
    for _ in 0..20 {
        run.go(cfg, &script, "{}").await;
    }
    assert!(
        script.calls().iter().all(|c| c == "b"),
        "{:?}",
        script.calls()
    );
    drop(busy);

    let cfg = r#"{"strategy":{"mode":"loadbalance","balance":"least_latency"},
        "targets":[{"provider":"a"},{"provider":"b"}]}"#;
    run.targets
        .record(&key_a, Outcome::Success, Duration::from_millis(900));
    run.targets
        .record(&key_b, Outcome::Success, Duration::from_millis(50));
    let script = Script::new(&[
        ("a", &[Reply::Slow(Duration::from_millis(900))]),
        ("b", &[Reply::Slow(Duration::from_millis(50))]),
    ]);
    for _ in 0..200 {
        run.go(cfg, &script, "{}").await;
    }
    let b = script.calls().iter().filter(|c| *c == "b").count();
    assert!(b >= 160, "b (fast) got {b} of 200");
    assert!(
        b < 200,
        "one call in ten goes by weight, so a is seen again"
    );
}

#[tokio::test(start_paused = true)]
async fn conditions_pick_a_named_target_or_the_default_or_fail_naming_the_config() {
    let mut run = Run::new(breakers(100));
    run.metadata.insert("tier".into(), "pro".into());
    let cfg = r#"{"strategy":{"mode":"conditional","conditions":[
            {"query":{"params.model":{"$regex":"^big"}},"then":"big"},
            {"query":{"$and":[{"metadata.tier":"pro"},{"params.max_tokens":{"$gt":1000}}]},"then":"pro"}],
          "default":"base"},
        "targets":[{"name":"base","provider":"a"},{"name":"pro","provider":"b"},{"name":"big","provider":"c"}]}"#;
    let cases = [
        (r#"{"model":"big-1"}"#, "config.targets[2]"),
        (r#"{"model":"m","max_tokens":4000}"#, "config.targets[1]"),
        (r#"{"model":"m","max_tokens":10}"#, "config.targets[0]"),
        ("not json", "config.targets[0]"),
    ];
    let script = Script::new(&[]);
    for (body, want) in cases {
        let t = run.go(cfg, &script, body).await;
        assert_eq!(path(&t), want, "{body}");
    }
    let no_default = cfg.replace(r#""default":"base""#, r#""on_status_codes":[500]"#);
    let t = run.go(&no_default, &script, r#"{"model":"m"}"#).await;
    assert_eq!(t.status(), 400);
    let msg = t.answer.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("config `test`") && msg.contains("`config`"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn single_takes_the_first_target() {
    let run = Run::new(breakers(100));
    let cfg = r#"{"strategy":{"mode":"single"},"targets":[{"provider":"b"},{"provider":"a"}]}"#;
    let script = Script::new(&[("b", &[Reply::Status(500)])]);
    let t = run.go(cfg, &script, "{}").await;
    assert_eq!((t.status(), path(&t)), (500, "config.targets[0]"));
    assert_eq!(script.calls(), ["b"]);
}
