//! One conformance suite every provider runs through: the same OpenAI requests —
//! chat, stream with usage, tools, an image, an upstream error — to each wire
//! format's mock, and the same OpenAI answers expected back.

use serde_json::{Value, json};
use sluice_tests::{MockUpstream, client, gateway_with_mock, openai_stream};

struct Provider {
    slug: &'static str,
    /// The model asked for (it picks the API on Vertex AI).
    model: &'static str,
    /// The custom host's path under the mock.
    base: &'static str,
    /// A model name that makes the mock answer 429.
    rate_limited: &'static str,
}

const PROVIDERS: &[Provider] = &[
    Provider {
        slug: "openai",
        model: "m-1",
        base: "/v1",
        rate_limited: "fault:status=429",
    },
    Provider {
        slug: "anthropic",
        model: "m-1",
        base: "/v1",
        rate_limited: "fault:status=429",
    },
    Provider {
        slug: "google",
        model: "m-1",
        base: "/v1beta",
        rate_limited: "fault-status-429",
    },
    Provider {
        slug: "cohere",
        model: "m-1",
        base: "/v2",
        rate_limited: "fault:status=429",
    },
    Provider {
        slug: "bedrock",
        model: "m-1",
        base: "",
        rate_limited: "fault-status-429",
    },
    Provider {
        slug: "vertex-ai",
        model: "gemini-m-1",
        base: "",
        rate_limited: "fault-status-429",
    },
    Provider {
        slug: "vertex-ai",
        model: "anthropic.claude-m-1",
        base: "",
        rate_limited: "claude-fault-status-429",
    },
];

const PNG: &str = "iVBORw0KGgoAAAANSUhEUg";

async fn send(
    gw: &sluice_tests::Gateway,
    mock: &MockUpstream,
    p: &Provider,
    body: Value,
) -> reqwest::Response {
    client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-provider", p.slug)
        .header("x-portkey-custom-host", mock.url(p.base))
        .header("authorization", "Bearer ya29.k-conformance")
        .header("x-portkey-vertex-project-id", "conformance")
        .header("x-portkey-aws-access-key-id", "AKIDCONFORMANCE")
        .header("x-portkey-aws-secret-access-key", "s")
        .json(&body)
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn every_provider_answers_the_same_requests_in_openai_shape() {
    let (mock, gw) = gateway_with_mock("").await;
    for p in PROVIDERS {
        let who = format!("{} {}", p.slug, p.model);
        let m = p.model;
        let hi =
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]);

        // Chat.
        let res = send(
            &gw,
            &mock,
            p,
            json!({"model": m, "messages": hi, "max_tokens": 50}),
        )
        .await;
        assert_eq!(res.status(), 200, "{who}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["object"], "chat.completion", "{who}");
        let choice = &body["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant", "{who}");
        assert!(
            choice["message"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{who}: {body}"
        );
        assert_eq!(choice["finish_reason"], "stop", "{who}");
        let u = &body["usage"];
        assert!(
            u["total_tokens"].as_u64().is_some_and(|t| t > 0),
            "{who}: {body}"
        );
        assert_eq!(
            u["total_tokens"].as_u64(),
            Some(
                u["prompt_tokens"].as_u64().unwrap_or(0)
                    + u["completion_tokens"].as_u64().unwrap_or(0)
            ),
            "{who}: {body}"
        );

        // Stream, with usage.
        let res = send(
            &gw,
            &mock,
            p,
            json!({"model": m, "messages": hi, "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await;
        assert_eq!(res.status(), 200, "{who}");
        let (chunks, text) = openai_stream(res).await;
        assert!(!text.is_empty(), "{who}");
        assert_eq!(
            chunks[0]["choices"][0]["delta"]["role"], "assistant",
            "{who}"
        );
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk"),
            "{who}"
        );
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop"),
            "{who}"
        );
        if p.slug != "openai" {
            // (The OpenAI mock does not send usage chunks; the others are translated.)
            assert!(
                chunks
                    .last()
                    .is_some_and(|c| c["usage"]["total_tokens"].as_u64().is_some()),
                "{who}"
            );
        }

        // Tools: the mock calls the first tool offered.
        let tools = json!([{"type": "function", "function": {"name": "lookup", "description": "Find",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
        let res = send(
            &gw,
            &mock,
            p,
            json!({"model": m, "messages": hi, "tools": tools, "tool_choice": "auto"}),
        )
        .await;
        assert_eq!(res.status(), 200, "{who}");
        let body: Value = res.json().await.expect("json");
        let call = &body["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function", "{who}: {body}");
        assert_eq!(call["function"]["name"], "lookup", "{who}: {body}");
        assert!(
            call["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{who}: {body}"
        );
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or(""))
                .expect("JSON arguments");
        assert_eq!(args, json!({"q": "x"}), "{who}");
        assert_eq!(
            body["choices"][0]["finish_reason"], "tool_calls",
            "{who}: {body}"
        );

        // An image reaches the wire, in the provider's own form.
        let image = json!([{"role": "user", "content": [{"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}]}]);
        let res = send(&gw, &mock, p, json!({"model": m, "messages": image})).await;
        assert_eq!(res.status(), 200, "{who}");
        let sent = mock.last().expect("a request");
        assert!(
            String::from_utf8_lossy(&sent.body).contains(PNG),
            "{who}: the image was lost"
        );

        // An upstream error: its status, OpenAI's shape.
        let res = send(
            &gw,
            &mock,
            p,
            json!({"model": p.rate_limited, "messages": hi}),
        )
        .await;
        assert_eq!(res.status(), 429, "{who}");
        let body: Value = res.json().await.expect("json");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{who}: {body}"
        );
        if p.slug != "openai" {
            assert_eq!(body["error"]["type"], "rate_limit_error", "{who}: {body}");
        }
    }
}
