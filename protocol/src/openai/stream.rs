//! Ollama's NDJSON chat stream to OpenAI's SSE stream, one native chunk at a time:
//! content and reasoning deltas as they come, tool calls from every chunk (intermediate
//! or final) numbered 0, 1, 2… with ids, the finish chunk, the usage chunk when asked,
//! `data: [DONE]`; an error line, a missing final chunk or a failed upstream becomes one
//! `data: {"error":{...}}` event, after which nothing more is written.

use serde_json::{json, Map, Value};
use thiserror::Error;

use super::{finish_reason, native_error, upstream_error_body, usage, Call, CallNumbering, Meta};
use crate::error::{BridgeError, Reason};
use crate::route::ErrorFormat;

/// A line of the upstream answer exceeded the limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a line of Ollama's answer is longer than {max} bytes")]
pub struct LineTooLong {
    pub max: usize,
}

/// Splits a byte stream into lines, wherever the frame boundaries fall.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// Lines longer than `max` bytes are refused.
    pub fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max,
        }
    }

    /// Feeds bytes; `f` gets each completed line (without `\n` or a trailing `\r`).
    pub fn feed(&mut self, mut data: &[u8], mut f: impl FnMut(&[u8])) -> Result<(), LineTooLong> {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            if self.buf.is_empty() {
                // The same limit whether the line came in one frame or in several.
                if nl > self.max {
                    return Err(self.too_long());
                }
                f(trim_cr(&data[..nl]));
            } else {
                self.buf.extend_from_slice(&data[..nl]);
                let line = std::mem::take(&mut self.buf);
                if line.len() > self.max {
                    return Err(self.too_long());
                }
                f(trim_cr(&line));
            }
            data = &data[nl + 1..];
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.max {
            return Err(self.too_long());
        }
        Ok(())
    }

    /// Drops the partial line: memory stays bounded whatever follows.
    fn too_long(&mut self) -> LineTooLong {
        self.buf = Vec::new();
        LineTooLong { max: self.max }
    }

    /// The stream ended: its last line, if it had no newline.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.buf);
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Done,
    Failed,
}

/// Ollama's NDJSON answer to OpenAI's SSE stream, one line at a time: what the host's
/// relay drives for a streamed answer, chat ([`ChatStream`]) or legacy completion
/// ([`CompletionStream`](super::completion::CompletionStream)).
pub trait SseStream: Send {
    /// One NDJSON line: the SSE bytes it produces (often one event, maybe none).
    fn line(&mut self, line: &[u8]) -> Vec<u8>;
    /// The upstream body ended: an error event if the final chunk never came.
    fn finish(&mut self) -> Vec<u8>;
    /// The upstream failed (broken, silent): the error event, unless already complete.
    fn fail(&mut self, err: &BridgeError) -> Vec<u8>;
    /// The stream ended with an error event.
    fn failed(&self) -> bool;
    /// The stream ended with `data: [DONE]`.
    fn is_done(&self) -> bool;
}

impl SseStream for ChatStream {
    fn line(&mut self, line: &[u8]) -> Vec<u8> {
        ChatStream::line(self, line)
    }
    fn finish(&mut self) -> Vec<u8> {
        ChatStream::finish(self)
    }
    fn fail(&mut self, err: &BridgeError) -> Vec<u8> {
        ChatStream::fail(self, err)
    }
    fn failed(&self) -> bool {
        ChatStream::failed(self)
    }
    fn is_done(&self) -> bool {
        ChatStream::is_done(self)
    }
}

/// The NDJSON → SSE translator for one streamed answer.
#[derive(Debug)]
pub struct ChatStream {
    meta: Meta,
    include_usage: bool,
    calls: CallNumbering,
    started: bool,
    state: State,
    /// The native chunk's `logprobs`, for the first event made from it.
    logprobs: Option<Value>,
}

impl ChatStream {
    pub fn new(meta: Meta, include_usage: bool) -> Self {
        ChatStream {
            meta,
            include_usage,
            calls: CallNumbering::default(),
            started: false,
            state: State::Open,
            logprobs: None,
        }
    }

    /// One NDJSON line: the SSE bytes it produces (often one event, maybe none).
    pub fn line(&mut self, line: &[u8]) -> Vec<u8> {
        if line.iter().all(u8::is_ascii_whitespace) || self.state != State::Open {
            return Vec::new();
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => self.chunk(&v),
            Err(e) => self.fail(&BridgeError::new(
                Reason::UpstreamError,
                format!("Ollama sent a line that is not JSON ({e}); the answer is incomplete"),
            )),
        }
    }

