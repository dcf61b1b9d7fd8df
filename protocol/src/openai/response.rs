//! A non-streamed chat answer: Ollama's chunks gathered into one `chat.completion`
//! object (content, reasoning, every tool call from every chunk, finish reason, usage).
//! The bridge always reads Ollama streamed, so a silent Ollama is noticed between chunks.

use serde_json::{json, Map, Value};
use thiserror::Error;

use super::{finish_reason, native_error, usage, Call, CallNumbering, Meta};

/// One line of Ollama's NDJSON answer as a value: `None` for a blank line.
pub(crate) fn read_line(line: &[u8]) -> Option<Result<Value, CollectError>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(serde_json::from_slice(line).map_err(|e| CollectError::NotJson(e.to_string())))
}

/// Why no `chat.completion` could be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CollectError {
    /// Ollama reported an error (its message, as it wrote it).
    #[error("{0}")]
    Ollama(String),
    #[error("Ollama sent a line that is not JSON: {0}")]
    NotJson(String),
    #[error("Ollama's answer ended before its final chunk; the answer is incomplete")]
    Incomplete,
}

/// Gathers one answer.
#[derive(Debug)]
pub struct ChatCollector {
    meta: Meta,
    numbering: CallNumbering,
    content: String,
    thinking: String,
    calls: Vec<Call>,
    /// Every chunk's `logprobs`, in order.
    logprobs: Vec<Value>,
    /// `done_reason`, prompt and completion tokens of the final chunk.
    done: Option<(Option<String>, u64, u64)>,
    error: Option<CollectError>,
}

impl ChatCollector {
    pub fn new(meta: Meta) -> Self {
        ChatCollector {
            meta,
            numbering: CallNumbering::default(),
            content: String::new(),
            thinking: String::new(),
            calls: Vec::new(),
            logprobs: Vec::new(),
            done: None,
            error: None,
        }
    }

    /// One NDJSON line (or Ollama's whole non-streamed object).
    pub fn line(&mut self, line: &[u8]) {
        if self.finished() {
            return;
        }
        match read_line(line) {
            Some(Ok(v)) => self.chunk(&v),
            Some(Err(e)) => self.error = Some(e),
            None => {}
        }
    }

