//! OpenAI chat-completions, completions and embeddings served through Ollama's native
//! API, as pure translation: requests to `/api/chat` bodies ([`request`]), Ollama's NDJSON
//! chunks to an OpenAI SSE stream ([`stream`]) or to one object ([`response`]); legacy
//! completions through `/api/generate` ([`completion`]); embeddings ([`embed`]).
//! The host does the I/O; nothing here touches a socket or a clock.

pub mod completion;
pub mod embed;
pub mod request;
pub mod response;
pub mod stream;

use serde_json::{json, Map, Value};
use thiserror::Error;

use crate::error::{BridgeError, Reason};
use crate::json::get_folded;

pub use completion::{
    completion_meta, completion_request, CompletionCollector, CompletionRequest, CompletionStream,
};
pub use embed::{embed_request, embed_response, EmbedRequest};
pub use request::{chat_request, ChatRequest};
pub use response::ChatCollector;
pub use stream::{ChatStream, LineSplitter, SseStream};

/// Why an OpenAI request cannot be translated (the client gets 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TranslateError {
    #[error("\"{field}\" is required")]
    Missing { field: String },
    #[error("\"{field}\" must be {expected}")]
    Type {
        field: String,
        expected: &'static str,
    },
    #[error("\"{field}\": {problem}")]
    Invalid { field: String, problem: String },
}

impl TranslateError {
    /// The bridge's 400 answer for this error.
    pub fn to_error(&self) -> BridgeError {
        BridgeError::new(Reason::BadRequest, self.to_string())
    }
}

/// Reads a field as Ollama's Go decoder would (case-insensitively; the strict parser
/// has already refused bodies where that is ambiguous).
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    get_folded(obj, name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// Who a response is for: the values every chunk repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `chatcmpl-…`
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
    /// Seed for generated tool-call ids (e.g. derived from the request id).
    pub seed: u64,
}

impl Meta {
    /// Meta for a request id: `chatcmpl-<request id>`, ids seeded from it.
    pub fn new(request_id: &str, created: u64, model: &str) -> Meta {
        Meta {
            id: format!("chatcmpl-{request_id}"),
            created,
            model: model.to_owned(),
            seed: fnv(request_id.as_bytes()),
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A tool-call id in Ollama's style, `call_` + 8 of `[a-z0-9]`, for calls without one.
pub fn call_id(seed: u64, n: usize) -> String {
    // splitmix64 of seed and index: distinct per call, stable per request.
    let mut z = seed.wrapping_add((n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let s: String = (0..8)
        .map(|k| ALPHABET[((z >> (k * 6)) % 36) as usize] as char)
        .collect();
    format!("call_{s}")
}

/// OpenAI's usage object from Ollama's final counts (the total saturates: the counts
/// come from upstream and must not overflow).
pub(crate) fn usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
    })
}

/// One tool call of a native chunk, numbered and named for OpenAI.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub index: usize,
    pub id: String,
    pub name: String,
    /// The arguments as a JSON string.
    pub arguments: String,
}

/// Numbers tool calls across all chunks of one answer: 0, 1, 2… in arrival order.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallNumbering {
    ids: Vec<String>,
}

impl CallNumbering {
    /// The OpenAI calls of one native chunk's `message.tool_calls`; a call whose id was
    /// already seen (the same call repeated in a later chunk) is skipped.
    pub fn take(&mut self, seed: u64, calls: Option<&Value>) -> Vec<Call> {
        let Some(Value::Array(calls)) = calls else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for c in calls {
            let f = c.get("function").unwrap_or(&Value::Null);
            let id = match c.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => {
                    if self.ids.iter().any(|seen| seen == id) {
                        continue;
                    }
                    id.to_owned()
                }
                _ => call_id(seed, self.ids.len()),
            };
            let arguments = match f.get("arguments") {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            out.push(Call {
                index: self.ids.len(),
                id: id.clone(),
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                arguments,
            });
            self.ids.push(id);
        }
        out
    }