    /// One parsed native chunk.
    pub fn chunk(&mut self, v: &Value) -> Vec<u8> {
        if self.state != State::Open {
            return Vec::new();
        }
        if let Some(msg) = native_error(v) {
            self.state = State::Failed;
            return error_event(upstream_error_body(500, &msg));
        }
        let mut out = Vec::new();
        self.logprobs = logprobs(v);
        let msg = v.get("message").unwrap_or(&Value::Null);
        for key in ["thinking", "content"] {
            if let Some(text) = msg
                .get(key)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                let name = if key == "thinking" { "reasoning" } else { key };
                out.extend(self.delta(name, json!(text)));
            }
        }
        let calls = self.calls.take(self.meta.seed, msg.get("tool_calls"));
        if !calls.is_empty() {
            let list: Vec<Value> = calls.iter().map(streamed_call).collect();
            out.extend(self.delta("tool_calls", Value::Array(list)));
        }
        self.logprobs = None;
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            if !self.started {
                out.extend(self.delta("content", json!("")));
            }
            let reason = finish_reason(
                v.get("done_reason").and_then(Value::as_str),
                self.calls.count() > 0,
            );
            out.extend(self.event(json!({}), Some(reason)));
            if self.include_usage {
                let count = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
                let u = json!({
                    "id": self.meta.id, "object": "chat.completion.chunk",
                    "created": self.meta.created, "model": self.meta.model,
                    "system_fingerprint": "fp_ollama", "choices": [],
                    "usage": usage(count("prompt_eval_count"), count("eval_count")),
                });
                out.extend(sse(&u));
            }
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.state = State::Done;
        }
        out
    }

    /// The upstream body ended: an error event if the final chunk never came.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.state != State::Open {
            return Vec::new();
        }
        self.fail(&BridgeError::new(
            Reason::UpstreamError,
            "Ollama's answer ended before its final chunk; the answer is incomplete",
        ))
    }

    /// The upstream failed (broken, silent): the error event, unless already complete.
    pub fn fail(&mut self, err: &BridgeError) -> Vec<u8> {
        if self.state != State::Open {
            return Vec::new();
        }
        self.state = State::Failed;
        error_event(err.body(ErrorFormat::OpenAi))
    }

    /// The stream ended with an error event.
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The stream ended with `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn delta(&mut self, key: &str, value: Value) -> Vec<u8> {
        let mut d = Map::new();
        if !self.started {
            d.insert("role".into(), json!("assistant"));
            self.started = true;
        }
        d.insert(key.into(), value);
        let logprobs = self.logprobs.take();
        self.event_with(Value::Object(d), None, logprobs)
    }

    fn event(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        self.event_with(delta, finish, None)
    }

    /// One chunk event; `logprobs` (the native chunk's list) as the choice's
    /// `logprobs.content`, as Ollama's layer puts them.
    fn event_with(&self, delta: Value, finish: Option<&str>, logprobs: Option<Value>) -> Vec<u8> {
        let mut choice = json!({"index": 0, "delta": delta, "finish_reason": finish});
        if let Some(l) = logprobs {
            choice["logprobs"] = json!({ "content": l });
        }
        sse(&json!({
            "id": self.meta.id, "object": "chat.completion.chunk",
            "created": self.meta.created, "model": self.meta.model,
            "system_fingerprint": "fp_ollama",
            "choices": [choice],
        }))
    }
}

/// A native chunk's `logprobs`, when it has some.
pub(crate) fn logprobs(v: &Value) -> Option<Value> {
    v.get("logprobs")
        .filter(|l| l.as_array().is_some_and(|a| !a.is_empty()))
        .cloned()
}

fn streamed_call(c: &Call) -> Value {
    json!({
        "index": c.index,
        "id": c.id,
        "type": "function",
        "function": {"name": c.name, "arguments": c.arguments},
    })
}

pub(crate) fn sse(v: &Value) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend(serde_json::to_vec(v).expect("serialising a Value cannot fail"));
    out.extend_from_slice(b"\n\n");
    out
}

pub(crate) fn error_event(body: Vec<u8>) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend(body);
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
