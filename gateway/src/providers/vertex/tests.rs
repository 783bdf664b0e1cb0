//! Golden tests against Vertex AI's REST reference: URLs, auth, bodies,
//! answers and errors for Gemini, Claude and Llama on Vertex, and the service
//! account JWT against one signed by OpenSSL.

use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::config::Secret;
use crate::providers::Provider;
use bytes::Bytes;

/// A throwaway RSA key made for these tests (`openssl genpkey`).
pub const TEST_KEY: &str = include_str!("test-key.pem");

fn account(token_uri: &str) -> Value {
    json!({
        "type": "service_account", "project_id": "sa-project", "private_key_id": "kid-1",
        "private_key": TEST_KEY, "client_email": "gw@sa-project.iam.gserviceaccount.com",
        "token_uri": token_uri,
    })
}

struct Setup {
    options: Map<String, Value>,
    headers: HeaderMap,
    key: Option<Secret>,
    token: Option<Secret>,
    custom_host: Option<String>,
}

impl Setup {
    fn new() -> Self {
        let mut options = Map::new();
        options.insert("vertex_project_id".into(), json!("proj-1"));
        options.insert("vertex_region".into(), json!("europe-west4"));
        Self {
            options,
            headers: HeaderMap::new(),
            key: None,
            token: Some(Secret::new("ya29.token".into())),
            custom_host: None,
        }
    }

    fn build(&self, endpoint: Endpoint, body: &Value) -> Result<UpstreamRequest, GatewayError> {
        let call = Call {
            endpoint,
            method: Method::POST,
            api_key: self.key.as_ref(),
            custom_host: self.custom_host.as_deref(),
            options: &self.options,
            client_headers: &self.headers,
            forward_headers: &[],
            query: None,
            proxy_path: "",
            body: Bytes::from(body.to_string()),
            token: self.token.as_ref(),
        };
        Vertex::new()
            .expect("spec")
            .build_request(&call)
            .now_or_never()
            .expect("ready")
    }
}

fn body(req: &UpstreamRequest) -> Value {
    serde_json::from_slice(&req.body).expect("json body")
}

const BASE: &str =
    "https://europe-west4-aiplatform.googleapis.com/v1/projects/proj-1/locations/europe-west4";

