//! The OpenAI API surface Sluice serves, one variant per route.

/// A unified endpoint. Providers declare which ones they support by `name()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Images,
    Speech,
    Transcriptions,
    Translations,
    Moderations,
    Models,
    /// Any other `/v1/*` path, forwarded as is.
    Proxy,
    /// Anthropic's Messages API (`/v1/messages`): passed through to providers
    /// that speak it, translated over chat completions for the others.
    Messages,
    /// Anthropic's `/v1/messages/count_tokens`, for providers that speak it.
    CountTokens,
    /// OpenAI's Responses API (`/v1/responses`): passed through to providers
    /// that serve it, translated over chat completions for the others.
    Responses,
}

/// How the client's body is read and forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A JSON object; unknown fields are kept, `override_params` apply.
    Json,
    /// `multipart/form-data`, forwarded byte for byte with its boundary.
    Multipart,
    /// No body (GET).
    Empty,
    /// Whatever the client sent (the passthrough route).
    Raw,
}

impl Endpoint {
    /// Every endpoint, for catalogs and docs.
    pub const ALL: [Endpoint; 10] = [
        Self::Chat,
        Self::Completions,
        Self::Embeddings,
        Self::Images,
        Self::Speech,
        Self::Transcriptions,
        Self::Translations,
        Self::Moderations,
        Self::Models,
        Self::Proxy,
    ];

    /// The name used in the provider catalog.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Images => "images",
            Self::Speech => "speech",
            Self::Transcriptions => "transcriptions",
            Self::Translations => "translations",
            Self::Moderations => "moderations",
            Self::Models => "models",
            Self::Proxy => "proxy",
            Self::Messages => "messages",
            Self::CountTokens => "count_tokens",
            Self::Responses => "responses",
        }
    }

    /// Endpoints in Anthropic's format. Not in [`Endpoint::ALL`]: a catalog
    /// entry that lists no endpoints speaks OpenAI's format only.
    pub const ANTHROPIC: [Endpoint; 2] = [Self::Messages, Self::CountTokens];

    /// Endpoints a catalog entry must list to serve them natively (an entry
    /// that lists none gets [`Endpoint::ALL`] only).
    pub const EXTRA: [Endpoint; 3] = [Self::Messages, Self::CountTokens, Self::Responses];

    /// Whether the endpoint speaks Anthropic's format (errors included).
    pub fn anthropic_format(self) -> bool {
        Self::ANTHROPIC.contains(&self)
    }

    /// Looks an endpoint up by catalog name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::EXTRA)
            .find(|e| e.name() == name)
    }

    /// The path under the provider's base URL (`/v1` already stripped).
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Images => "/images/generations",
            Self::Speech => "/audio/speech",
            Self::Transcriptions => "/audio/transcriptions",
            Self::Translations => "/audio/translations",
            Self::Moderations => "/moderations",
            Self::Models => "/models",
            Self::Proxy => "",
            Self::Messages => "/messages",
            Self::CountTokens => "/messages/count_tokens",
            Self::Responses => "/responses",
        }
    }

    /// How the request body is handled.
    pub fn body_kind(self) -> BodyKind {
        match self {
            Self::Transcriptions | Self::Translations => BodyKind::Multipart,
            Self::Models => BodyKind::Empty,
            Self::Proxy => BodyKind::Raw,
            _ => BodyKind::Json,
        }
    }

    /// Whether the answer is JSON (and so checked before it is passed on).
    /// Speech returns audio; the passthrough route returns anything.
    pub fn answers_json(self) -> bool {
        !matches!(self, Self::Speech | Self::Proxy)
    }

    /// Whether the endpoint lives under a deployment (Azure-style URLs).
    pub fn deployment_scoped(self) -> bool {
        !matches!(
            self,
            Self::Models | Self::Proxy | Self::Messages | Self::CountTokens | Self::Responses
        )
    }

    /// A human description for messages: `POST /v1/chat/completions`.
    pub fn describe(self) -> String {
        match self {
            Self::Models => "GET /v1/models".into(),
            Self::Proxy => "arbitrary /v1 paths".into(),
            _ => format!("POST /v1{}", self.path()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in Endpoint::ALL.into_iter().chain(Endpoint::EXTRA) {
            assert_eq!(Endpoint::from_name(e.name()), Some(e));
        }
        assert_eq!(Endpoint::from_name("nope"), None);
    }
}
