//! OpenAI `/v1/chat/completions` bodies to Ollama's `/api/chat` ones, field by field as
//! Ollama's own `/v1` layer maps them (`openai/openai.go` `FromChatRequest`, read at
//! ollama main `fb30760`, after v0.33.0-rc2): messages (each content part its own
//! message, images and audio as base64 data), tool calls with string arguments (held to
//! the strict rules of a body), tool results by id, sampling options, response format,
//! reasoning effort, logprobs. Fields that layer ignores (`tool_choice`, `n`,
//! `max_completion_tokens`, ...) are ignored; wrong types are refused.

use serde_json::{json, Map, Value};

use super::{field, TranslateError};
use crate::json::{parse_strict_object, JsonError};

/// A chat request in native form, plus what the answer must look like.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The `/api/chat` body (always `stream: true`: the bridge reads Ollama's chunks).
    pub native: Map<String, Value>,
    /// The model as the client named it (echoed in every answer).
    pub model: String,
    /// The client asked for SSE.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

pub(crate) fn type_err(field: impl Into<String>, expected: &'static str) -> TranslateError {
    TranslateError::Type {
        field: field.into(),
        expected,
    }
}

pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> TranslateError {
    TranslateError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

pub(crate) fn model_of(req: &Map<String, Value>) -> Result<String, TranslateError> {
    match field(req, "model") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None => Err(TranslateError::Missing {
            field: "model".into(),
        }),
        Some(_) => Err(type_err("model", "a string")),
    }
}

pub(crate) fn bool_field(req: &Map<String, Value>, name: &str) -> Result<bool, TranslateError> {
    match field(req, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(type_err(name, "a boolean")),
    }
}

/// Translates a `/v1/chat/completions` body.
pub fn chat_request(req: &Map<String, Value>) -> Result<ChatRequest, TranslateError> {
    let model = model_of(req)?;
    let stream = bool_field(req, "stream")?;
    let include_usage = include_usage(req)?;
    let messages = match field(req, "messages") {
        Some(Value::Array(a)) => messages(a)?,
        None => {
            return Err(TranslateError::Missing {
                field: "messages".into(),
            })
        }
        Some(_) => return Err(type_err("messages", "an array")),
    };

    let mut native = Map::new();
    native.insert("model".into(), json!(model));
    native.insert("messages".into(), Value::Array(messages));
    native.insert("stream".into(), json!(true));
    // `tool_choice` is ignored, as by Ollama's layer: the tools go to the model.
    match field(req, "tools") {
        None => {}
        Some(Value::Array(t)) if t.is_empty() => {}
        Some(Value::Array(t)) => {
            for (i, tool) in t.iter().enumerate() {
                if !tool.pointer("/function/name").is_some_and(Value::is_string) {
                    return Err(invalid(
                        format!("tools[{i}]"),
                        "each tool needs function.name",
                    ));
                }
            }
            native.insert("tools".into(), Value::Array(t.clone()));
        }
        Some(_) => return Err(type_err("tools", "an array")),
    }
    native.insert("options".into(), Value::Object(options(req)?));
    if let Some(f) = format(req)? {
        native.insert("format".into(), f);
    }
    if let Some(t) = think(req)? {
        native.insert("think".into(), t);
    }
    // As Ollama's layer: `logprobs: true` asks for them, `top_logprobs` is passed when set.
    if bool_field(req, "logprobs")? {
        native.insert("logprobs".into(), json!(true));
    }
    match field(req, "top_logprobs") {
        None => {}
        Some(v) => match v.as_i64() {
            Some(0) => {}
            Some(n) => {
                native.insert("top_logprobs".into(), json!(n));
            }
            None => return Err(type_err("top_logprobs", "an integer")),
        },
    }
    Ok(ChatRequest {
        native,
        model,
        stream,
        include_usage,
    })
}

/// `stream_options.include_usage`.
pub(crate) fn include_usage(req: &Map<String, Value>) -> Result<bool, TranslateError> {
    match field(req, "stream_options") {
        None => Ok(false),
        Some(Value::Object(o)) => bool_field(o, "include_usage")
            .map_err(|_| type_err("stream_options.include_usage", "a boolean")),
        Some(_) => Err(type_err("stream_options", "an object")),
    }
}

/// Sampling options of a chat request (`max_completion_tokens` is ignored, as by
/// Ollama's layer: only `max_tokens` becomes `num_predict`).
fn options(req: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    sampling_options(req, &["max_tokens"])
}

