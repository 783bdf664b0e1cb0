//! Native provider adapters end to end: OpenAI-format requests through the real
//! binary to a mock that speaks the provider's own wire format.

use serde_json::{Value, json};
use sluice_tests::{client, gateway_with_mock};

#[tokio::test]
async fn anthropic_chat_stream_usage_and_errors_through_the_gateway() {
    let (mock, gw) = gateway_with_mock("").await;
    let send = |body: Value| {
        let headers = vec![
            ("x-portkey-provider", "anthropic".into()),
            ("x-portkey-custom-host", mock.url("/v1")),
            ("authorization", "Bearer sk-ant-e2e".into()),
        ];
        let gw = &gw;
        async move { sluice_tests::post_json(gw, "/v1/chat/completions", &headers, &body).await }
    };
    let res = send(json!({"model": "claude-x", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}))
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Claude mock"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 17);
    let sent = mock.last().expect("a request");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], "sk-ant-e2e");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(!sent.headers.contains_key("authorization"));
    let wire = sent.json();
    assert_eq!(wire["system"][0]["text"], "Be brief.");
    assert_eq!(wire["max_tokens"], 4096);

    // Streamed: OpenAI chunks, a usage chunk when asked, then [DONE].
    let res = send(
        json!({"model": "claude-x", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (events, content) = sluice_tests::openai_stream(res).await;
    assert_eq!(content, "Hello Claude");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "stop")
    );
    assert_eq!(
        events
            .last()
            .map(|e| e["usage"]["completion_tokens"].clone()),
        Some(json!(2))
    );

    // Anthropic's errors, in OpenAI's shape with the same status.
    let res =
        send(json!({"model": "fault:status=429", "messages": [{"role": "user", "content": "hi"}]}))
            .await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("mock anthropic error 429"))
    );

    // What the Messages API cannot express is a 400 before any call.
    let before = mock.received().len();
    let res =
        send(json!({"model": "claude-x", "n": 3, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
    assert_eq!(res.status(), 400);
    assert_eq!(mock.received().len(), before);
}

#[tokio::test]
async fn count_tokens_reaches_anthropic_and_is_refused_elsewhere_in_anthropics_shape() {
    let (mock, gw) = gateway_with_mock("").await;
    let count = |provider: &'static str| {
        let gw = &gw;
        let host = mock.url("/v1");
        async move {
            client()
                .post(gw.at("/v1/messages/count_tokens"))
                .header("x-portkey-provider", provider)
                .header("x-portkey-custom-host", host)
                .header("x-api-key", "sk-ant-count")
                .json(
                    &json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}),
                )
                .send()
                .await
                .expect("send")
        }
    };
    let res = count("anthropic").await;
    assert_eq!(res.status(), 200);
    let sent = mock.last().expect("a request");
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.headers["x-api-key"], "sk-ant-count");
    assert_eq!(
        sent.json()["messages"][0]["content"],
        "hi",
        "passed as it is"
    );

    let res = count("mock").await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("count_tokens")),
        "{body}"
    );
}

