//! Portkey's request headers and their `x-sluice-*` aliases.

use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};
use serde_json::{Map, Value};

use crate::GatewayError;
use crate::config::Secret;

/// The settings a client can give by header. Each is read as `x-portkey-NAME`,
/// then `x-sluice-NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortkeyHeader {
    Provider,
    Config,
    CustomHost,
    ForwardHeaders,
    RequestTimeout,
    Metadata,
    TraceId,
    RetryCount,
    StrictOpenAiCompliance,
    /// The gateway key.
    ApiKey,
    /// A virtual key's name.
    VirtualKey,
    /// `simple` or `semantic`: a cache when the config names none.
    Cache,
    /// `true`: skip the cache lookup and store the new answer.
    CacheForceRefresh,
}

impl PortkeyHeader {
    /// The header names to look for, Portkey's first (built once: a lookup by
    /// `&str` would parse and validate the name on every request).
    pub fn names(self) -> &'static [HeaderName; 2] {
        static PROVIDER: [HeaderName; 2] = pair("x-portkey-provider", "x-sluice-provider");
        static CONFIG: [HeaderName; 2] = pair("x-portkey-config", "x-sluice-config");
        static CUSTOM_HOST: [HeaderName; 2] = pair("x-portkey-custom-host", "x-sluice-custom-host");
        static FORWARD_HEADERS: [HeaderName; 2] =
            pair("x-portkey-forward-headers", "x-sluice-forward-headers");
        static REQUEST_TIMEOUT: [HeaderName; 2] =
            pair("x-portkey-request-timeout", "x-sluice-request-timeout");
        static METADATA: [HeaderName; 2] = pair("x-portkey-metadata", "x-sluice-metadata");
        static TRACE_ID: [HeaderName; 2] = pair("x-portkey-trace-id", "x-sluice-trace-id");
        static RETRY_COUNT: [HeaderName; 2] = pair("x-portkey-retry-count", "x-sluice-retry-count");
        static STRICT: [HeaderName; 2] = pair(
            "x-portkey-strict-open-ai-compliance",
            "x-sluice-strict-open-ai-compliance",
        );
        static API_KEY: [HeaderName; 2] = pair("x-portkey-api-key", "x-sluice-api-key");
        static VIRTUAL_KEY: [HeaderName; 2] = pair("x-portkey-virtual-key", "x-sluice-virtual-key");
        static CACHE: [HeaderName; 2] = pair("x-portkey-cache", "x-sluice-cache");
        static FORCE_REFRESH: [HeaderName; 2] = pair(
            "x-portkey-cache-force-refresh",
            "x-sluice-cache-force-refresh",
        );
        match self {
            Self::ApiKey => &API_KEY,
            Self::VirtualKey => &VIRTUAL_KEY,
            Self::Cache => &CACHE,
            Self::CacheForceRefresh => &FORCE_REFRESH,
            Self::Provider => &PROVIDER,
            Self::Config => &CONFIG,
            Self::CustomHost => &CUSTOM_HOST,
            Self::ForwardHeaders => &FORWARD_HEADERS,
            Self::RequestTimeout => &REQUEST_TIMEOUT,
            Self::Metadata => &METADATA,
            Self::TraceId => &TRACE_ID,
            Self::RetryCount => &RETRY_COUNT,
            Self::StrictOpenAiCompliance => &STRICT,
        }
    }
}

const fn pair(portkey: &'static str, sluice: &'static str) -> [HeaderName; 2] {
    [
        HeaderName::from_static(portkey),
        HeaderName::from_static(sluice),
    ]
}

/// The value of a Portkey header or its alias; a value that is not text is a 400.
pub fn header_str(headers: &HeaderMap, which: PortkeyHeader) -> Result<Option<&str>, GatewayError> {
    for name in which.names() {
        if let Some(v) = headers.get(name) {
            return v.to_str().map(Some).map_err(|_| {
                GatewayError::invalid(
                    format!("`{name}` must be visible ASCII text"),
                    Some(name.as_str()),
                )
            });
        }
    }
    Ok(None)
}

/// The provider key from `Authorization: Bearer KEY`, else from `x-api-key`
/// (where Anthropic's SDKs and other Claude clients put it).
pub fn bearer(headers: &HeaderMap) -> Result<Option<Secret>, GatewayError> {
    let Some(value) = headers
        .get(AUTHORIZATION)
        .or_else(|| headers.get("x-api-key"))
    else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        GatewayError::invalid(
            "`Authorization` must be visible ASCII text",
            Some("authorization"),
        )
    })?;
    let key = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .unwrap_or(text)
        .trim();
    Ok((!key.is_empty()).then(|| Secret::new(key.to_owned())))
}

/// `x-portkey-request-timeout` in milliseconds.
pub fn request_timeout(headers: &HeaderMap) -> Result<Option<Duration>, GatewayError> {
    let Some(text) = header_str(headers, PortkeyHeader::RequestTimeout)? else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(GatewayError::invalid(
            format!(
                "`x-portkey-request-timeout` must be a positive number of milliseconds, not `{text}`"
            ),
            Some("x-portkey-request-timeout"),
        )),
    }
}