/// Sampling options, shared by chat and (legacy) completions: `num_predict` from the
/// first of `max_fields` present, temperature, top_p, seed, the penalties and stop. Like
/// Ollama's own layer, temperature and top_p default to OpenAI's 1.0 rather than the
/// Modelfile's values.
pub(crate) fn sampling_options(
    req: &Map<String, Value>,
    max_fields: &[&str],
) -> Result<Map<String, Value>, TranslateError> {
    let mut o = Map::new();
    let number = |name: &str| -> Result<Option<Value>, TranslateError> {
        match field(req, name) {
            None => Ok(None),
            Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
            Some(_) => Err(type_err(name, "a number")),
        }
    };
    let integer = |name: &str| -> Result<Option<i64>, TranslateError> {
        match field(req, name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| type_err(name, "an integer")),
        }
    };
    let mut max = None;
    for name in max_fields {
        if let Some(n) = integer(name)? {
            max = Some(n);
            break;
        }
    }
    if let Some(n) = max {
        o.insert("num_predict".into(), json!(n));
    }
    o.insert(
        "temperature".into(),
        number("temperature")?.unwrap_or(json!(1.0)),
    );
    o.insert("top_p".into(), number("top_p")?.unwrap_or(json!(1.0)));
    if let Some(n) = integer("seed")? {
        o.insert("seed".into(), json!(n));
    }
    for name in ["frequency_penalty", "presence_penalty"] {
        if let Some(v) = number(name)? {
            o.insert(name.into(), v);
        }
    }
    match field(req, "stop") {
        None => {}
        Some(Value::String(s)) => {
            o.insert("stop".into(), json!([s]));
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            o.insert("stop".into(), Value::Array(a.clone()));
        }
        Some(_) => return Err(type_err("stop", "a string or an array of strings")),
    }
    Ok(o)
}

/// `format` from `response_format`, as Ollama's layer reads it: the type trimmed and
/// case-folded; `json_object` → `"json"`, `json_schema` → its `schema` (when there is
/// one); `text` and any other type → no format.
fn format(req: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let Some(rf) = field(req, "response_format") else {
        return Ok(None);
    };
    let Value::Object(rf) = rf else {
        return Err(type_err("response_format", "an object"));
    };
    let kind = match field(rf, "type") {
        None => String::new(),
        Some(Value::String(t)) => t.trim().to_lowercase(),
        Some(_) => return Err(type_err("response_format.type", "a string")),
    };
    Ok(match kind.as_str() {
        "json_object" => Some(json!("json")),
        "json_schema" => match field(rf, "json_schema") {
            Some(Value::Object(js)) => field(js, "schema").cloned(),
            _ => None,
        },
        _ => None,
    })
}

/// `think` from `reasoning.effort` (when `reasoning` is there) or `reasoning_effort`, as
/// Ollama's `thinkFromReasoningEffort`: OpenAI's tiers past Ollama's ends are clamped.
fn think(req: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let (name, effort) = match (field(req, "reasoning"), field(req, "reasoning_effort")) {
        (Some(r), _) => ("reasoning.effort", r.get("effort")),
        (None, e) => ("reasoning_effort", e),
    };
    let effort = match effort {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(type_err(name, "a string")),
    };
    Ok(match effort {
        "" => None,
        "none" => Some(json!(false)),
        "minimal" => Some(json!("low")),
        "low" | "medium" | "high" | "max" => Some(json!(effort)),
        "xhigh" | "ultra" => Some(json!("max")),
        _ => {
            return Err(invalid(
                name,
                format!("invalid reasoning value \"{effort}\" (must be \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"),
            ))
        }
    })
}

fn messages(input: &[Value]) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::with_capacity(input.len());
    for (i, m) in input.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let Value::Object(m) = m else {
            return Err(type_err(format!("messages[{i}]"), "an object"));
        };
        let role = match field(m, "role").and_then(Value::as_str) {
            Some("system" | "developer") => "system",
            Some(r @ ("user" | "assistant" | "tool")) => r,
            Some(r) => return Err(invalid(at("role"), format!("unknown role \"{r}\""))),
            None => return Err(TranslateError::Missing { field: at("role") }),
        };
        // As in Ollama's layer, each part of a list of content parts is a message of its
        // own (text, or one image); the message's other fields go on the last of them.
        let parts = content(field(m, "content"), &at("content"))?;
        let first = out.len();
        for part in parts {
            let mut n = Map::new();
            n.insert("role".into(), json!(role));
            match part {
                Part::Text(t) => {
                    n.insert("content".into(), json!(t));
                }
                Part::Image(b64) => {
                    n.insert("content".into(), json!(""));
                    n.insert("images".into(), json!([b64]));
                }
            }
            out.push(Value::Object(n));
        }
        if out.len() == first {
            out.push(json!({"role": role, "content": ""}));
        }
        let Some(Value::Object(n)) = out.last_mut() else {
            unreachable!("a message was just pushed");
        };
        if role == "assistant" {
            if let Some(r) = field(m, "reasoning").or_else(|| field(m, "reasoning_content")) {
                n.insert("thinking".into(), r.clone());
            }
            if let Some(calls) = field(m, "tool_calls") {
                n.insert("tool_calls".into(), tool_calls(calls, &at("tool_calls"))?);
            }
        }
        if role == "tool" {
            let name = match field(m, "name").and_then(Value::as_str) {
                Some(n) if !n.is_empty() => Some(n.to_owned()),
                _ => field(m, "tool_call_id")
                    .and_then(Value::as_str)
                    .and_then(|id| name_for_call(&input[..i], id)),
            };
            if let Some(name) = name {
                n.insert("tool_name".into(), json!(name));
            }
        }
        match field(m, "tool_call_id") {
            None => {}
            Some(Value::String(id)) if id.is_empty() => {}
            Some(v @ Value::String(_)) => {
                n.insert("tool_call_id".into(), v.clone());
            }
            Some(_) => return Err(type_err(at("tool_call_id"), "a string")),
        }
    }
    Ok(out)
}