#[test]
fn gemini_chat_goes_to_generate_content_with_the_bearer_token() {
    let chat = json!({"model": "gemini-2.5-flash", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 10});
    let req = Setup::new().build(Endpoint::Chat, &chat).expect("built");
    assert_eq!(
        req.url.as_str(),
        format!("{BASE}/publishers/google/models/gemini-2.5-flash:generateContent")
    );
    assert_eq!(req.headers["authorization"], "Bearer ya29.token");
    assert!(req.headers["authorization"].is_sensitive());
    assert_eq!(req.headers["content-type"], "application/json");
    // The Gemini body, exactly as the `google` adapter writes it.
    let expected: Value = serde_json::from_slice(
        &google::to_gemini(chat.as_object().expect("object")).expect("gemini"),
    )
    .expect("json");
    assert_eq!(body(&req), expected);
    assert_eq!(
        expected["systemInstruction"]["parts"][0]["text"],
        "Be brief."
    );

    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let req = Setup::new().build(Endpoint::Chat, &stream).expect("built");
    assert_eq!(
        req.url.as_str(),
        format!("{BASE}/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    );
    // `google.` names the publisher explicitly.
    let mut named = chat;
    named["model"] = json!("google.gemini-2.5-flash");
    let req = Setup::new().build(Endpoint::Chat, &named).expect("built");
    assert!(
        req.url
            .path()
            .ends_with("/publishers/google/models/gemini-2.5-flash:generateContent")
    );
}

#[test]
fn the_global_region_and_the_provider_key_as_a_token() {
    let mut setup = Setup::new();
    setup
        .options
        .insert("vertex_region".into(), json!("global"));
    setup.token = None;
    setup.key = Some(Secret::new("gcloud-token".into()));
    let req = setup
        .build(
            Endpoint::Chat,
            &json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .expect("built");
    assert_eq!(
        req.url.as_str(),
        "https://aiplatform.googleapis.com/v1/projects/proj-1/locations/global/publishers/google/models/gemini-2.5-pro:generateContent"
    );
    assert_eq!(req.headers["authorization"], "Bearer gcloud-token");
}

#[test]
fn portkey_headers_and_the_service_accounts_project() {
    let mut setup = Setup::new();
    setup.options.clear();
    setup.headers.insert(
        "x-portkey-vertex-region",
        HeaderValue::from_static("us-east5"),
    );
    setup.headers.insert(
        "x-portkey-vertex-service-account-json",
        HeaderValue::from_str(&account("https://oauth2.googleapis.com/token").to_string())
            .expect("header"),
    );
    let req = setup
        .build(
            Endpoint::Chat,
            &json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .expect("built");
    assert!(
        req.url.as_str().starts_with(
            "https://us-east5-aiplatform.googleapis.com/v1/projects/sa-project/locations/us-east5/"
        ),
        "{}",
        req.url
    );
    // A custom host replaces Google's (the project route stays).
    setup.custom_host = Some("http://127.0.0.1:9/".into());
    let req = setup
        .build(
            Endpoint::Chat,
            &json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .expect("built");
    assert_eq!(
        req.url.as_str(),
        "http://127.0.0.1:9/v1/projects/sa-project/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"
    );
}

#[test]
fn claude_chat_goes_to_raw_predict_as_a_messages_body() {
    let chat = json!({"model": "anthropic.claude-sonnet-4@20250514", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    let req = Setup::new().build(Endpoint::Chat, &chat).expect("built");
    assert_eq!(
        req.url.as_str(),
        format!("{BASE}/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict")
    );
    assert_eq!(
        body(&req),
        json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 4096,
               "system": [{"type": "text", "text": "Be brief."}],
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]})
    );
    // A bare `claude-*` is Anthropic's too; streams go to streamRawPredict.
    let req = Setup::new()
        .build(
            Endpoint::Chat,
            &json!({"model": "claude-3-5-haiku@20241022", "stream": true,
                                        "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .expect("built");
    assert_eq!(
        req.url.as_str(),
        format!("{BASE}/publishers/anthropic/models/claude-3-5-haiku@20241022:streamRawPredict")
    );
    assert_eq!(body(&req)["stream"], true);
}

#[test]
fn messages_and_count_tokens_pass_through_for_claude() {
    let mut setup = Setup::new();
    setup.headers.insert(
        "anthropic-beta",
        HeaderValue::from_static("context-1m-2025-08-07"),
    );
    let messages = json!({"model": "claude-sonnet-4@20250514", "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hi"}], "thinking": {"type": "enabled", "budget_tokens": 1024}});
    let req = setup.build(Endpoint::Messages, &messages).expect("built");
    assert_eq!(
        req.url.as_str(),
        format!("{BASE}/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict")
    );
    assert_eq!(
        body(&req),
        json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 50,
               "messages": [{"role": "user", "content": "Hi"}], "thinking": {"type": "enabled", "budget_tokens": 1024}})
    );
    assert_eq!(req.headers["anthropic-beta"], "context-1m-2025-08-07");

    let count = json!({"model": "claude-sonnet-4@20250514", "messages": [{"role": "user", "content": "Hi"}]});
    let req = setup.build(Endpoint::CountTokens, &count).expect("built");
    assert_eq!(
        req.url.as_str(),
        format!("{BASE}/publishers/anthropic/models/count-tokens:rawPredict")
    );
    assert_eq!(body(&req)["model"], "claude-sonnet-4@20250514");

    // Only Claude takes the Messages API as it is.
    let v = Vertex::new().expect("spec");
    assert!(Provider::serves(
        &v,
        Endpoint::Messages,
        Some("anthropic.claude-opus-4@20250514")
    ));
    assert!(!Provider::serves(
        &v,
        Endpoint::Messages,
        Some("gemini-2.5-flash")
    ));
    assert!(!Provider::serves(&v, Endpoint::Messages, None));
    assert!(Provider::serves(
        &v,
        Endpoint::Chat,
        Some("gemini-2.5-flash")
    ));
    let err = setup
        .build(
            Endpoint::Messages,
            &json!({"model": "gemini-2.5-flash", "messages": []}),
        )
        .expect_err("not Claude");
    assert_eq!(err.code(), "unsupported_endpoint");
}

#[test]
fn llama_and_deployed_endpoints_take_openai_bodies() {
    let chat = json!({"model": "meta.llama-4-maverick-17b-128e-instruct-maas", "messages": [{"role": "user", "content": "Hi"}]});
    let req = Setup::new().build(Endpoint::Chat, &chat).expect("built");
    assert_eq!(
        req.url.as_str(),
        "https://europe-west4-aiplatform.googleapis.com/v1beta1/projects/proj-1/locations/europe-west4/endpoints/openapi/chat/completions"
    );
    assert_eq!(
        body(&req)["model"],
        "meta/llama-4-maverick-17b-128e-instruct-maas"
    );
    assert_eq!(body(&req)["messages"], chat["messages"]);

    let chat =
        json!({"model": "endpoints.1234567890", "messages": [{"role": "user", "content": "Hi"}]});
    let req = Setup::new().build(Endpoint::Chat, &chat).expect("built");
    assert_eq!(
        req.url.as_str(),
        format!("{BASE}/endpoints/1234567890/chat/completions")
    );
    assert_eq!(body(&req), chat);
}

#[test]
fn embeddings_go_to_predict() {
    let req = Setup::new()
        .build(
            Endpoint::Embeddings,
            &json!({"model": "text-embedding-005", "input": ["a", "b"],
                                              "dimensions": 256, "task_type": "RETRIEVAL_QUERY"}),
        )
        .expect("built");
    assert_eq!(
        req.url.as_str(),
        format!("{BASE}/publishers/google/models/text-embedding-005:predict")
    );
    assert_eq!(
        body(&req),
        json!({"instances": [{"content": "a", "task_type": "RETRIEVAL_QUERY"}, {"content": "b", "task_type": "RETRIEVAL_QUERY"}],
               "parameters": {"outputDimensionality": 256}})
    );
    let answer = json!({"predictions": [
        {"embeddings": {"values": [0.1, 0.2], "statistics": {"token_count": 2, "truncated": false}}},
        {"embeddings": {"values": [0.3, 0.4], "statistics": {"token_count": 3, "truncated": false}}}],
        "metadata": {"billableCharacterCount": 2}});
    let options = AnswerOptions {
        model: Some("text-embedding-005".into()),
        ..AnswerOptions::default()
    };
    let out = native::Native::answer(
        &Vertex::new().expect("spec"),
        Endpoint::Embeddings,
        answer.to_string().as_bytes(),
        &options,
    )
    .expect("mapped")
    .expect("some");
    assert_eq!(
        out,
        json!({"object": "list", "model": "text-embedding-005",
               "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
                        {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]}],
               "usage": {"prompt_tokens": 5, "total_tokens": 5}})
    );
    let err = Setup::new()
        .build(
            Endpoint::Embeddings,
            &json!({"model": "text-embedding-005", "input": [[1, 2]]}),
        )
        .expect_err("tokens");
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
}

#[test]
fn bad_settings_are_400s_and_missing_ones_say_what_is_missing() {
    let chat =
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hi"}]});
    for (field, value) in [
        ("vertex_region", "us-central1.evil.example/x"),
        ("vertex_region", "a b"),
        ("vertex_project_id", "p/../../x"),
        ("vertex_project_id", "p?x"),
    ] {
        let mut setup = Setup::new();
        setup.options.insert(field.into(), json!(value));
        let err = setup.build(Endpoint::Chat, &chat).expect_err(value);
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{value}");
    }
    for model in ["a/b", "../x", "gemini?x", ""] {
        let err = Setup::new()
            .build(Endpoint::Chat, &json!({"model": model, "messages": []}))
            .expect_err(model);
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{model}");
    }
    let mut setup = Setup::new();
    setup.token = None;
    let err = setup
        .build(Endpoint::Chat, &chat)
        .expect_err("no credentials");
    assert_eq!(err.code(), "missing_provider_setting");
    assert!(err.to_string().contains("service account"), "{err}");
    let mut setup = Setup::new();
    setup.options.remove("vertex_project_id");
    let err = setup.build(Endpoint::Chat, &chat).expect_err("no project");
    assert!(err.to_string().contains("vertex_project_id"), "{err}");
    // A malformed service account is the client's error, named.
    let mut setup = Setup::new();
    setup
        .options
        .insert("vertex_service_account_json".into(), json!("{not json"));
    let call_err = Provider::token_source(
        &Vertex::new().expect("spec"),
        &Call {
            endpoint: Endpoint::Chat,
            method: Method::POST,
            api_key: None,
            custom_host: None,
            options: &setup.options,
            client_headers: &setup.headers,
            forward_headers: &[],
            query: None,
            proxy_path: "",
            body: Bytes::new(),
            token: None,
        },
    )
    .expect_err("bad json");
    assert_eq!(call_err.status(), http::StatusCode::BAD_REQUEST);
    assert!(
        call_err.to_string().contains("service account"),
        "{call_err}"
    );
}

#[test]
fn answers_and_streams_are_mapped_by_the_models_publisher() {
    let v = Vertex::new().expect("spec");
    let claude = AnswerOptions {
        model: Some("anthropic.claude-sonnet-4@20250514".into()),
        ..AnswerOptions::default()
    };
    let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
        "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1}});
    let out = native::Native::answer(&v, Endpoint::Chat, message.to_string().as_bytes(), &claude)
        .expect("mapped")
        .expect("some");
    assert_eq!(out["choices"][0]["message"]["content"], "Hello");
    assert_eq!(out["usage"]["prompt_tokens"], 3);

    let gemini = AnswerOptions {
        model: Some("gemini-2.5-flash".into()),
        ..AnswerOptions::default()
    };
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP"}],
                        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1, "totalTokenCount": 3}});
    let out = native::Native::answer(&v, Endpoint::Chat, answer.to_string().as_bytes(), &gemini)
        .expect("mapped")
        .expect("some");
    assert_eq!(out["choices"][0]["message"]["content"], "Hi");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");

    // Llama answers in OpenAI's shape already.
    let llama = AnswerOptions {
        model: Some("meta.llama-3.3-70b".into()),
        ..AnswerOptions::default()
    };
    assert!(
        native::Native::answer(&v, Endpoint::Chat, b"{}", &llama)
            .expect("ok")
            .is_none()
    );
    assert!(native::Native::stream(&v, Endpoint::Chat, llama).is_none());

    let mut t = native::Native::stream(&v, Endpoint::Chat, claude).expect("claude stream");
    let sse = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":3}}}\n\n\
               event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n";
    let out = t
        .push(sse.as_bytes())
        .now_or_never()
        .expect("ready")
        .expect("ok");
    assert_eq!(out.len(), 2);
    assert!(out[1].contains("\"content\":\"Hel\""));
    let mut t = native::Native::stream(&v, Endpoint::Chat, gemini).expect("gemini stream");
    let sse = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hel\"}]}}]}\n\n";
    let out = t
        .push(sse.as_bytes())
        .now_or_never()
        .expect("ready")
        .expect("ok");
    assert!(out.iter().any(|c| c.contains("\"content\":\"Hel\"")));
}

