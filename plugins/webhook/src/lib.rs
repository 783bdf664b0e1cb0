//! `webhook` (`default.webhook`): asks an HTTP endpoint for the verdict, with
//! Portkey's parameters and wire format. The gateway makes the call
//! (`host.fetch`): the plugin opens no sockets.
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `webhookURL` | | where the event is posted |
//! | `headers` | | extra headers, an object (or its JSON text) |
//! | `timeout` | 3000 | milliseconds, at most 10000 |
//!
//! The event is Portkey's hook context: `request` or `response` (`json`,
//! `text`), `provider`, `model`, `requestType`, `metadata`, `eventType`. The
//! answer must be a JSON object with a boolean `verdict`; its `reason` (or
//! `explanation`) becomes the failure's reason, and its `data` goes into the
//! hook results. An unreachable webhook, a non-2xx answer or an answer
//! without `verdict` is a plugin error: the hook's `on_error` (Portkey's
//! `failOnError`) decides. Portkey's `transformedData` is not applied.

mod post;

use serde::Deserialize;
use serde_json::Value;
use sluice_plugin_sdk::guardrail::*;

pub struct Config(post::Target);

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        post::Target::read(&v, "webhookURL")
            .map(Config)
            .map_err(serde::de::Error::custom)
    }
}

/// The verdict in a webhook's answer.
fn verdict(status: u16, body: &[u8], url: &str) -> Result<Verdict, Error> {
    if !(200..300).contains(&status) {
        return Err(Error::Internal(format!("{url} answered {status}")));
    }
    let answer: Value = serde_json::from_slice(body)
        .map_err(|_| Error::Internal(format!("{url} did not answer JSON")))?;
    let ok = answer
        .get("verdict")
        .and_then(Value::as_bool)
        .ok_or_else(|| Error::Internal(format!("{url} answered without a boolean `verdict`")))?;
    let mut v = if ok {
        Verdict::pass()
    } else {
        let why = ["reason", "explanation"]
            .iter()
            .find_map(|k| answer.get(*k).and_then(Value::as_str))
            .unwrap_or("the webhook's verdict is false");
        Verdict::fail(why)
    };
    if let Some(data) = answer.get("data") {
        v = v.with_data(data);
    }
    Ok(v)
}

struct Webhook;

impl Guardrail for Webhook {
    type Config = Config;
    const DESCRIPTION: &'static str =
        "Asks a webhook for the verdict (Portkey's default.webhook); the gateway makes the call";
    const WANTS_BODY: bool = true;

    fn check(config: &Config, input: &CheckInput) -> Result<Verdict, Error> {
        let answer = config.0.post(&post::event(input))?;
        verdict(answer.status, &answer.body, &config.0.url)
    }
}

sluice_plugin_sdk::export_guardrail!(Webhook);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_become_verdicts_and_bad_answers_errors() {
        let pass = verdict(200, br#"{"verdict": true, "data": {"score": 0.1}}"#, "u").expect("ok");
        assert!(matches!(pass.outcome, Outcome::Pass));
        assert_eq!(pass.data.as_deref(), Some(r#"{"score":0.1}"#));
        let fail = verdict(200, br#"{"verdict": false, "reason": "off-topic"}"#, "u").expect("ok");
        assert!(matches!(fail.outcome, Outcome::Fail(ref f) if f.reason == "off-topic"));
        for (status, body, says) in [
            (500, &b"{}"[..], "answered 500"),
            (200, b"<html>", "did not answer JSON"),
            (200, br#"{"verdict": "yes"}"#, "boolean `verdict`"),
        ] {
            match verdict(status, body, "https://hook.test") {
                Err(Error::Internal(e)) => assert!(e.contains(says), "{e}"),
                other => panic!("{says}: {other:?}"),
            }
        }
    }

    #[test]
    fn parameters_and_the_event_posted() {
        let read = |v: Value| serde_json::from_value::<Config>(v).map(|c| c.0);
        let t = read(json!({"webhookURL": "https://hook.test/x", "headers": "{\"x-k\": \"v\"}", "timeout": 500}))
            .expect("config");
        assert_eq!(
            (t.url.as_str(), t.timeout_ms, t.headers.len()),
            ("https://hook.test/x", 500, 1)
        );
        for bad in [
            json!({}),
            json!({"webhookURL": "ftp://x"}),
            json!({"webhookURL": "https://x", "headers": {"a": 1}}),
            json!({"webhookURL": "https://x", "timeout": 0}),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
        let input = CheckInput {
            stage: Stage::BeforeRequest,
            endpoint: Endpoint::Chat,
            provider: "openai".into(),
            model: Some("gpt-4o".into()),
            metadata: vec![Pair {
                key: "user".into(),
                value: "u1".into(),
            }],
            segments: vec![
                Segment {
                    role: Role::System,
                    text: "Be brief.".into(),
                },
                Segment {
                    role: Role::User,
                    text: "Hi there".into(),
                },
            ],
            body: Some(r#"{"model":"gpt-4o","messages":[]}"#.into()),
        };
        let e = post::event(&input);
        assert_eq!(e["eventType"], "beforeRequestHook");
        assert_eq!(e["requestType"], "chatComplete");
        assert_eq!(e["request"]["text"], "Hi there");
        assert_eq!(e["request"]["json"]["model"], "gpt-4o");
        assert_eq!(e["metadata"]["user"], "u1");
        assert_eq!(e["response"], json!({}));
    }
}
