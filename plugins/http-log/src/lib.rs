//! `log` (`default.log`): posts each request (or response) to a log
//! endpoint and passes, with Portkey's parameters — `logURL`, `headers`,
//! `timeout` (milliseconds, default 3000). The event is the same hook context
//! `webhook` posts. The gateway makes the call (`host.fetch`). A failed post
//! is a plugin error; the hook's `on_error` decides (fail-open unless the
//! hook denies). Mark the hook `async: true` so requests do not wait for it.

#[path = "../../webhook/src/post.rs"]
mod post;

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_plugin_sdk::guardrail::*;

pub struct Config(post::Target);

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        post::Target::read(&v, "logURL")
            .map(Config)
            .map_err(serde::de::Error::custom)
    }
}

struct Log;

impl Guardrail for Log {
    type Config = Config;
    const DESCRIPTION: &'static str =
        "Posts each request or response to a log endpoint and passes (Portkey's default.log)";
    const WANTS_BODY: bool = true;

    fn check(config: &Config, input: &CheckInput) -> Result<Verdict, Error> {
        let answer = config.0.post(&post::event(input))?;
        if !(200..300).contains(&answer.status) {
            return Err(Error::Internal(format!(
                "{} answered {}",
                config.0.url, answer.status
            )));
        }
        Ok(Verdict::pass().with_data(&json!({"logged": true, "status": answer.status})))
    }
}

sluice_plugin_sdk::export_guardrail!(Log);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_name_the_log_url() {
        let read = |v: Value| serde_json::from_value::<Config>(v).map(|c| c.0);
        let t = read(json!({"logURL": "http://127.0.0.1:9/log"})).expect("config");
        assert_eq!(
            (t.url.as_str(), t.timeout_ms),
            ("http://127.0.0.1:9/log", 3000)
        );
        let err = read(json!({"webhookURL": "http://x"}))
            .map(|_| ())
            .expect_err("no logURL");
        assert!(err.to_string().contains("`logURL`"), "{err}");
    }
}