#[test]
fn errors_in_either_shape_become_openai_and_anthropic_errors() {
    let v = Vertex::new().expect("spec");
    let headers = HeaderMap::new();
    let google = json!({"error": {"code": 403, "message": "Permission denied on resource project proj-1.", "status": "PERMISSION_DENIED"}});
    let out = native::Native::error(
        &v,
        Endpoint::Chat,
        http::StatusCode::FORBIDDEN,
        &headers,
        google.to_string().as_bytes(),
    )
    .expect("mapped");
    assert_eq!(out["error"]["code"], "PERMISSION_DENIED");
    assert_eq!(out["error"]["type"], "authentication_error");
    let anthropic =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let out = native::Native::error(
        &v,
        Endpoint::Chat,
        http::StatusCode::from_u16(529).expect("status"),
        &headers,
        anthropic.to_string().as_bytes(),
    )
    .expect("mapped");
    assert_eq!(out["error"]["message"], "Overloaded");
    assert_eq!(out["error"]["code"], "overloaded_error");
    // Claude clients: Anthropic's errors pass; Google's are converted.
    assert!(
        native::Native::error(
            &v,
            Endpoint::Messages,
            http::StatusCode::BAD_REQUEST,
            &headers,
            anthropic.to_string().as_bytes()
        )
        .is_none()
    );
    let out = native::Native::error(
        &v,
        Endpoint::Messages,
        http::StatusCode::FORBIDDEN,
        &headers,
        google.to_string().as_bytes(),
    )
    .expect("mapped");
    assert_eq!(out["type"], "error");
    assert_eq!(
        out["error"]["message"],
        "Permission denied on resource project proj-1."
    );
    let out = native::Native::error(
        &v,
        Endpoint::Chat,
        http::StatusCode::BAD_GATEWAY,
        &headers,
        b"<html>bad gateway</html>",
    )
    .expect("mapped");
    assert!(
        out["error"]["message"]
            .as_str()
            .expect("message")
            .contains("502")
    );
}

