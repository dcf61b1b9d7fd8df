//! Ollama's endpoint table (the README's table): every route the bridge knows, its endpoint class,
//! the fields Ollama reads a model name from, and the error format its clients expect.
//! Paths are matched exactly as received: nothing is decoded or normalised first.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The header bridge-host sets on every request it sends upstream. A request that
/// arrives carrying it came back around (the upstream is a bridge listener): refused
/// with 508 `loop_detected` before anything else happens.
pub const FORWARDED_HEADER: &str = "x-ollama-bridge-forwarded";

/// The header on the one health probe `serve` sends at start (value `start`), so that
/// whoever watches Ollama's requests can tell it from the probes status calls cause.
pub const STARTUP_PROBE_HEADER: &str = "x-ollama-bridge-probe";

/// The bridge's own status endpoint on every listener (never forwarded).
pub const STATUS_PATH: &str = "/_bridge/status";

/// The endpoint classes an operator allows per sandbox (`endpoints = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointClass {
    /// POST /api/chat
    Chat,
    /// POST /api/generate
    Generate,
    /// POST /api/embed, /api/embeddings
    Embed,
    /// listings and metadata: /, /api/version, /api/tags, /api/ps, /api/show
    List,
    /// Ollama's OpenAI-compatible /v1 layer
    Openai,
    /// POST /v1/responses
    OpenaiResponses,
    /// POST /v1/messages (Anthropic-compatible)
    Anthropic,
    /// model management: pull, push, create, copy, delete, blobs
    Manage,
    /// ollama.com account routes and cloud models
    Cloud,
}

impl EndpointClass {
    /// All classes, in table order.
    pub const ALL: [EndpointClass; 9] = [
        EndpointClass::Chat,
        EndpointClass::Generate,
        EndpointClass::Embed,
        EndpointClass::List,
        EndpointClass::Openai,
        EndpointClass::OpenaiResponses,
        EndpointClass::Anthropic,
        EndpointClass::Manage,
        EndpointClass::Cloud,
    ];

    /// The classes allowed when a sandbox does not say.
    pub const DEFAULT: [EndpointClass; 5] = [
        EndpointClass::Chat,
        EndpointClass::Generate,
        EndpointClass::Embed,
        EndpointClass::List,
        EndpointClass::Openai,
    ];

    /// The name used in the config and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Chat => "chat",
            EndpointClass::Generate => "generate",
            EndpointClass::Embed => "embed",
            EndpointClass::List => "list",
            EndpointClass::Openai => "openai",
            EndpointClass::OpenaiResponses => "openai-responses",
            EndpointClass::Anthropic => "anthropic",
            EndpointClass::Manage => "manage",
            EndpointClass::Cloud => "cloud",
        }
    }
}

impl fmt::Display for EndpointClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error body format a route's clients understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `{"error":"..."}` (native `/api/*` and everything else)
    Ollama,
    /// `{"error":{"message","type","param","code"}}` (`/v1/*`)
    OpenAi,
}

/// Every route of Ollama's that the bridge knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Root,
    Version,
    Tags,
    Ps,
    Show,
    Chat,
    Generate,
    Embed,
    Embeddings,
    OaiChat,
    OaiCompletions,
    OaiEmbeddings,
    OaiModels,
    /// GET /v1/models/{model}; the raw path segment.
    OaiModel(String),
    OaiResponses,
    AnthropicMessages,
    Pull,
    Push,
    Create,
    Copy,
    Delete,
    /// POST/HEAD /api/blobs/{digest}
    Blob(String),
    Me,
    Signout,
    Experimental,
}

/// How a request body is read for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body is read; one sent anyway is refused.
    None,
    /// A JSON object, parsed strictly and re-serialised.
    Json,
    /// Opaque bytes (blob upload); only reachable when `manage` is allowed.
    Opaque,
}

/// Why a request line names no route.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    #[error("path {0:?} is not in canonical form (no percent-encoding, dot segments, empty segments or trailing slash)")]
    NonCanonicalPath(String),
    #[error("query strings are not accepted (got {0:?})")]
    Query(String),
    #[error("no such route: {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
}

impl Route {
    /// A request that has Ollama run a model: it waits for a turn in the upstream's fair
    /// queue (`[upstream] max_parallel`). Listings, `show`, `version` and management never
    /// queue.
    pub fn runs_model(&self) -> bool {
        matches!(
            self,
            Route::Chat
                | Route::Generate
                | Route::Embed
                | Route::Embeddings
                | Route::OaiChat
                | Route::OaiCompletions
                | Route::OaiEmbeddings
                | Route::OaiResponses
                | Route::AnthropicMessages
        )
    }

