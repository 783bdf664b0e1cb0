//! SSE streaming: passed through event by event, `[DONE]` kept, breaks reported,
//! client disconnects cancel the upstream.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice_tests::{Gateway, client, gateway_with_mock, mock};

async fn stream(gw: &Gateway, model: &str) -> reqwest::Response {
    client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-provider", "mock")
        .json(&json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn a_stream_arrives_exactly_as_sent_with_done() {
    let (_mock, gw) = gateway_with_mock("").await;
    let res = stream(&gw, "m").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    assert!(!res.headers().contains_key("content-length"));
    let text = res.text().await.expect("body");
    assert_eq!(text, mock::stream_events("m", 4).concat());
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn events_are_forwarded_as_they_arrive_not_buffered() {
    let (_mock, gw) = gateway_with_mock("").await;
    let started = Instant::now();
    let res = stream(&gw, "fault:slow").await;
    let mut body = res.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        arrivals.push(started.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(text, mock::stream_events("fault:slow", 5).concat());
    // The mock spaces its 6 events 200 ms apart (1 s in all). A buffering proxy
    // would deliver everything at the end; ours delivers the first event at
    // least half a second before the last.
    let first = arrivals.first().copied().unwrap_or_default();
    let last = arrivals.last().copied().unwrap_or_default();
    assert!(
        arrivals.len() >= 3,
        "expected separate chunks, got {}",
        arrivals.len()
    );
    assert!(
        last.saturating_sub(first) >= Duration::from_millis(500),
        "first {first:?}, last {last:?}"
    );
}

#[tokio::test]
async fn a_broken_stream_ends_with_an_error_event() {
    let (_mock, gw) = gateway_with_mock("").await;
    let text = stream(&gw, "fault:cut").await.text().await.expect("body");
    let events = mock::stream_events("fault:cut", 4);
    assert!(text.starts_with(&events[..2].concat()), "{text}");
    assert!(!text.contains("[DONE]"));
    let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
    let error: Value =
        serde_json::from_str(last.trim_start_matches("data: ")).expect("error event JSON");
    assert_eq!(error["error"]["code"], "upstream_stream_error");
}

#[tokio::test]
async fn failures_before_the_first_byte_are_plain_errors() {
    let (_mock, gw) = gateway_with_mock("").await;
    let res = stream(&gw, "fault:status=503").await;
    assert_eq!(res.status(), 503);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["error"]["message"], "mock error 503");
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_stream() {
    let (mock, gw) = gateway_with_mock("").await;
    let res = stream(&gw, "fault:endless").await;
    let mut body = res.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("chunk");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    assert_eq!(mock.streams_dropped_early(), 0);
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.streams_dropped_early() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        mock.streams_dropped_early(),
        1,
        "the upstream stream must be dropped"
    );
}

#[tokio::test]
async fn binary_bodies_that_break_abort_the_response() {
    let (_mock, gw) = gateway_with_mock("").await;
    let res = client()
        .post(gw.at("/v1/audio/speech"))
        .header("x-portkey-provider", "mock")
        .json(&json!({"model": "fault:cut", "input": "x", "voice": "alloy"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert!(
        res.bytes().await.is_err(),
        "a cut body must not look complete"
    );
}

/// An upstream that reads one request, never answers, and records whether the
/// gateway closed the connection (what dropping an upstream call does).
async fn hanging_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = closed.clone();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(100), socket.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                _ => {}
            }
        }
    });
    (addr, closed)
}

/// Not only streams: hyper drops the handler when the client's connection closes,
/// and with it the upstream call (this pins that behaviour down).
#[tokio::test]
async fn a_client_that_leaves_a_slow_request_cancels_it_upstream() {
    let (addr, closed) = hanging_upstream().await;
    let gw = Gateway::start(&format!(
        "[[providers]]\nslug = \"hang\"\nbase_url = \"http://{addr}/v1\"\n"
    ));
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(400))
        .build()
        .expect("client");
    let err = impatient
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-provider", "hang")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .expect_err("the client gives up first");
    assert!(err.is_timeout());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !closed.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        closed.load(std::sync::atomic::Ordering::SeqCst),
        "the upstream call must end with the client"
    );
}
