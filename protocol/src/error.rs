//! Errors the bridge answers itself, in the format the client expects: Ollama's
//! `{"error":"..."}` or OpenAI's `{"error":{"message","type","param","code"}}`.
//! Every message starts with `ollama-bridge:` so nobody mistakes it for Ollama's.

use serde::Serialize;
use serde_json::json;

use crate::route::ErrorFormat;

/// The snake_case reason codes of the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ModelNotAllowed,
    CloudModelNotAllowed,
    PeerNotAllowed,
    EndpointNotAllowed,
    ModelRequired,
    BadModelName,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    TooLarge,
    UnsupportedMediaType,
    RateLimited,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamError,
    ShuttingDown,
    Internal,
    /// The client went away before the answer was complete.
    ClientClosed,
    /// The client did not send a whole request head in time.
    RequestTimeout,
}

impl Reason {
    /// The code as written in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ModelNotAllowed => "model_not_allowed",
            Reason::CloudModelNotAllowed => "cloud_model_not_allowed",
            Reason::PeerNotAllowed => "peer_not_allowed",
            Reason::EndpointNotAllowed => "endpoint_not_allowed",
            Reason::ModelRequired => "model_required",
            Reason::BadModelName => "bad_model_name",
            Reason::BadRequest => "bad_request",
            Reason::NotFound => "not_found",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::TooLarge => "too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::RateLimited => "rate_limited",
            Reason::UpstreamUnreachable => "upstream_unreachable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::UpstreamError => "upstream_error",
            Reason::ShuttingDown => "shutting_down",
            Reason::Internal => "internal",
            Reason::ClientClosed => "client_closed",
            Reason::RequestTimeout => "request_timeout",
        }
    }

    /// Is this a refusal by policy or validation (as opposed to a failure)?
    pub fn is_denial(self) -> bool {
        !matches!(
            self,
            Reason::UpstreamUnreachable
                | Reason::UpstreamTimeout
                | Reason::UpstreamError
                | Reason::ShuttingDown
                | Reason::Internal
                | Reason::ClientClosed
        )
    }
}

/// An answer the bridge gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeError {
    pub status: u16,
    pub reason: Reason,
    /// Without the `ollama-bridge: ` prefix.
    pub message: String,
    /// For 429: seconds until a retry can succeed (`Retry-After`); 1 when unknown.
    pub retry_after: Option<u64>,
}

impl BridgeError {
    pub fn new(status: u16, reason: Reason, message: impl Into<String>) -> Self {
        BridgeError {
            status,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Sets the `Retry-After` seconds of a 429.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The full message as the client sees it.
    pub fn full_message(&self) -> String {
        format!("ollama-bridge: {}", self.message)
    }

    /// The JSON body in the given format.
    pub fn body(&self, format: ErrorFormat) -> Vec<u8> {
        let v = match format {
            ErrorFormat::Ollama => json!({ "error": self.full_message() }),
            ErrorFormat::OpenAi => json!({
                "error": {
                    "message": self.full_message(),
                    "type": openai_type(self.status),
                    "param": null,
                    "code": self.reason.as_str(),
                }
            }),
        };
        serde_json::to_vec(&v).expect("serialising a json! value cannot fail")
    }
}

/// OpenAI's error `type` for a status.
pub fn openai_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 413 | 415 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let e = BridgeError::new(403, Reason::ModelNotAllowed, "model \"x:1\" is not allowed");
        let o: serde_json::Value = serde_json::from_slice(&e.body(ErrorFormat::Ollama)).unwrap();
        assert_eq!(o["error"], "ollama-bridge: model \"x:1\" is not allowed");
        let a: serde_json::Value = serde_json::from_slice(&e.body(ErrorFormat::OpenAi)).unwrap();
        assert_eq!(a["error"]["type"], "permission_error");
        assert_eq!(a["error"]["code"], "model_not_allowed");
        assert!(a["error"]["param"].is_null());
    }
}