    /// Classifies a request by method and raw path + query.
    pub fn classify(method: &str, path: &str, query: Option<&str>) -> Result<Route, RouteError> {
        if !is_canonical_path(path) {
            return Err(RouteError::NonCanonicalPath(path.to_owned()));
        }
        if let Some(q) = query {
            return Err(RouteError::Query(q.to_owned()));
        }
        let head = matches!(method, "GET" | "HEAD");
        let (route, allowed) = match path {
            "/" => (Route::Root, "GET, HEAD"),
            "/api/version" => (Route::Version, "GET, HEAD"),
            "/api/tags" => (Route::Tags, "GET, HEAD"),
            "/api/ps" => (Route::Ps, "GET"),
            "/api/show" => (Route::Show, "POST"),
            "/api/chat" => (Route::Chat, "POST"),
            "/api/generate" => (Route::Generate, "POST"),
            "/api/embed" => (Route::Embed, "POST"),
            "/api/embeddings" => (Route::Embeddings, "POST"),
            "/v1/chat/completions" => (Route::OaiChat, "POST"),
            "/v1/completions" => (Route::OaiCompletions, "POST"),
            "/v1/embeddings" => (Route::OaiEmbeddings, "POST"),
            "/v1/models" => (Route::OaiModels, "GET"),
            "/v1/responses" => (Route::OaiResponses, "POST"),
            "/v1/messages" => (Route::AnthropicMessages, "POST"),
            "/api/pull" => (Route::Pull, "POST"),
            "/api/push" => (Route::Push, "POST"),
            "/api/create" => (Route::Create, "POST"),
            "/api/copy" => (Route::Copy, "POST"),
            "/api/delete" => (Route::Delete, "DELETE"),
            "/api/me" => (Route::Me, "GET, POST"),
            "/api/signout" => (Route::Signout, "GET, POST"),
            p if p.starts_with("/api/experimental/") => (Route::Experimental, "any"),
            p => match (p.strip_prefix("/v1/models/"), p.strip_prefix("/api/blobs/")) {
                (Some(m), _) if !m.is_empty() && !m.contains('/') => {
                    (Route::OaiModel(m.to_owned()), "GET")
                }
                (_, Some(d)) if !d.is_empty() && !d.contains('/') => {
                    (Route::Blob(d.to_owned()), "POST, HEAD")
                }
                _ => {
                    return Err(RouteError::NotFound {
                        method: method.to_owned(),
                        path: path.to_owned(),
                    })
                }
            },
        };
        let ok = match allowed {
            "any" => true,
            "GET, HEAD" => head,
            "GET, POST" => matches!(method, "GET" | "POST"),
            "POST, HEAD" => matches!(method, "POST" | "HEAD"),
            one => method == one,
        };
        if ok {
            Ok(route)
        } else {
            Err(RouteError::MethodNotAllowed {
                method: method.to_owned(),
                path: path.to_owned(),
                allowed,
            })
        }
    }

    /// The endpoint class an operator allows or denies.
    pub fn class(&self) -> EndpointClass {
        use Route::*;
        match self {
            Root | Version | Tags | Ps | Show => EndpointClass::List,
            Chat => EndpointClass::Chat,
            Generate => EndpointClass::Generate,
            Embed | Embeddings => EndpointClass::Embed,
            OaiChat | OaiCompletions | OaiEmbeddings | OaiModels | OaiModel(_) => {
                EndpointClass::Openai
            }
            OaiResponses => EndpointClass::OpenaiResponses,
            AnthropicMessages => EndpointClass::Anthropic,
            Pull | Push | Create | Copy | Delete | Blob(_) => EndpointClass::Manage,
            Me | Signout | Experimental => EndpointClass::Cloud,
        }
    }

