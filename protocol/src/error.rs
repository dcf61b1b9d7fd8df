//! Errors the bridge answers itself, in the format the client expects: Ollama's
//! `{"error":"..."}` or OpenAI's `{"error":{"message","type","param","code"}}`.
//! Every message starts with `ollama-bridge:` so nobody mistakes it for Ollama's.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::route::ErrorFormat;

/// The snake_case reason codes of the audit record. Each reason decides the status of the
/// answer the bridge gives for it ([`Reason::status`]): nobody pairs them by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// A connection over the sandbox's `max_connections` (answered, never audited:
    /// it carried no parsed request).
    ConnectionLimit,
    /// The guest handed over a descriptor that is not a connected TCP stream socket (or
    /// garbled the hand-off): closed unanswered.
    HandoffRefused,
    /// A request this bridge (or another ollama-bridge) forwarded came back to it: the
    /// upstream is a bridge listener, not Ollama.
    LoopDetected,
    /// The sandbox's token budget (`tokens_per_hour` / `tokens_per_day`) is spent.
    BudgetExhausted,
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
            Reason::ConnectionLimit => "connection_limit",
            Reason::HandoffRefused => "handoff_refused",
            Reason::LoopDetected => "loop_detected",
            Reason::BudgetExhausted => "budget_exhausted",
        }
    }

    /// The status of the bridge's own answer for this reason; 0 where no answer is sent
    /// (the client is gone). Records of requests the HTTP parser rejected carry the
    /// parser's status instead (431 for a head over `max_header_bytes`, none for a head
    /// that never completed), and an upstream error keeps Ollama's status.
    pub fn status(self) -> u16 {
        match self {
            Reason::ModelNotAllowed
            | Reason::CloudModelNotAllowed
            | Reason::PeerNotAllowed
            | Reason::EndpointNotAllowed => 403,
            Reason::ModelRequired | Reason::BadModelName | Reason::BadRequest => 400,
            Reason::NotFound => 404,
            Reason::MethodNotAllowed => 405,
            Reason::RequestTimeout => 408,
            Reason::TooLarge => 413,
            Reason::UnsupportedMediaType => 415,
            Reason::RateLimited | Reason::BudgetExhausted => 429,
            Reason::Internal => 500,
            Reason::UpstreamUnreachable | Reason::UpstreamError => 502,
            Reason::ShuttingDown | Reason::ConnectionLimit => 503,
            Reason::UpstreamTimeout => 504,
            Reason::LoopDetected => 508,
            Reason::ClientClosed | Reason::HandoffRefused => 0,
        }
    }

    /// Did Ollama (unreachable, silent or failing) cause this, rather than the client
    /// or the policy?
    pub fn is_upstream(self) -> bool {
        matches!(
            self,
            Reason::UpstreamUnreachable | Reason::UpstreamTimeout | Reason::UpstreamError
        )
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
                | Reason::LoopDetected
        )
    }
}

/// An answer the bridge gives itself; its status is its reason's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeError {
    pub reason: Reason,
    /// Without the `ollama-bridge: ` prefix.
    pub message: String,
    /// For 429: seconds until a retry can succeed (`Retry-After`); 1 when unknown.
    pub retry_after: Option<u64>,
    /// Host-side facts for the host log only (e.g. the upstream's address): never in
    /// an answer to a sandbox.
    pub detail: Option<String>,
}

impl BridgeError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        BridgeError {
            reason,
            message: message.into(),
            retry_after: None,
            detail: None,
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    /// Sets the `Retry-After` seconds of a 429.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds facts for the host log only.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
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
                    "type": openai_type(self.status()),
                    "param": null,
                    "code": self.reason.as_str(),
                }
            }),
        };
        serde_json::to_vec(&v).expect("serialising a json! value cannot fail")
    }

    /// A whole HTTP/1.1 answer with `Connection: close`, for the places that write bytes
    /// on a connection no HTTP server handles (the guest when bridge-host is unreachable,
    /// the host over `max_connections`).
    pub fn raw_http(&self, format: ErrorFormat) -> Vec<u8> {
        let body = self.body(format);
        let status = self.status();
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n",
            reason_phrase(status),
            body.len()
        );
        if matches!(status, 429 | 503) {
            out.push_str(&format!(
                "retry-after: {}\r\n",
                self.retry_after.unwrap_or(1)
            ));
        }
        out.push_str("connection: close\r\n\r\n");
        let mut out = out.into_bytes();
        out.extend(body);
        out
    }
}

/// The reason phrase of the statuses the bridge answers with.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        508 => "Loop Detected",
        _ => "Error",
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
        let e = BridgeError::new(Reason::ModelNotAllowed, "model \"x:1\" is not allowed");
        let o: serde_json::Value = serde_json::from_slice(&e.body(ErrorFormat::Ollama)).unwrap();
        assert_eq!(o["error"], "ollama-bridge: model \"x:1\" is not allowed");
        let a: serde_json::Value = serde_json::from_slice(&e.body(ErrorFormat::OpenAi)).unwrap();
        assert_eq!(a["error"]["type"], "permission_error");
        assert_eq!(a["error"]["code"], "model_not_allowed");
        assert!(a["error"]["param"].is_null());
    }

    #[test]
    fn raw_answers_are_whole_http_messages() {
        let e = BridgeError::new(Reason::UpstreamUnreachable, "cannot reach bridge-host");
        let raw = String::from_utf8(e.raw_http(ErrorFormat::Ollama)).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.ends_with("connection: close"), "{head}");
        assert!(!head.contains("retry-after"));
        assert_eq!(
            body,
            r#"{"error":"ollama-bridge: cannot reach bridge-host"}"#
        );
        let busy = BridgeError::new(Reason::ConnectionLimit, "full").raw_http(ErrorFormat::Ollama);
        let busy = String::from_utf8(busy).unwrap();
        assert!(
            busy.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{busy}"
        );
        assert!(busy.contains("retry-after: 1\r\n"), "{busy}");
    }

    #[test]
    fn every_reason_has_its_status_and_its_code() {
        use Reason::*;
        let all = [
            (ModelNotAllowed, 403),
            (CloudModelNotAllowed, 403),
            (PeerNotAllowed, 403),
            (EndpointNotAllowed, 403),
            (ModelRequired, 400),
            (BadModelName, 400),
            (BadRequest, 400),
            (NotFound, 404),
            (MethodNotAllowed, 405),
            (TooLarge, 413),
            (UnsupportedMediaType, 415),
            (RateLimited, 429),
            (UpstreamUnreachable, 502),
            (UpstreamTimeout, 504),
            (UpstreamError, 502),
            (ShuttingDown, 503),
            (Internal, 500),
            (ClientClosed, 0),
            (RequestTimeout, 408),
            (ConnectionLimit, 503),
            (HandoffRefused, 0),
            (LoopDetected, 508),
            (BudgetExhausted, 429),
        ];
        for (r, status) in all {
            assert_eq!(r.status(), status, "{r:?}");
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), r);
            assert_eq!(BridgeError::new(r, "x").status(), status);
        }
    }
}