/// `x-portkey-forward-headers`: a comma-separated list of header names.
pub fn forward_list(headers: &HeaderMap) -> Result<Vec<HeaderName>, GatewayError> {
    match header_str(headers, PortkeyHeader::ForwardHeaders)? {
        Some(list) => parse_forward_names(list.split(',').map(str::trim).filter(|s| !s.is_empty())),
        None => Ok(Vec::new()),
    }
}

/// Header names to forward; hop-by-hop and framing headers are never forwarded.
pub fn parse_forward_names<'a>(
    names: impl Iterator<Item = &'a str>,
) -> Result<Vec<HeaderName>, GatewayError> {
    let mut out = Vec::new();
    for n in names {
        let name = HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
            GatewayError::invalid(
                format!("`{n}` is not a valid header name to forward"),
                Some("forward_headers"),
            )
        })?;
        if !crate::upstream::is_hop_by_hop(&name)
            && name != http::header::HOST
            && name != http::header::CONTENT_LENGTH
        {
            out.push(name);
        }
    }
    Ok(out)
}

/// `x-portkey-retry-count`: retries for a plain-header request (0 to 10).
pub fn retry_count(headers: &HeaderMap) -> Result<Option<u32>, GatewayError> {
    let Some(text) = header_str(headers, PortkeyHeader::RetryCount)? else {
        return Ok(None);
    };
    let max = crate::config::routing::Retry::MAX_ATTEMPTS;
    match text.trim().parse::<u32>() {
        Ok(n) if n <= max => Ok(Some(n)),
        _ => Err(GatewayError::invalid(
            format!("`x-portkey-retry-count` must be a whole number from 0 to {max}, not `{text}`"),
            Some("x-portkey-retry-count"),
        )),
    }
}

/// `x-portkey-strict-open-ai-compliance`: `true` or `false`.
pub fn strict(headers: &HeaderMap) -> Result<Option<bool>, GatewayError> {
    match header_str(headers, PortkeyHeader::StrictOpenAiCompliance)?.map(str::trim) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(GatewayError::invalid(
            format!("`x-portkey-strict-open-ai-compliance` must be true or false, not `{v}`"),
            Some("x-portkey-strict-open-ai-compliance"),
        )),
    }
}

/// `x-portkey-metadata`: a JSON object of string values.
pub fn metadata(headers: &HeaderMap) -> Result<Map<String, Value>, GatewayError> {
    let Some(text) = header_str(headers, PortkeyHeader::Metadata)? else {
        return Ok(Map::new());
    };
    let bad = |why: String| {
        GatewayError::invalid(
            format!("`x-portkey-metadata` {why}"),
            Some("x-portkey-metadata"),
        )
    };
    let map = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(bad("must be a JSON object".into())),
        Err(e) => return Err(bad(format!("is not valid JSON: {e}"))),
    };
    if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
        return Err(bad(format!("values must be strings; `{k}` is not")));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn every_portkey_name_has_its_sluice_alias() {
        for h in [
            PortkeyHeader::Provider,
            PortkeyHeader::Config,
            PortkeyHeader::CustomHost,
            PortkeyHeader::ForwardHeaders,
            PortkeyHeader::RequestTimeout,
            PortkeyHeader::Metadata,
            PortkeyHeader::TraceId,
            PortkeyHeader::RetryCount,
            PortkeyHeader::StrictOpenAiCompliance,
        ] {
            let [portkey, sluice] = h.names();
            let suffix = portkey.as_str().strip_prefix("x-portkey-");
            assert!(suffix.is_some_and(|s| !s.is_empty()), "{portkey}");
            assert_eq!(sluice.as_str().strip_prefix("x-sluice-"), suffix, "{h:?}");
        }
    }

    #[test]
    fn aliases_and_validation() {
        let mut h = HeaderMap::new();
        h.insert("x-sluice-provider", HeaderValue::from_static("groq"));
        assert_eq!(
            header_str(&h, PortkeyHeader::Provider).expect("ok"),
            Some("groq")
        );
        h.insert("x-portkey-provider", HeaderValue::from_static("openai"));
        assert_eq!(
            header_str(&h, PortkeyHeader::Provider).expect("ok"),
            Some("openai")
        );

        h.insert(
            "x-portkey-metadata",
            HeaderValue::from_static(r#"{"user":"u1"}"#),
        );
        assert_eq!(metadata(&h).expect("ok")["user"], "u1");
        for bad in [r#"{"n":1}"#, "[1]", "{"] {
            h.insert("x-portkey-metadata", HeaderValue::from_static(bad));
            assert_eq!(metadata(&h).expect_err(bad).code(), "invalid_request");
        }

        h.insert(
            "x-portkey-forward-headers",
            HeaderValue::from_static("x-a, connection, host ,x-b"),
        );
        assert_eq!(forward_list(&h).expect("ok"), ["x-a", "x-b"]);
        h.insert(
            "x-portkey-forward-headers",
            HeaderValue::from_static("bad name"),
        );
        assert!(forward_list(&h).is_err());

        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  sk-9 "));
        assert_eq!(
            bearer(&h).expect("ok").as_ref().map(Secret::expose),
            Some("sk-9")
        );
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h).expect("ok"), None);
    }
}