    /// The fields Ollama reads a model name from, in the order it prefers them.
    /// A route with several *distinct* model fields (copy) lists them all in `all_of`.
    ///
    /// Per Ollama's `api/types.go` (read at ollama/ollama main `fb30760`, 2026-08-21,
    /// after v0.33.0-rc2): only `ShowRequest`, `PullRequest`, `PushRequest`,
    /// `DeleteRequest` and `CreateRequest` still have the deprecated `name`, and their
    /// handlers (`server/routes.go`) take `model` when it is non-empty, else `name`.
    /// `ChatRequest`, `GenerateRequest`, `EmbedRequest` and `EmbeddingRequest` have
    /// `model` alone: a `name` there is an unknown field Ollama ignores, so it names no
    /// model, and a body without `model` is refused (Ollama: `model is required`).
    pub fn model_fields(&self) -> ModelFields {
        use Route::*;
        match self {
            Show | Pull | Push | Create | Delete => ModelFields::FirstOf(&["model", "name"]),
            Chat | Generate | Embed | Embeddings => ModelFields::FirstOf(&["model"]),
            OaiChat | OaiCompletions | OaiEmbeddings | OaiResponses | AnthropicMessages => {
                ModelFields::FirstOf(&["model"])
            }
            Copy => ModelFields::AllOf(&["source", "destination"]),
            _ => ModelFields::None,
        }
    }

    /// How the body is read.
    pub fn body_kind(&self, method: &str) -> BodyKind {
        match (self, method) {
            (Route::Blob(_), "POST") => BodyKind::Opaque,
            (_, "GET" | "HEAD") => BodyKind::None,
            (Route::Me | Route::Signout | Route::Experimental, _) => BodyKind::Opaque,
            _ => BodyKind::Json,
        }
    }

    /// Is the reply an NDJSON stream when the request asks for streaming?
    pub fn streams_ndjson(&self) -> bool {
        use Route::*;
        matches!(self, Chat | Generate | Pull | Push | Create)
    }

    /// The error format for this path family.
    pub fn error_format_for_path(path: &str) -> ErrorFormat {
        if path.starts_with("/v1/") {
            ErrorFormat::OpenAi
        } else {
            ErrorFormat::Ollama
        }
    }
}

/// Which JSON fields carry model names for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFields {
    None,
    /// The first present, non-empty field wins (Ollama: `model` over legacy `name`).
    FirstOf(&'static [&'static str]),
    /// Every field names a model that must be allowed.
    AllOf(&'static [&'static str]),
}

/// A path is canonical when it starts with `/`, has no empty, `.` or `..` segment,
/// no `%`, backslash or control byte, and no trailing slash (except `/` itself).
pub fn is_canonical_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    if !path.starts_with('/') || path.ends_with('/') {
        return false;
    }
    if path
        .bytes()
        .any(|b| b == b'%' || b == b'\\' || b <= b' ' || b >= 0x7f)
    {
        return false;
    }
    path[1..]
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok = |m, p| Route::classify(m, p, None).unwrap();
        assert_eq!(ok("POST", "/api/chat").class(), EndpointClass::Chat);
        assert_eq!(ok("HEAD", "/").class(), EndpointClass::List);
        assert_eq!(ok("GET", "/api/tags").class(), EndpointClass::List);
        assert_eq!(ok("POST", "/api/embeddings").class(), EndpointClass::Embed);
        assert_eq!(
            ok("GET", "/v1/models/qwen2.5:7b"),
            Route::OaiModel("qwen2.5:7b".into())
        );
        assert_eq!(ok("DELETE", "/api/delete").class(), EndpointClass::Manage);
        assert_eq!(
            ok("HEAD", "/api/blobs/sha256:ab").class(),
            EndpointClass::Manage
        );
        assert_eq!(
            ok("GET", "/api/experimental/x").class(),
            EndpointClass::Cloud
        );
        assert_eq!(
            ok("POST", "/v1/responses").class(),
            EndpointClass::OpenaiResponses
        );
        assert_eq!(ok("POST", "/v1/messages").class(), EndpointClass::Anthropic);
    }

    #[test]
    fn refusals() {
        let err = |m, p, q| Route::classify(m, p, q).unwrap_err();
        for p in [
            "/api/%70ull",
            "/api/chat/../pull",
            "//api/pull",
            "/api/chat/",
            "/api/./chat",
            "api/chat",
            "/api\\chat",
            "/api/ch at",
        ] {
            assert!(
                matches!(err("POST", p, None), RouteError::NonCanonicalPath(_)),
                "{p}"
            );
        }
        assert!(matches!(
            err("POST", "/api/chat", Some("model=x")),
            RouteError::Query(_)
        ));
        assert!(matches!(
            err("GET", "/api/chat", None),
            RouteError::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            err("POST", "/api/nope", None),
            RouteError::NotFound { .. }
        ));
        assert!(matches!(
            err("GET", "/v1/models/a/b", None),
            RouteError::NotFound { .. }
        ));
        assert!(matches!(
            err("GET", "/API/TAGS", None),
            RouteError::NotFound { .. }
        ));
    }
}