/// The function name of the (latest) earlier assistant tool call with this id.
fn name_for_call(earlier: &[Value], id: &str) -> Option<String> {
    earlier.iter().rev().find_map(|m| {
        m.get("tool_calls")?
            .as_array()?
            .iter()
            .rev()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))?
            .pointer("/function/name")?
            .as_str()
            .map(str::to_owned)
    })
}

fn tool_calls(calls: &Value, at: &str) -> Result<Value, TranslateError> {
    let Value::Array(calls) = calls else {
        return Err(type_err(at, "an array"));
    };
    let mut out = Vec::with_capacity(calls.len());
    for (j, c) in calls.iter().enumerate() {
        let here = format!("{at}[{j}]");
        let name = c
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::Missing {
                field: format!("{here}.function.name"),
            })?;
        let arguments = match c.pointer("/function/arguments") {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            // Held to the rules of a body: Ollama's Go decoder would keep the last of two
            // duplicate keys and match keys case-insensitively, so refuse those, and the
            // nesting limit.
            Some(Value::String(s)) => match parse_strict_object(s.as_bytes()) {
                Ok(obj) => Value::Object(obj),
                Err(e) => {
                    return Err(invalid(
                        format!("{here}.function.arguments"),
                        arguments_problem(&e),
                    ))
                }
            },
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return Err(type_err(format!("{here}.function.arguments"), "a string")),
        };
        let mut call = json!({"function": {"index": j, "name": name, "arguments": arguments}});
        if let Some(id) = c.get("id").and_then(Value::as_str) {
            call["id"] = json!(id);
        }
        out.push(call);
    }
    Ok(Value::Array(out))
}

/// What is wrong with a tool call's `arguments` string.
fn arguments_problem(e: &JsonError) -> String {
    const WANT: &str = "must be a JSON object encoded as a string";
    match e {
        JsonError::Empty | JsonError::NotObject => WANT.to_owned(),
        JsonError::Utf8 | JsonError::Syntax(_) => format!("{WANT} ({e})"),
    }
}

/// One content part: its text, or one image (or audio clip) as base64.
enum Part {
    Text(String),
    Image(String),
}

/// The parts of a message's content (a string is one text part).
fn content(c: Option<&Value>, at: &str) -> Result<Vec<Part>, TranslateError> {
    let parts = match c {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![Part::Text(s.clone())]),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(type_err(at, "a string or an array of content parts")),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (k, p) in parts.iter().enumerate() {
        let here = format!("{at}[{k}]");
        match p.get("type").and_then(Value::as_str) {
            Some("text") => match p.get("text") {
                Some(Value::String(t)) => out.push(Part::Text(t.clone())),
                _ => return Err(type_err(format!("{here}.text"), "a string")),
            },
            Some("image_url") => {
                let url = match p.get("image_url") {
                    Some(Value::String(u)) => u.as_str(),
                    Some(Value::Object(o)) => o.get("url").and_then(Value::as_str).unwrap_or(""),
                    _ => "",
                };
                out.push(Part::Image(data_url_image(url).ok_or_else(|| {
                    invalid(
                        format!("{here}.image_url"),
                        "images must be base64 data URLs (data:image/png;base64,..., jpeg, jpg, png or webp); the bridge does not fetch remote images",
                    )
                })?));
            }
            Some("input_audio") => {
                let data = p
                    .pointer("/input_audio/data")
                    .and_then(Value::as_str)
                    .filter(|d| is_base64(d))
                    .ok_or_else(|| {
                        invalid(
                            format!("{here}.input_audio.data"),
                            "base64 audio data is required",
                        )
                    })?;
                out.push(Part::Image(data.to_owned()));
            }
            Some("refusal") => {}
            Some(t) => {
                return Err(invalid(
                    format!("{here}.type"),
                    format!("content part type \"{t}\" is not supported"),
                ))
            }
            None => {
                return Err(TranslateError::Missing {
                    field: format!("{here}.type"),
                })
            }
        }
    }
    Ok(out)
}

/// The base64 payload of `data:image/<jpeg|jpg|png|webp>;base64,<payload>` or
/// `data:;base64,<payload>`: the data URLs Ollama's layer takes.
fn data_url_image(url: &str) -> Option<String> {
    let rest = url.strip_prefix("data:")?;
    let (mime, payload) = rest.split_once(";base64,")?;
    let ok_mime = matches!(
        mime,
        "" | "image/jpeg" | "image/jpg" | "image/png" | "image/webp"
    );
    (ok_mime && is_base64(payload)).then(|| payload.to_owned())
}

fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
