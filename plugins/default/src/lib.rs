//! `default`: Portkey's default guardrail checks, with the ids and parameters
//! Portkey gives them, and Sluice's own PII, prompt-injection and word-list
//! checks — one component for all of them.
//!
//! A config names a check as `default.NAME` (`default.wordCount`); the gateway
//! calls this plugin with `{"check": "NAME", "parameters": {...}}`. Every check
//! that judges text reads, before the request, the last message (its text
//! parts; an embeddings input whole) and, after the response, the answer's
//! text. `not: true` inverts a verdict where Portkey has it.
//!
//! | check | parameters |
//! |---|---|
//! | `regexMatch` | `rule`, `not` |
//! | `regexReplace` (rewrites) | `rule`, `redactText` (default `[REDACTED]`) |
//! | `sentenceCount` / `wordCount` / `characterCount` | `minSentences`/`maxSentences`, `minWords`/`maxWords`, `minCharacters`/`maxCharacters`, `not` |
//! | `jsonSchema` | `schema` (draft 2020-12; see [`schema`] for what is covered), `not` |
//! | `jsonKeys` | `keys`, `operator` (`any`, `all`, `none`) |
//! | `contains` | `words`, `operator` (`any`, `all`, `none`) |
//! | `validUrls` | `onlyDNS` (accepted; URLs are checked by syntax only: plugins have no network), `not` |
//! | `containsCode` | `format` (`Python`, `SQL`, `JavaScript`, …), `not` |
//! | `alluppercase` / `alllowercase` | `not` |
//! | `endsWith` | `suffix`, `not` |
//! | `notNull` | `not` |
//! | `modelWhitelist` | `models`, `not` |
//! | `modelRules` | `rules: {"defaults": [...], "metadata": {KEY: {VALUE: [...]}}}`, `not` |
//! | `allowedRequestTypes` | `allowedTypes`, `blockedTypes` (`chatComplete`, `complete`, `embed`, `messages`, `proxy`) |
//! | `requiredMetadataKeys` | `metadataKeys`, `operator` (`all`, `any`, `none`) |
//! | `addPrefix` (rewrites) | `prefix`, `applyToRole` (default `user`) |
//! | `pii` | `entities` (default all), `redact`, `actions: {ENTITY: detect / redact / ignore}` |
//! | `promptInjection` | `threshold` (0–1, default 0.5) |
//! | `bannedWords` | `words`, `caseSensitive` |
//! | `topics` | `allowed`, `denied`, `caseSensitive` |

mod pii;
mod prompt;
mod schema;
mod text;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use sluice_plugin_sdk::guardrail::*;

use text::Words;

/// How a list is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Any,
    All,
    None,
}

/// One configured check, its parameters read and its patterns compiled once.
#[derive(Debug)]
pub enum Check {
    RegexMatch {
        rule: Regex,
        not: bool,
    },
    RegexReplace {
        rule: Regex,
        with: String,
    },
    Count {
        what: text::Unit,
        min: Option<u64>,
        max: Option<u64>,
        not: bool,
    },
    JsonSchema {
        schema: schema::Schema,
        not: bool,
    },
    JsonKeys {
        keys: Vec<String>,
        operator: Operator,
    },
    Contains {
        words: Vec<String>,
        operator: Operator,
    },
    ValidUrls {
        not: bool,
    },
    ContainsCode {
        tags: Vec<&'static str>,
        format: String,
        not: bool,
    },
    Case {
        upper: bool,
        not: bool,
    },
    EndsWith {
        suffix: String,
        not: bool,
    },
    NotNull {
        not: bool,
    },
    ModelWhitelist {
        models: Vec<String>,
        not: bool,
    },
    ModelRules {
        defaults: Vec<String>,
        metadata: Vec<(String, String, Vec<String>)>,
        not: bool,
    },
    RequestTypes {
        allowed: Vec<String>,
        blocked: Vec<String>,
    },
    MetadataKeys {
        keys: Vec<String>,
        operator: Operator,
    },
    AddPrefix {
        prefix: String,
        role: Role,
    },
    Pii(pii::Pii),
    PromptInjection {
        threshold: f64,
    },
    BannedWords(Words),
    Topics {
        allowed: Option<Words>,
        denied: Option<Words>,
    },
}

