//! OpenAI's legacy `/v1/completions` served through Ollama's `/api/generate`, as pure
//! translation: the request ([`completion_request`]), Ollama's NDJSON chunks to OpenAI's
//! SSE stream ([`CompletionStream`]) or to one `text_completion` object
//! ([`CompletionCollector`]).
//!
//! Modelled on Ollama's own layer, read at ollama/ollama main `fb30760` (2026-08-21,
//! after v0.33.0-rc2): `openai/openai.go` (`CompletionRequest`, `FromCompleteRequest`,
//! `ToCompletion`, `ToCompleteChunk`) and `middleware/openai.go` (`CompletionsMiddleware`,
//! `CompleteWriter`). The same fields are read the same way: `prompt` (one string),
//! `suffix`, `max_tokens` → `num_predict`, `temperature` and `top_p` (1.0 when absent),
//! `seed`, `frequency_penalty`, `presence_penalty`, `stop` (a string or strings),
//! `stream`, `stream_options.include_usage`; other fields are ignored. The answers have
//! the same shape: `object: "text_completion"`, `system_fingerprint: "fp_ollama"`, one
//! choice with `text`, the finish reason on the last chunk, a usage chunk with empty
//! `choices` before `data: [DONE]` when asked. Where Ollama's layer is loose, this follows
//! OpenAI instead:
//! - `finish_reason` is `stop` or `length` (Ollama passes `load` and `unload` through);
//! - chunks before the last carry no `usage` (Ollama writes zeroed counts on each);
//! - an error after the stream started is one OpenAI error event, not an empty chunk;
//! - `echo: true` gives the prompt back before the completion (Ollama ignores `echo`);
//! - choices carry `"logprobs": null` (`logprobs` is not asked of Ollama: its layer never
//!   returns them either);
//! - a `prompt` given as a list of one string is that string; several prompts or token
//!   ids are refused with 400 (Ollama's decoder refuses any list);
//! - `top_p: 0` is sent as 0 (Ollama cannot tell it from absent and sends 1.0), and the
//!   penalties only when given (Ollama sends 0, its default, when absent);
//! - `stop` of another type is refused (Ollama ignores a number there).

use serde_json::{json, Map, Value};

use super::request::{bool_field, include_usage, invalid, model_of, sampling_options, type_err};
use super::response::{read_line, CollectError};
use super::stream::{error_event, sse, SseStream};
use super::{field, finish_reason, native_error, upstream_error_body, usage, Meta, TranslateError};
use crate::error::{BridgeError, Reason};
use crate::route::ErrorFormat;

/// A completion request in native form, plus what the answer must look like.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The `/api/generate` body (always `stream: true`: the bridge reads Ollama's chunks).
    pub native: Map<String, Value>,
    /// The model as the client named it (echoed in every answer).
    pub model: String,
    /// The client asked for SSE.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// With `echo: true`, the prompt, given back before the completion.
    pub echo: Option<String>,
}

/// Translates a `/v1/completions` body.
pub fn completion_request(req: &Map<String, Value>) -> Result<CompletionRequest, TranslateError> {
    let model = model_of(req)?;
    let stream = bool_field(req, "stream")?;
    let include_usage = include_usage(req)?;
    let prompt = match field(req, "prompt") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => match a.as_slice() {
            [Value::String(s)] => s.clone(),
            _ => {
                return Err(invalid(
                    "prompt",
                    "must be one string (Ollama completes one text prompt; several prompts or token ids are not supported)",
                ))
            }
        },
        Some(_) => return Err(type_err("prompt", "a string")),
    };
    let echo = bool_field(req, "echo")?.then(|| prompt.clone());
    let mut native = Map::new();
    native.insert("model".into(), json!(model));
    native.insert("prompt".into(), json!(prompt));
    native.insert("stream".into(), json!(true));
    match field(req, "suffix") {
        None => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(s @ Value::String(_)) => {
            native.insert("suffix".into(), s.clone());
        }
        Some(_) => return Err(type_err("suffix", "a string")),
    }
    native.insert(
        "options".into(),
        Value::Object(sampling_options(req, &["max_tokens"])?),
    );
    Ok(CompletionRequest {
        native,
        model,
        stream,
        include_usage,
        echo,
    })
}

/// The values every chunk repeats: `cmpl-<request id>`.
pub fn completion_meta(request_id: &str, created: u64, model: &str) -> Meta {
    Meta {
        id: format!("cmpl-{request_id}"),
        ..Meta::new(request_id, created, model)
    }
}