/// The JWT for fixed claims, and its signature as OpenSSL computes it over the
/// same header and claims (RS256 is deterministic).
#[test]
fn the_assertion_is_an_rs256_jwt_openssl_agrees_with() {
    let sa = auth::ServiceAccount::from_value(&account("https://oauth2.googleapis.com/token"))
        .expect("sa");
    let jwt = sa.assertion(1_700_000_000).expect("signed");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine as _;
    let decode = |s: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .expect("b64"),
        )
        .expect("json")
    };
    assert_eq!(
        decode(parts[0]),
        json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
    );
    assert_eq!(
        decode(parts[1]),
        json!({"iss": "gw@sa-project.iam.gserviceaccount.com", "aud": "https://oauth2.googleapis.com/token",
               "scope": "https://www.googleapis.com/auth/cloud-platform", "iat": 1_700_000_000, "exp": 1_700_003_600})
    );
    assert_eq!(parts[2], OPENSSL_SIGNATURE);
}

/// `printf '%s' "$HEADER.$CLAIMS" | openssl dgst -sha256 -sign test-key.pem |
/// base64 -w0 | tr '+/' '-_' | tr -d '='`, with the two parts above.
const OPENSSL_SIGNATURE: &str = "PVZbpHE85v2L19zWn9_roNgaapoTUHNA83CHmd-3TsOteI1b3vl89PP9UZZGBopJF_fDUvZdk2JPJNSBIPFIqsZ36R1JRyBEuTm2LlibbKkr4BuRV6aoKfPUVC1R6sPbpHQEaO_dRzo8K9IUse5PmNK4H5TCa7o77Nfu6p1f4O2Hsm9Vn2COvdnog1ElG9FOW3V8ytg1f8g_JIMv3QNp5IvwpzRLyOLH64BpbFiJychoL8hCydnJoalJSdepckNX1EhDPtAOhkrlsN7va6YWiRWLTE3nOIYrhXbqL8pYUwA-10hvMallbocQbFGFUXjkeQvKKkcXRXc53yWHJt97hQ";

