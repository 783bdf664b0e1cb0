//! A provider described as data: slug, base URL, auth style, endpoints, and the
//! few templated pieces (Azure's deployment path and `api-version`) that differ
//! between OpenAI-wire APIs. The built-in catalog (`catalog.toml`) and the server
//! config's `[[providers]]` entries are read by the same code.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Endpoint;
use crate::config::reader::{Obj, Problems, join};

/// How the provider's key is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer KEY`.
    Bearer,
    /// `NAME: KEY` (Azure's `api-key`).
    Header(http::HeaderName),
    /// No key is sent (local servers).
    None,
}

/// One provider of the OpenAI wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    pub slug: String,
    /// Base URL template (`https://{resource_name}.openai.azure.com/openai`);
    /// `None` means every request must give a custom host.
    pub base_url: Option<String>,
    pub auth: Auth,
    /// Supported endpoints; every endpoint when the entry lists none.
    pub endpoints: Vec<Endpoint>,
    /// Path template inserted before deployment-scoped endpoints.
    pub deployment_path: Option<String>,
    /// Query parameters added to every call (templates).
    pub query: BTreeMap<String, String>,
    /// Headers added when all their variables are known (templates).
    pub headers: BTreeMap<String, String>,
    /// Variable → request header suffix (`azure-resource-name` means
    /// `x-portkey-azure-resource-name` or `x-sluice-azure-resource-name`).
    /// A variable not listed here is read from the header named after it.
    pub vars: BTreeMap<String, String>,
    /// Variable defaults.
    pub defaults: BTreeMap<String, String>,
    /// Whether the upstream takes `stream_options.include_usage` (OpenAI's
    /// way to end a stream with its token usage); the gateway then asks for
    /// it on every streamed chat or completion, to count tokens.
    pub stream_usage: bool,
}

const FIELDS: &[&str] = &[
    "slug",
    "base_url",
    "auth",
    "endpoints",
    "deployment_path",
    "query",
    "headers",
    "vars",
    "defaults",
    "stream_usage",
];

impl ProviderSpec {
    /// Whether the provider serves `endpoint`.
    pub fn supports(&self, endpoint: Endpoint) -> bool {
        self.endpoints.contains(&endpoint)
    }

    /// The request header suffix that carries `var`.
    pub fn header_for(&self, var: &str) -> String {
        self.vars
            .get(var)
            .cloned()
            .unwrap_or_else(|| var.replace('_', "-"))
    }

    /// Reads one catalog or config entry.
    pub fn from_value(p: &mut Problems, path: &str, value: &Value) -> Option<Self> {
        let o = Obj::new(p, path, value)?;
        o.deny_unknown(p, FIELDS, |_| false);
        let slug = o.str(p, "slug");
        if o.get("slug").is_none() {
            p.push(&o.path_of("slug"), "required");
        }
        if let Some(s) = &slug
            && (s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            p.push(&o.path_of("slug"), "use letters, digits, `-` and `_` only");
        }
        let auth = match o.str(p, "auth").as_deref() {
            None | Some("bearer") => Auth::Bearer,
            Some("none") => Auth::None,
            Some(other) => match other
                .strip_prefix("header:")
                .map(|n| http::HeaderName::from_bytes(n.as_bytes()))
            {
                Some(Ok(name)) => Auth::Header(name),
                _ => {
                    p.push(
                        &o.path_of("auth"),
                        "expected `bearer`, `none` or `header:NAME`",
                    );
                    Auth::Bearer
                }
            },
        };
        let endpoints = match o.str_list(p, "endpoints") {
            None => Endpoint::ALL.to_vec(),
            Some(names) => names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let e = Endpoint::from_name(n);
                    if e.is_none() {
                        let all: Vec<_> = Endpoint::ALL.iter().map(|e| e.name()).collect();
                        p.push(
                            &join(&o.path_of("endpoints"), &format!("[{i}]")),
                            format!(
                                "unknown endpoint `{n}`; expected one of: {}",
                                all.join(", ")
                            ),
                        );
                    }
                    e
                })
                .collect(),
        };
        let base_url = o.str(p, "base_url");
        if let Some(b) = &base_url {
            // Templates are checked with placeholder values filled in.
            let probe = fill(b, &mut |_| Some("x".to_owned()));
            match probe.as_deref().map(url::Url::parse) {
                Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => {}
                _ => p.push(&o.path_of("base_url"), "expected an http(s) URL"),
            }
        }
        let spec = Self {
            slug: slug?,
            base_url,
            auth,
            endpoints,
            deployment_path: o.str(p, "deployment_path"),
            query: string_table(p, &o, "query"),
            headers: string_table(p, &o, "headers"),
            vars: string_table(p, &o, "vars"),
            defaults: string_table(p, &o, "defaults"),
            stream_usage: o.bool(p, "stream_usage").unwrap_or(false),
        };
        for name in spec.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(
                    &join(&o.path_of("headers"), name),
                    "not a valid header name",
                );
            }
        }
        Some(spec)
    }
}

fn string_table(p: &mut Problems, o: &Obj<'_, '_>, key: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in o.object(p, key).unwrap_or_default() {
        match v {
            Value::String(s) => {
                out.insert(k, s);
            }
            _ => p.push(&join(&o.path_of(key), &k), "expected a string"),
        }
    }
    out
}

/// The `{name}` variables of a template, in order.
pub fn template_vars(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(v, _)| v))
}

/// Fills `{name}` placeholders from `lookup`; `None` when one has no value.
pub fn fill(template: &str, lookup: &mut dyn FnMut(&str) -> Option<String>) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let (name, tail) = after.split_once('}')?;
        out.push_str(&lookup(name)?);
        rest = tail;
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_fill_and_list_their_vars() {
        let t = "https://{resource_name}.openai.azure.com/openai";
        assert_eq!(template_vars(t).collect::<Vec<_>>(), ["resource_name"]);
        assert_eq!(
            fill(t, &mut |v| (v == "resource_name").then(|| "r1".into())).as_deref(),
            Some("https://r1.openai.azure.com/openai")
        );
        assert_eq!(fill(t, &mut |_| None), None);
    }

    #[test]
    fn a_spec_reads_every_field_and_reports_mistakes() {
        let mut p = Problems::default();
        let spec = ProviderSpec::from_value(
            &mut p,
            "providers[0]",
            &json!({"slug": "az", "base_url": "https://{r}.example/openai", "auth": "header:api-key",
                    "endpoints": ["chat", "models"], "deployment_path": "/deployments/{d}",
                    "query": {"api-version": "{v}"}, "defaults": {"v": "1"}, "vars": {"r": "azure-resource-name"}}),
        )
        .expect("spec");
        assert!(p.is_empty(), "{p}");
        assert_eq!(
            spec.auth,
            Auth::Header(http::HeaderName::from_static("api-key"))
        );
        assert!(spec.supports(Endpoint::Chat) && !spec.supports(Endpoint::Embeddings));
        assert_eq!(spec.header_for("r"), "azure-resource-name");
        assert_eq!(spec.header_for("d_x"), "d-x");

        let mut p = Problems::default();
        ProviderSpec::from_value(
            &mut p,
            "providers[1]",
            &json!({"slug": "bad slug", "base_url": "ftp://x", "auth": "basic", "endpoints": ["chat", "nope"], "colour": 1}),
        );
        let text = p.to_string();
        for needle in [
            "providers[1].colour: unknown field",
            "providers[1].slug: use letters",
            "providers[1].auth: expected",
            "providers[1].endpoints[1]: unknown endpoint `nope`",
            "providers[1].base_url: expected an http(s) URL",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
    }
}