    /// One parsed native chunk.
    pub fn chunk(&mut self, v: &Value) {
        if self.finished() {
            return;
        }
        if let Some(msg) = native_error(v) {
            self.error = Some(CollectError::Ollama(msg));
            return;
        }
        let msg = v.get("message").unwrap_or(&Value::Null);
        if let Some(t) = msg.get("content").and_then(Value::as_str) {
            self.content.push_str(t);
        }
        if let Some(t) = msg.get("thinking").and_then(Value::as_str) {
            self.thinking.push_str(t);
        }
        let calls = self.numbering.take(self.meta.seed, msg.get("tool_calls"));
        self.calls.extend(calls);
        if let Some(Value::Array(l)) = super::stream::logprobs(v) {
            self.logprobs.extend(l);
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            let count = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
            self.done = Some((
                v.get("done_reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                count("prompt_eval_count"),
                count("eval_count"),
            ));
        }
    }

    /// The final chunk or an error was seen: later lines are ignored.
    pub fn finished(&self) -> bool {
        self.done.is_some() || self.error.is_some()
    }

    /// The `chat.completion` object.
    pub fn finish(self) -> Result<Value, CollectError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some((reason, prompt, completion)) = self.done else {
            return Err(CollectError::Incomplete);
        };
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), json!(self.content));
        if !self.thinking.is_empty() {
            message.insert("reasoning".into(), json!(self.thinking));
        }
        if !self.calls.is_empty() {
            let calls: Vec<Value> = self
                .calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        let mut choice = json!({
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(reason.as_deref(), !self.calls.is_empty()),
        });
        if !self.logprobs.is_empty() {
            choice["logprobs"] = json!({ "content": self.logprobs });
        }
        Ok(json!({
            "id": self.meta.id,
            "object": "chat.completion",
            "created": self.meta.created,
            "model": self.meta.model,
            "system_fingerprint": "fp_ollama",
            "choices": [choice],
            "usage": usage(prompt, completion),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            id: "chatcmpl-t".into(),
            created: 1_795_000_000,
            model: "qwen2.5:7b".into(),
            seed: 9,
        }
    }

    fn collect(lines: &[&str]) -> Result<Value, CollectError> {
        let mut c = ChatCollector::new(meta());
        for l in lines {
            c.line(l.as_bytes());
        }
        c.finish()
    }

    const FINAL: &str = r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":4}"#;

    #[test]
    fn gathers_content_calls_and_usage() {
        let got = collect(&[
            r#"{"message":{"role":"assistant","content":"Let "},"done":false}"#,
            r#"{"message":{"role":"assistant","content":"me."},"done":false}"#,
            r#"{"message":{"role":"assistant","content":"","tool_calls":[{"id":"call_aaaaaaaa","function":{"index":0,"name":"get_weather","arguments":{"city":"Paris"}}}]},"done":false}"#,
            r#"{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"index":0,"name":"get_time","arguments":{}}}]},"done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":4}"#,
            r#"{"ignored":"after the final chunk"}"#,
        ])
        .expect("complete");
        assert_eq!(
            got,
            json!({
                "id": "chatcmpl-t", "object": "chat.completion", "created": 1_795_000_000u64,
                "model": "qwen2.5:7b", "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": "Let me.",
                    "tool_calls": [
                        {"id": "call_aaaaaaaa", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": super::super::call_id(9, 1), "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                    ]}, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 26, "completion_tokens": 4, "total_tokens": 30},
            })
        );
    }

    #[test]
    fn plain_answers_and_reasons() {
        let got = collect(&[
            r#"{"message":{"role":"assistant","content":"Hi","thinking":"hmm"},"done":false}"#,
            r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"length","prompt_eval_count":3,"eval_count":1}"#,
        ])
        .expect("complete");
        assert_eq!(got["choices"][0]["finish_reason"], "length");
        assert_eq!(got["choices"][0]["message"]["content"], "Hi");
        assert_eq!(got["choices"][0]["message"]["reasoning"], "hmm");
        assert!(got["choices"][0]["message"].get("tool_calls").is_none());
        // Ollama's non-streamed object is one line with everything.
        let got = collect(&[
            r#"{"message":{"role":"assistant","content":"All of it"},"done":true,"done_reason":"stop","prompt_eval_count":2,"eval_count":3}"#,
        ])
        .expect("complete");
        assert_eq!(got["choices"][0]["message"]["content"], "All of it");
        assert_eq!(got["choices"][0]["finish_reason"], "stop");
        assert_eq!(got["usage"]["total_tokens"], 5);
    }

    #[test]
    fn logprobs_of_every_chunk_are_gathered() {
        let got = collect(&[
            r#"{"message":{"role":"assistant","content":"A"},"logprobs":[{"token":"A","logprob":-1.0}],"done":false}"#,
            r#"{"message":{"role":"assistant","content":"B"},"logprobs":[{"token":"B","logprob":-2.0}],"done":false}"#,
            FINAL,
        ])
        .expect("complete");
        assert_eq!(
            got["choices"][0]["logprobs"],
            json!({"content": [{"token": "A", "logprob": -1.0}, {"token": "B", "logprob": -2.0}]})
        );
        let got = collect(&[FINAL]).expect("complete");
        assert!(got["choices"][0].get("logprobs").is_none());
    }

    #[test]
    fn failures() {
        let table: &[(&[&str], CollectError)] = &[
            (
                &[r#"{"message":{"content":"a"},"done":false}"#],
                CollectError::Incomplete,
            ),
            (
                &[
                    r#"{"message":{"content":"a"},"done":false}"#,
                    r#"{"error":"an error was encountered while running the model: unexpected EOF"}"#,
                    FINAL,
                ],
                CollectError::Ollama(
                    "an error was encountered while running the model: unexpected EOF".into(),
                ),
            ),
            (&[], CollectError::Incomplete),
        ];
        for (lines, want) in table {
            assert_eq!(collect(lines).expect_err("fails"), *want, "{lines:?}");
        }
        assert!(matches!(
            collect(&["{not json", FINAL]),
            Err(CollectError::NotJson(_))
        ));
    }
}