#[derive(Deserialize)]
struct Raw {
    check: String,
    #[serde(default)]
    parameters: Value,
}

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(d)?;
        Check::read(&raw.check, &raw.parameters).map_err(serde::de::Error::custom)
    }
}

/// Reads the parameters of one check.
struct Params<'a>(&'a Value);

impl Params<'_> {
    fn bool(&self, key: &str) -> Result<bool, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("`{key}` must be true or false")),
        }
    }
    fn not(&self) -> Result<bool, String> {
        Ok(self.bool("not")? || self.bool("inverse")?)
    }
    fn str(&self, key: &str) -> Result<Option<String>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{key}` must be a string")),
        }
    }
    fn required(&self, key: &str) -> Result<String, String> {
        self.str(key)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("`{key}` is required"))
    }
    fn uint(&self, key: &str) -> Result<Option<u64>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .map(Some)
                .ok_or_else(|| format!("`{key}` must be a whole number")),
        }
    }
    fn list(&self, key: &str) -> Result<Vec<String>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("`{key}` must list strings"))
                })
                .collect(),
            Some(_) => Err(format!("`{key}` must be a list of strings")),
        }
    }
    fn nonempty_list(&self, key: &str) -> Result<Vec<String>, String> {
        let list = self.list(key)?;
        if list.is_empty() || list.iter().any(|s| s.is_empty()) {
            return Err(format!("`{key}` must list at least one non-empty string"));
        }
        Ok(list)
    }
    fn operator(&self, default: Operator) -> Result<Operator, String> {
        match self.str("operator")?.as_deref() {
            None => Ok(default),
            Some("any") => Ok(Operator::Any),
            Some("all") => Ok(Operator::All),
            Some("none") => Ok(Operator::None),
            Some(other) => Err(format!(
                "`operator` is `any`, `all` or `none`, not `{other}`"
            )),
        }
    }
    fn regex(&self, key: &str) -> Result<Regex, String> {
        let rule = self.required(key)?;
        regex::RegexBuilder::new(&rule)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("`{key}` is not a valid regex: {e}"))
    }
    fn words(&self, key: &str) -> Result<Option<Words>, String> {
        let list = self.list(key)?;
        if list.is_empty() {
            return Ok(None);
        }
        Words::new(&list, self.bool("caseSensitive")?).map(Some)
    }
}

impl Check {
    /// The check `name` with its `parameters`.
    pub fn read(name: &str, parameters: &Value) -> Result<Check, String> {
        let p = Params(parameters);
        if !parameters.is_object() && !parameters.is_null() {
            return Err("`parameters` must be an object".into());
        }
        let count = |what, min_key: &str, max_key: &str| -> Result<Check, String> {
            let (min, max) = (p.uint(min_key)?, p.uint(max_key)?);
            if min.is_none() && max.is_none() {
                return Err(format!("give `{min_key}` or `{max_key}`"));
            }
            if let (Some(a), Some(b)) = (min, max)
                && a > b
            {
                return Err("the minimum is above the maximum".into());
            }
            Ok(Check::Count {
                what,
                min,
                max,
                not: p.not()?,
            })
        };
        Ok(match name {
            "regexMatch" => Check::RegexMatch {
                rule: p.regex("rule")?,
                not: p.not()?,
            },
            "regexReplace" => Check::RegexReplace {
                rule: p.regex("rule")?,
                with: p.str("redactText")?.unwrap_or_else(|| "[REDACTED]".into()),
            },
            "sentenceCount" => count(text::Unit::Sentences, "minSentences", "maxSentences")?,
            "wordCount" => count(text::Unit::Words, "minWords", "maxWords")?,
            "characterCount" => count(text::Unit::Characters, "minCharacters", "maxCharacters")?,
            "jsonSchema" => Check::JsonSchema {
                schema: schema::Schema::compile(
                    parameters
                        .get("schema")
                        .cloned()
                        .ok_or("`schema` is required")?,
                )?,
                not: p.not()?,
            },
            "jsonKeys" => Check::JsonKeys {
                keys: p.nonempty_list("keys")?,
                operator: p.operator(Operator::Any)?,
            },
            "contains" => Check::Contains {
                words: p.nonempty_list("words")?,
                operator: p.operator(Operator::Any)?,
            },
            "validUrls" => {
                p.bool("onlyDNS")?;
                Check::ValidUrls { not: p.not()? }
            }
            "containsCode" => {
                let format = p.required("format")?;
                let tags = text::code_tags(&format).ok_or_else(|| {
                    format!("`format` `{format}` is not a language this check knows")
                })?;
                Check::ContainsCode {
                    tags,
                    format,
                    not: p.not()?,
                }
            }
            "alluppercase" => Check::Case {
                upper: true,
                not: p.not()?,
            },
            "alllowercase" => Check::Case {
                upper: false,
                not: p.not()?,
            },
            "endsWith" => Check::EndsWith {
                suffix: p.required("suffix")?,
                not: p.not()?,
            },
            "notNull" => Check::NotNull { not: p.not()? },
            "modelWhitelist" => Check::ModelWhitelist {
                models: p.nonempty_list("models")?,
                not: p.not()?,
            },
            "modelRules" => model_rules(parameters, p.not()?)?,
            "allowedRequestTypes" => {
                let (allowed, blocked) = (p.list("allowedTypes")?, p.list("blockedTypes")?);
                if allowed.is_empty() && blocked.is_empty() {
                    return Err("give `allowedTypes` or `blockedTypes`".into());
                }
                Check::RequestTypes { allowed, blocked }
            }
            "requiredMetadataKeys" => Check::MetadataKeys {
                keys: p.nonempty_list("metadataKeys")?,
                operator: p.operator(Operator::All)?,
            },
            "addPrefix" => Check::AddPrefix {
                prefix: p.required("prefix")?,
                role: match p.str("applyToRole")?.as_deref() {
                    None | Some("user") => Role::User,
                    Some("system") => Role::System,
                    Some("assistant") => Role::Assistant,
                    Some(other) => {
                        return Err(format!(
                            "`applyToRole` `{other}` is not user, system or assistant"
                        ));
                    }
                },
            },
            "pii" => Check::Pii(pii::Pii::read(parameters)?),
            "promptInjection" => {
                let threshold = match parameters.get("threshold") {
                    None | Some(Value::Null) => 0.5,
                    Some(v) => v
                        .as_f64()
                        .filter(|t| (0.0..=1.0).contains(t))
                        .ok_or("`threshold` must be a number from 0 to 1")?,
                };
                Check::PromptInjection { threshold }
            }
            "bannedWords" => Check::BannedWords(
                p.words("words")?
                    .ok_or("`words` must list at least one word")?,
            ),
            "topics" => {
                let (allowed, denied) = (p.words("allowed")?, p.words("denied")?);
                if allowed.is_none() && denied.is_none() {
                    return Err("give `allowed` or `denied` topics".into());
                }
                Check::Topics { allowed, denied }
            }
            "jwt" | "webhook" | "log" => {
                return Err(format!(
                    "`{name}` is its own plugin: load `{name}.wasm` or use the built-in `{name}`"
                ));
            }
            other => return Err(format!("`{other}` is not a check of the `default` plugin")),
        })
    }

    /// Runs the check.
    pub fn run(&self, input: &CheckInput) -> Verdict {
        let judged = || text::judged(input);
        let verdict = |ok: bool, not: bool, why: String| {
            if ok != not {
                Verdict::pass()
            } else {
                Verdict::fail(if not { format!("inverted: {why}") } else { why })
            }
        };
        match self {
            Check::RegexMatch { rule, not } => {
                let t = judged();
                let found = rule.is_match(&t);
                verdict(
                    found,
                    *not,
                    format!("the text does not match `{}`", rule.as_str()),
                )
            }
            Check::RegexReplace { rule, with } => {
                if !input.texts().any(|t| rule.is_match(t)) {
                    return Verdict::pass();
                }
                Verdict::rewrite(
                    input.map_texts(|t| rule.replace_all(t, with.as_str()).into_owned()),
                )
            }
            Check::Count {
                what,
                min,
                max,
                not,
            } => {
                let n = what.count(&judged());
                let ok = min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m);
                verdict(
                    ok,
                    *not,
                    format!("{n} {} is outside {}", what.name(), text::range(*min, *max)),
                )
                .with_data(&serde_json::json!({"count": n}))
            }
            Check::JsonSchema { schema, not } => {
                let (mut matched, mut errors, mut found) = (None, Vec::new(), false);
                text::json_values(&judged(), |v| {
                    found = true;
                    let why = schema.validate(&v);
                    if why.is_empty() {
                        matched = Some(v);
                        return true;
                    }
                    if errors.is_empty() {
                        errors = why;
                    }
                    false
                });
                let why = if found {
                    format!("the JSON does not match the schema: {}", errors.join("; "))
                } else {
                    "the text holds no JSON".to_owned()
                };
                let ok = matched.is_some();
                verdict(ok, *not, why).with_data(&serde_json::json!({
                    "matchedJson": matched,
                    "validationErrors": errors,
                }))
            }
            Check::JsonKeys { keys, operator } => {
                let Some(object) = text::json_object(&judged()) else {
                    return Verdict::fail("the text holds no JSON object");
                };
                let present: Vec<&String> = keys
                    .iter()
                    .filter(|k| object.contains_key(k.as_str()))
                    .collect();
                let ok = matches_operator(*operator, present.len(), keys.len());
                verdict(
                    ok,
                    false,
                    format!("keys present: {present:?}, operator `{operator:?}` over {keys:?}"),
                )
            }
            Check::Contains { words, operator } => {
                let t = judged();
                let present: Vec<&String> =
                    words.iter().filter(|w| t.contains(w.as_str())).collect();
                let ok = matches_operator(*operator, present.len(), words.len());
                verdict(
                    ok,
                    false,
                    format!("found {present:?}, operator `{operator:?}` over {words:?}"),
                )
            }
            Check::ValidUrls { not } => {
                let t = judged();
                let (urls, bad) = text::urls(&t);
                verdict(bad.is_empty(), *not, format!("invalid URLs: {bad:?}"))
                    .with_data(&serde_json::json!({"urls": urls, "invalid": bad}))
            }
            Check::ContainsCode { tags, format, not } => {
                let found = text::code_blocks(&judged())
                    .iter()
                    .any(|lang| tags.contains(&lang.as_str()));
                verdict(found, *not, format!("no {format} code block found"))
            }
            Check::Case { upper, not } => {
                let t = judged();
                let ok = if *upper {
                    t.to_uppercase() == t
                } else {
                    t.to_lowercase() == t
                };
                verdict(
                    ok,
                    *not,
                    format!(
                        "the text is not all {}",
                        if *upper { "uppercase" } else { "lowercase" }
                    ),
                )
            }
            Check::EndsWith { suffix, not } => {
                let t = judged();
                verdict(
                    t.trim_end().ends_with(suffix.as_str()),
                    *not,
                    format!("the text does not end with `{suffix}`"),
                )
            }
            Check::NotNull { not } => verdict(
                !judged().trim().is_empty(),
                *not,
                "the text is empty".into(),
            ),
            Check::ModelWhitelist { models, not } => {
                let model = input.model.as_deref().unwrap_or_default();
                verdict(
                    models.iter().any(|m| m == model),
                    *not,
                    format!("model `{model}` is not allowed"),
                )
            }
            Check::ModelRules {
                defaults,
                metadata,
                not,
            } => {
                let model = input.model.as_deref().unwrap_or_default();
                let mut allowed: Vec<&String> = defaults.iter().collect();
                for (key, value, models) in metadata {
                    if input.metadata(key) == Some(value.as_str()) {
                        allowed.extend(models);
                    }
                }
                verdict(
                    allowed.iter().any(|m| *m == model),
                    *not,
                    format!("model `{model}` is not allowed for this request"),
                )
            }
            Check::RequestTypes { allowed, blocked } => {
                let kind = match input.endpoint {
                    Endpoint::Chat => "chatComplete",
                    Endpoint::Completions => "complete",
                    Endpoint::Embeddings => "embed",
                    Endpoint::Messages => "messages",
                    Endpoint::Other => "proxy",
                };
                let ok = (allowed.is_empty() || allowed.iter().any(|a| a == kind))
                    && !blocked.iter().any(|b| b == kind);
                verdict(ok, false, format!("request type `{kind}` is not allowed"))
            }
            Check::MetadataKeys { keys, operator } => {
                let present = keys.iter().filter(|k| input.metadata(k).is_some()).count();
                let ok = matches_operator(*operator, present, keys.len());
                verdict(
                    ok,
                    false,
                    format!(
                        "{present} of the metadata keys {keys:?} are present (operator `{operator:?}`)"
                    ),
                )
            }
            Check::AddPrefix { prefix, role } => add_prefix(input, prefix, *role),
            Check::Pii(p) => p.run(input),
            Check::PromptInjection { threshold } => prompt::judge(&judged(), *threshold),
            Check::BannedWords(words) => {
                let found = words.found(&judged());
                verdict(
                    found.is_empty(),
                    false,
                    format!("banned words: {}", found.join(", ")),
                )
            }
            Check::Topics { allowed, denied } => {
                let t = judged();
                if let Some(denied) = denied {
                    let found = denied.found(&t);
                    if !found.is_empty() {
                        return Verdict::fail(format!("denied topics: {}", found.join(", ")));
                    }
                }
                match allowed {
                    Some(allowed) if allowed.found(&t).is_empty() => {
                        Verdict::fail("the text is on none of the allowed topics")
                    }
                    _ => Verdict::pass(),
                }
            }
        }
    }
}

fn matches_operator(op: Operator, present: usize, total: usize) -> bool {
    match op {
        Operator::Any => present > 0,
        Operator::All => present == total,
        Operator::None => present == 0,
    }
}

fn model_rules(parameters: &Value, not: bool) -> Result<Check, String> {
    let rules = parameters.get("rules").ok_or("`rules` is required")?;
    let strings = |v: &Value, at: &str| -> Result<Vec<String>, String> {
        v.as_array()
            .ok_or(format!("`{at}` must be a list of models"))?
            .iter()
            .map(|m| {
                m.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("`{at}` must list strings"))
            })
            .collect()
    };
    let defaults = match rules.get("defaults") {
        Some(v) => strings(v, "rules.defaults")?,
        None => Vec::new(),
    };
    let mut metadata = Vec::new();
    if let Some(by_key) = rules.get("metadata") {
        for (key, values) in by_key
            .as_object()
            .ok_or("`rules.metadata` must be an object")?
        {
            for (value, models) in values
                .as_object()
                .ok_or(format!("`rules.metadata.{key}` must be an object"))?
            {
                metadata.push((
                    key.clone(),
                    value.clone(),
                    strings(models, &format!("rules.metadata.{key}.{value}"))?,
                ));
            }
        }
    }
    Ok(Check::ModelRules {
        defaults,
        metadata,
        not,
    })
}

/// Prefixes the last segment of `role` (before the request), or the answer's
/// first segment.
fn add_prefix(input: &CheckInput, prefix: &str, role: Role) -> Verdict {
    let at = if input.stage == Stage::AfterResponse {
        (!input.segments.is_empty()).then_some(0)
    } else {
        input.segments.iter().rposition(|s| s.role == role)
    };
    let Some(at) = at else {
        return Verdict::pass();
    };
    if input.segments[at].text.starts_with(prefix) {
        return Verdict::pass();
    }
    let mut i = 0;
    Verdict::rewrite(input.map_texts(|t| {
        let out = if i == at {
            format!("{prefix}{t}")
        } else {
            t.to_owned()
        };
        i += 1;
        out
    }))
}

struct Default;

impl Guardrail for Default {
    type Config = Check;
    const DESCRIPTION: &'static str = "Portkey's default checks (regexMatch, wordCount, contains, ...) and pii, promptInjection, bannedWords, topics";

    fn check(config: &Check, input: &CheckInput) -> Result<Verdict, Error> {
        Ok(config.run(input))
    }
}

sluice_plugin_sdk::export_guardrail!(Default);

#[cfg(test)]
mod tests;