    /// How many calls so far.
    pub fn count(&self) -> usize {
        self.ids.len()
    }
}

/// `finish_reason` from Ollama's `done_reason` and whether tools were called. As in
/// Ollama's layer, `tool_calls` only replaces `stop`: an answer cut at `num_predict`
/// says `length` even when it called a tool.
pub(crate) fn finish_reason(done_reason: Option<&str>, called: bool) -> &'static str {
    if done_reason == Some("length") {
        "length"
    } else if called {
        "tool_calls"
    } else {
        "stop"
    }
}

/// Ollama's error text from an `{"error": ...}` object, if it is one.
pub fn native_error(v: &Value) -> Option<String> {
    match v.get("error")? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Object(o) => Some(
            o.get("message")
                .and_then(Value::as_str)
                .map_or_else(|| Value::Object(o.clone()).to_string(), str::to_owned),
        ),
        other => Some(other.to_string()),
    }
}

/// OpenAI's error body for an error Ollama reported (its message kept as it is).
pub fn upstream_error_body(status: u16, message: &str) -> Vec<u8> {
    let v = json!({
        "error": {
            "message": message,
            "type": crate::error::openai_type(status),
            "param": null,
            "code": null,
        }
    });
    serde_json::to_vec(&v).expect("serialising a json! value cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_look_like_ollamas_and_differ() {
        let ids: Vec<String> = (0..50).map(|n| call_id(42, n)).collect();
        for id in &ids {
            assert_eq!(id.len(), 13, "{id}");
            assert!(id.starts_with("call_"));
            assert!(id[5..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        }
        let mut uniq = ids.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), ids.len());
        assert_ne!(call_id(1, 0), call_id(2, 0));
    }

    #[test]
    fn numbering_spans_chunks_and_skips_repeats() {
        let mut n = CallNumbering::default();
        let a = json!([{"id":"call_a","function":{"index":0,"name":"f","arguments":{"x":1}}}]);
        let b = json!([{"function":{"index":0,"name":"g","arguments":{}}},
                       {"id":"call_a","function":{"index":0,"name":"f","arguments":{"x":1}}}]);
        let first = n.take(7, Some(&a));
        let second = n.take(7, Some(&b));
        assert_eq!(first[0].index, 0);
        assert_eq!(first[0].arguments, r#"{"x":1}"#);
        assert_eq!(second.len(), 1, "the repeated call_a is skipped");
        assert_eq!(second[0].index, 1);
        assert_eq!(second[0].name, "g");
        assert_eq!(second[0].id, call_id(7, 1));
        assert_eq!(n.count(), 2);
        assert!(n.take(7, None).is_empty());
    }

    #[test]
    fn usage_total_saturates() {
        // Found by fuzz/ndjson_sse: huge counts in the final chunk overflowed the total.
        let u = usage(u64::MAX, u64::MAX);
        assert_eq!(u["total_tokens"], u64::MAX);
        assert_eq!(usage(26, 9)["total_tokens"], 35);
    }

    #[test]
    fn finish_reasons_and_errors() {
        assert_eq!(finish_reason(Some("stop"), true), "tool_calls");
        assert_eq!(finish_reason(Some("length"), false), "length");
        assert_eq!(finish_reason(Some("length"), true), "length");
        assert_eq!(finish_reason(None, true), "tool_calls");
        assert_eq!(finish_reason(None, false), "stop");
        assert_eq!(native_error(&json!({"error":"boom"})), Some("boom".into()));
        assert_eq!(
            native_error(&json!({"error":{"message":"m"}})),
            Some("m".into())
        );
        assert_eq!(native_error(&json!({"done":true})), None);
        let b: Value =
            serde_json::from_slice(&upstream_error_body(404, "model 'x' not found")).expect("json");
        assert_eq!(b["error"]["type"], "not_found_error");
        assert_eq!(b["error"]["message"], "model 'x' not found");
    }
}