#[test]
fn the_token_request_is_a_jwt_bearer_grant_and_its_cache_key_hides_the_key() {
    let sa = auth::ServiceAccount::from_value(&account("http://127.0.0.1:9/token")).expect("sa");
    let req = sa.token_request(1_700_000_000).expect("request");
    assert_eq!(req.url.as_str(), "http://127.0.0.1:9/token");
    assert_eq!(
        req.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect();
    assert_eq!(
        form[0],
        (
            "grant_type".into(),
            "urn:ietf:params:oauth:grant-type:jwt-bearer".into()
        )
    );
    assert_eq!(
        form[1],
        (
            "assertion".into(),
            sa.assertion(1_700_000_000).expect("jwt")
        )
    );

    let key = sa.cache_key();
    assert!(
        key.starts_with("vertex-ai:") && key.len() == "vertex-ai:".len() + 32,
        "{key}"
    );
    assert!(!key.contains("PRIVATE"));
    assert_eq!(key, sa.cache_key());
    let other = auth::ServiceAccount::from_value(&account("https://oauth2.googleapis.com/token"))
        .expect("sa");
    assert_ne!(key, other.cache_key());
    // Debug output leaves the key out.
    assert!(!format!("{sa:?}").contains("PRIVATE"));

    for bad in [
        json!({"client_email": "a"}),
        json!({"private_key": TEST_KEY}),
        json!(3),
        json!({"client_email": "a", "private_key": TEST_KEY, "token_uri": "file:///etc/passwd"}),
    ] {
        assert!(auth::ServiceAccount::from_value(&bad).is_err(), "{bad}");
    }
    let broken = auth::ServiceAccount::from_value(&json!({"client_email": "a", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}))
        .expect("fields are there");
    let err = broken.assertion(1).expect_err("not a key");
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
}