#[tokio::test]
async fn google_gemini_chat_stream_embeddings_and_errors_through_the_gateway() {
    let (mock, gw) = gateway_with_mock("").await;
    let send = |path: &'static str, body: Value| {
        let headers = vec![
            ("x-portkey-provider", "google".into()),
            ("x-portkey-custom-host", mock.url("/v1beta")),
            ("authorization", "Bearer AIza-e2e".into()),
        ];
        let gw = &gw;
        async move { sluice_tests::post_json(gw, path, &headers, &body).await }
    };
    let res = send(
        "/v1/chat/completions",
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Gemini mock"
    );
    assert_eq!(body["usage"]["total_tokens"], 10);
    let sent = mock.last().expect("a request");
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent.headers["x-goog-api-key"], "AIza-e2e");
    assert_eq!(
        sent.json()["systemInstruction"]["parts"][0]["text"],
        "Be brief."
    );

    let res = send(
        "/v1/chat/completions",
        json!({"model": "gemini-2.5-flash", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (chunks, content) = sluice_tests::openai_stream(res).await;
    assert_eq!(content, "Hello Gemini");
    assert_eq!(
        mock.last().and_then(|r| r.query),
        Some("alt=sse".to_owned())
    );
    assert_eq!(
        chunks.last().map(|c| c["usage"]["total_tokens"].clone()),
        Some(json!(8))
    );

    let res = send(
        "/v1/embeddings",
        json!({"model": "gemini-embedding-001", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["data"][1]["embedding"], json!([1.0, 0.5]));

    let res = send(
        "/v1/chat/completions",
        json!({"model": "fault-status-429", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // And Claude clients reach Gemini too, through /v1/messages.
    let res = send(
        "/v1/messages",
        json!({"model": "gemini-2.5-flash", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hello from Gemini mock");
}

#[tokio::test]
async fn cohere_chat_stream_embeddings_rerank_and_errors_through_the_gateway() {
    let (mock, gw) = gateway_with_mock("").await;
    let send = |path: &'static str, body: Value| {
        let headers = vec![
            ("x-portkey-provider", "cohere".into()),
            ("x-portkey-custom-host", mock.url("/v2")),
            ("authorization", "Bearer co-e2e".into()),
        ];
        let gw = &gw;
        async move { sluice_tests::post_json(gw, path, &headers, &body).await }
    };
    let res = send("/v1/chat/completions", json!({"model": "command-a", "top_p": 0.5, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Cohere mock"
    );
    assert_eq!(body["usage"]["total_tokens"], 11);
    let sent = mock.last().expect("a request");
    assert_eq!(sent.path, "/v2/chat");
    assert_eq!(sent.headers["authorization"], "Bearer co-e2e");
    assert_eq!(sent.json()["p"], 0.5);

    let res = send(
        "/v1/chat/completions",
        json!({"model": "command-a", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let (chunks, content) = sluice_tests::openai_stream(res).await;
    assert_eq!(content, "Hello Cohere");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );

    let res = send(
        "/v1/embeddings",
        json!({"model": "embed-v4.0", "input": ["a", "b"]}),
    )
    .await;
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["data"][1]["embedding"], json!([1.0, 0.25]));
    assert_eq!(
        mock.last().map(|r| r.json()["input_type"].clone()),
        Some(json!("search_document"))
    );

    // Rerank has no OpenAI form: Cohere's own API, passed through.
    let res = send(
        "/v1/rerank",
        json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(mock.last().map(|r| r.path), Some("/v2/rerank".to_owned()));

    let res = send(
        "/v1/chat/completions",
        json!({"model": "fault:status=429", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["message"], "mock cohere error 429");
}

/// Bedrock at the mock, signed with test credentials.
fn bedrock_headers(mock: &sluice_tests::MockUpstream) -> Vec<(&'static str, String)> {
    vec![
        ("x-portkey-provider", "bedrock".into()),
        ("x-portkey-custom-host", mock.url("")),
        ("x-portkey-aws-access-key-id", "AKIDE2E".into()),
        ("x-portkey-aws-secret-access-key", "secret-e2e".into()),
    ]
}

#[tokio::test]
async fn bedrock_converse_stream_embeddings_and_errors_through_the_gateway() {
    let (mock, gw) = gateway_with_mock("").await;
    let send = |path: &'static str, body: Value| {
        let mut headers = bedrock_headers(&mock);
        headers.push(("x-portkey-aws-region", "eu-central-1".into()));
        let gw = &gw;
        async move { sluice_tests::post_json(gw, path, &headers, &body).await }
    };
    let res = send(
        "/v1/chat/completions",
        json!({"model": "anthropic.claude-3-haiku-20240307-v1:0", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Bedrock mock"
    );
    assert_eq!(body["usage"]["total_tokens"], 13);
    let sent = mock.last().expect("a request");
    assert_eq!(
        sent.path,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    let auth = sent.headers["authorization"].to_str().unwrap_or("");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDE2E/"),
        "{auth}"
    );
    assert!(
        auth.contains("/eu-central-1/bedrock/aws4_request"),
        "{auth}"
    );
    assert!(!auth.contains("secret-e2e"));

    let res = send(
        "/v1/chat/completions",
        json!({"model": "amazon.nova-lite-v1:0", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (chunks, content) = sluice_tests::openai_stream(res).await;
    assert_eq!(content, "Hello Bedrock");
    assert_eq!(
        chunks.last().map(|c| c["usage"]["total_tokens"].clone()),
        Some(json!(11))
    );

    let res = send(
        "/v1/embeddings",
        json!({"model": "amazon.titan-embed-text-v2:0", "input": "a"}),
    )
    .await;
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["data"][0]["embedding"], json!([0.5, 0.25]));

    let res = send(
        "/v1/chat/completions",
        json!({"model": "fault-status-429", "messages": []}),
    )
    .await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["message"], "mock bedrock error 429");
    assert_eq!(
        body["error"]["code"], "ThrottlingException",
        "from x-amzn-ErrorType"
    );
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn the_responses_api_passes_to_openai_and_is_translated_for_chat_only_providers() {
    let (mock, gw) = gateway_with_mock("").await;
    // OpenAI serves /responses itself: the request goes as it is.
    let body =
        json!({"model": "gpt-4.1", "input": "hi", "store": false, "reasoning": {"effort": "low"}});
    let res = client()
        .post(gw.at("/v1/responses"))
        .header("x-portkey-provider", "openai")
        .header("x-portkey-custom-host", mock.url("/v1"))
        .header("authorization", "Bearer sk-e2e")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let sent = mock.last().expect("a request");
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(sent.json(), body);

    // A chat-only provider: translated both ways.
    let send = |body: Value| {
        let headers = vec![("x-portkey-provider", "mock".into())];
        let gw = &gw;
        async move { sluice_tests::post_json(gw, "/v1/responses", &headers, &body).await }
    };
    let res = send(
        json!({"model": "m", "instructions": "Be brief.", "input": "hi", "max_output_tokens": 20}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello from mock");
    assert_eq!(body["usage"]["total_tokens"], 8);
    let sent = mock.last().expect("a request").json();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent["max_tokens"], 20);

    let res = send(json!({"model": "m", "input": "hi", "stream": true})).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("body");
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| {
            e.split_once("\ndata: ")
                .map(|(_, d)| serde_json::from_str(d).expect("json"))
        })
        .collect();
    assert_eq!(
        events.first().map(|e| e["type"].clone()),
        Some(json!("response.created"))
    );
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some(json!("response.completed"))
    );
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(deltas, "tok1 tok2 tok3 ");

    // What only OpenAI's servers keep is a clear 400.
    let res = send(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"})).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["param"], "previous_response_id");
}

#[tokio::test]
async fn bedrock_takes_claude_clients_messages_as_they_are() {
    let (mock, gw) = gateway_with_mock("").await;
    let send = |path: &'static str, body: Value| {
        let mut headers = bedrock_headers(&mock);
        headers.push(("anthropic-version", "2023-06-01".into()));
        let gw = &gw;
        async move { sluice_tests::post_json(gw, path, &headers, &body).await }
    };
    let claude = "anthropic.claude-3-5-haiku-20241022-v1:0";
    let res = send(
        "/v1/messages",
        json!({"model": claude, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hello from Claude mock");
    let sent = mock.last().expect("a request");
    assert_eq!(
        sent.path,
        format!("/model/{}/invoke", claude.replace(':', "%3A"))
    );
    assert_eq!(sent.json()["anthropic_version"], "bedrock-2023-05-31");
    assert!(
        sent.headers["authorization"]
            .to_str()
            .is_ok_and(|a| a.starts_with("AWS4-HMAC-SHA256"))
    );

    // Streamed: the InvokeModel event stream, unwrapped into Anthropic's events.
    let res = send(
        "/v1/messages",
        json!({"model": claude, "max_tokens": 20, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (events, text) = sluice_tests::anthropic_stream(res).await;
    assert_eq!(text, "Hello Claude");
    assert_eq!(events[0]["type"], "message_start");
    assert!(
        mock.last()
            .expect("sent")
            .path
            .ends_with("/invoke-with-response-stream")
    );

    let res = send(
        "/v1/messages/count_tokens",
        json!({"model": claude, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert!(
        body["input_tokens"].as_u64().is_some_and(|n| n > 0),
        "{body}"
    );

    // A model that is not Claude is served over Converse, translated.
    let res = send(
        "/v1/messages",
        json!({"model": "amazon.nova-lite-v1:0", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["content"][0]["text"], "Hello from Bedrock mock");
    assert!(mock.last().expect("sent").path.ends_with("/converse"));

    // Bedrock's errors reach Claude clients in Anthropic's shape.
    let res = send(
        "/v1/messages",
        json!({"model": "anthropic.fault-status-429", "max_tokens": 20, "messages": []}),
    )
    .await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn vertex_ai_exchanges_a_service_account_and_serves_gemini_claude_and_embeddings() {
    let (mock, gw) = gateway_with_mock("").await;
    let account = sluice_tests::mock::vertex_service_account(&mock);
    let send = |path: &'static str, body: Value, account: Value| {
        let headers = vec![
            ("x-portkey-provider", "vertex-ai".into()),
            ("x-portkey-custom-host", mock.url("")),
            ("x-portkey-vertex-region", "us-east5".into()),
            ("x-portkey-vertex-service-account-json", account.to_string()),
        ];
        let gw = &gw;
        async move { sluice_tests::post_json(gw, path, &headers, &body).await }
    };
    let tokens = || {
        mock.received()
            .iter()
            .filter(|r| r.path == "/token")
            .count()
    };
    let user = json!([{"role": "user", "content": "hi"}]);

    let res = send(
        "/v1/chat/completions",
        json!({"model": "gemini-2.5-flash", "messages": user}),
        account.clone(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Gemini mock"
    );
    let sent = mock.last().expect("a request");
    assert_eq!(
        sent.path,
        "/v1/projects/mock-project/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    let auth = sent.headers["authorization"]
        .to_str()
        .expect("auth")
        .to_owned();
    assert!(auth.starts_with("Bearer ya29.mock-"), "{auth}");
    assert_eq!(tokens(), 1);

    // Claude on Vertex, streamed; the token is reused, not exchanged again.
    let res = send(
        "/v1/chat/completions",
        json!({"model": "anthropic.claude-sonnet-4@20250514", "stream": true, "messages": user}),
        account.clone(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (_, content) = sluice_tests::openai_stream(res).await;
    assert_eq!(content, "Hello Claude");
    let sent = mock.last().expect("a request");
    assert!(
        sent.path
            .ends_with("/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict")
    );
    assert_eq!(sent.headers["authorization"].to_str().expect("auth"), auth);
    assert_eq!(tokens(), 1);

    let res = send(
        "/v1/embeddings",
        json!({"model": "text-embedding-005", "input": ["a", "b"]}),
        account.clone(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["data"][1]["embedding"], json!([1.0, 0.75]));
    assert_eq!(body["usage"]["prompt_tokens"], 4);

    // Claude clients: passed through to rawPredict, streaming included.
    let res = send(
        "/v1/messages",
        json!({"model": "claude-sonnet-4@20250514", "max_tokens": 20, "messages": user}),
        account.clone(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hello from Claude mock");
    assert!(mock.last().expect("sent").path.ends_with(":rawPredict"));
    let res = send(
        "/v1/messages",
        json!({"model": "claude-sonnet-4@20250514", "max_tokens": 20, "stream": true, "messages": user}),
        account.clone(),
    )
    .await;
    let (_, text) = sluice_tests::anthropic_stream(res).await;
    assert_eq!(text, "Hello Claude");
    // ... and translated for Gemini.
    let res = send(
        "/v1/messages",
        json!({"model": "gemini-2.5-flash", "max_tokens": 20, "messages": user}),
        account.clone(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["content"][0]["text"], "Hello from Gemini mock");
    assert_eq!(tokens(), 1);

    // A service account the token endpoint refuses: a 401 that says why.
    let mut impostor = account.clone();
    impostor["client_email"] = json!("someone@example.com");
    let res = send(
        "/v1/chat/completions",
        json!({"model": "gemini-2.5-flash", "messages": user}),
        impostor,
    )
    .await;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "credential_exchange_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid_grant")),
        "{body}"
    );
    assert!(!body.to_string().contains("PRIVATE KEY"));

    // A token endpoint that is down: 502, nothing sent to Vertex.
    let before = mock.received().len();
    let mut unreachable = account.clone();
    unreachable["token_uri"] = json!("http://127.0.0.1:9/token");
    unreachable["client_email"] = json!("other@mock-project.iam.gserviceaccount.com");
    let res = send(
        "/v1/chat/completions",
        json!({"model": "gemini-2.5-flash", "messages": user}),
        unreachable,
    )
    .await;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "credential_exchange_failed");
    assert_eq!(mock.received().len(), before);
}

#[tokio::test]
async fn vertex_ai_takes_an_access_token_and_a_config_target() {
    let (mock, gw) = gateway_with_mock("").await;
    // A config target with Portkey's field names and a ready access token.
    let config = json!({"provider": "vertex-ai", "api_key": "ya29.from-gcloud", "custom_host": mock.url(""),
                        "vertex_project_id": "proj-cfg", "vertex_region": "europe-west4"});
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string())
        .json(&json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let sent = mock.last().expect("a request");
    assert_eq!(
        sent.path,
        "/v1/projects/proj-cfg/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
    );
    assert_eq!(sent.headers["authorization"], "Bearer ya29.from-gcloud");
    assert!(mock.received().iter().all(|r| r.path != "/token"));

    // A token Vertex refuses: its 401 in OpenAI's shape.
    let mut config = config;
    config["api_key"] = json!("expired");
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string())
        .json(&json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn guardrails_apply_to_claude_clients_passed_through_and_translated() {
    let (mock, gw) = gateway_with_mock("").await;
    let send = |provider: &'static str, mut config: Value, text: &'static str| {
        config["provider"] = json!(provider);
        config["custom_host"] = json!(mock.url("/v1"));
        config["api_key"] = json!("sk-guard");
        let headers = vec![("x-portkey-config", config.to_string())];
        let gw = &gw;
        async move {
            let body = json!({"model": "claude-x", "max_tokens": 20, "system": "Be brief.",
                              "messages": [{"role": "user", "content": text}]});
            sluice_tests::post_json(gw, "/v1/messages", &headers, &body).await
        }
    };
    let deny = json!({"input_guardrails": [{"deny": true, "blocklist": {"words": ["forbidden"]}}]});
    for provider in ["anthropic", "mock"] {
        let res = send(provider, deny.clone(), "a forbidden word").await;
        assert_eq!(res.status(), 446, "{provider}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(
            body["hook_results"]["before_request_hooks"][0]["verdict"], false,
            "{provider}: {body}"
        );
    }
    assert!(
        mock.received().is_empty(),
        "a denied request reached an upstream"
    );

    // Output checks that fail without deny: 246, the answer in Anthropic's
    // shape, and the verdicts with it.
    let flag = json!({"input_guardrails": [{"blocklist": {"words": ["nothing-here"]}}],
                      "output_guardrails": [{"blocklist": {"words": ["Hello"]}}]});
    for (provider, text) in [
        ("anthropic", "Hello from Claude mock"),
        ("mock", "Hello from mock"),
    ] {
        let res = send(provider, flag.clone(), "hi").await;
        assert_eq!(res.status(), 246, "{provider}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["type"], "message", "{provider}: {body}");
        assert_eq!(body["content"][0]["text"], text, "{provider}: {body}");
        let results = &body["hook_results"];
        assert_eq!(
            results["before_request_hooks"][0]["verdict"], true,
            "{provider}: {body}"
        );
        assert_eq!(
            results["after_request_hooks"][0]["verdict"], false,
            "{provider}: {body}"
        );
    }
}