/// A `text_completion` object (or chunk) with one choice.
fn completion_object(meta: &Meta, text: &str, finish: Option<&str>) -> Value {
    json!({
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": "fp_ollama",
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
    })
}

/// Prompt and completion token counts of a final chunk.
fn counts(v: &Value) -> (u64, u64) {
    let count = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    (count("prompt_eval_count"), count("eval_count"))
}

fn is_final(v: &Value) -> bool {
    v.get("done").and_then(Value::as_bool) == Some(true)
}

fn done_reason(v: &Value) -> Option<&str> {
    v.get("done_reason").and_then(Value::as_str)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Done,
    Failed,
}

/// The NDJSON → SSE translator for one streamed completion.
#[derive(Debug)]
pub struct CompletionStream {
    meta: Meta,
    include_usage: bool,
    /// The prompt still to give back (`echo: true`), before the first text.
    echo: Option<String>,
    state: State,
}

impl CompletionStream {
    pub fn new(meta: Meta, include_usage: bool, echo: Option<String>) -> Self {
        CompletionStream {
            meta,
            include_usage,
            echo,
            state: State::Open,
        }
    }

    /// One parsed native chunk: a chunk with its text (none for an empty one before the
    /// end); at the end the finish reason, the usage chunk when asked, `data: [DONE]`.
    pub fn chunk(&mut self, v: &Value) -> Vec<u8> {
        if self.state != State::Open {
            return Vec::new();
        }
        if let Some(msg) = native_error(v) {
            self.state = State::Failed;
            return error_event(upstream_error_body(500, &msg));
        }
        let done = is_final(v);
        let mut text = v
            .get("response")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(prompt) = self.echo.take() {
            text.insert_str(0, &prompt);
        }
        let mut out = Vec::new();
        if !text.is_empty() || done {
            let finish = done.then(|| finish_reason(done_reason(v), false));
            out.extend(sse(&completion_object(&self.meta, &text, finish)));
        }
        if done {
            if self.include_usage {
                let (prompt, completion) = counts(v);
                let mut u = completion_object(&self.meta, "", None);
                u["choices"] = json!([]);
                u["usage"] = usage(prompt, completion);
                out.extend(sse(&u));
            }
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.state = State::Done;
        }
        out
    }
}

impl SseStream for CompletionStream {
    fn line(&mut self, line: &[u8]) -> Vec<u8> {
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

    fn finish(&mut self) -> Vec<u8> {
        if self.state != State::Open {
            return Vec::new();
        }
        self.fail(&BridgeError::new(
            Reason::UpstreamError,
            "Ollama's answer ended before its final chunk; the answer is incomplete",
        ))
    }

    fn fail(&mut self, err: &BridgeError) -> Vec<u8> {
        if self.state != State::Open {
            return Vec::new();
        }
        self.state = State::Failed;
        error_event(err.body(ErrorFormat::OpenAi))
    }

    fn failed(&self) -> bool {
        self.state == State::Failed
    }

    fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// Gathers one non-streamed completion from Ollama's chunks.
#[derive(Debug)]
pub struct CompletionCollector {
    meta: Meta,
    text: String,
    /// `done_reason`, prompt and completion tokens of the final chunk.
    done: Option<(Option<String>, u64, u64)>,
    error: Option<CollectError>,
}

impl CompletionCollector {
    pub fn new(meta: Meta, echo: Option<String>) -> Self {
        CompletionCollector {
            meta,
            text: echo.unwrap_or_default(),
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
        if let Some(t) = v.get("response").and_then(Value::as_str) {
            self.text.push_str(t);
        }
        if is_final(v) {
            let (prompt, completion) = counts(v);
            self.done = Some((done_reason(v).map(str::to_owned), prompt, completion));
        }
    }

    /// The final chunk or an error was seen: later lines are ignored.
    pub fn finished(&self) -> bool {
        self.done.is_some() || self.error.is_some()
    }

    /// The `text_completion` object.
    pub fn finish(self) -> Result<Value, CollectError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some((reason, prompt, completion)) = self.done else {
            return Err(CollectError::Incomplete);
        };
        let finish = finish_reason(reason.as_deref(), false);
        let mut v = completion_object(&self.meta, &self.text, Some(finish));
        v["usage"] = usage(prompt, completion);
        Ok(v)
    }
}

#[cfg(test)]
#[path = "completion_tests.rs"]
mod tests;
