//! The double's OpenAI-compatible `/v1` layer (chat, legacy completions, embeddings,
//! models), with the faults Ollama's layer shows: no `num_ctx` (the default context
//! applies), and, when configured, streamed tool calls dropped (finish_reason "stop",
//! empty content) or all given `index: 0`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::models::{find_model, lookup, parse_body, vector};
use super::native::{self, plan_chat};
use super::server::{json as json_resp, stream, DBody};
use super::State;

fn oai_error(status: StatusCode, kind: &str, msg: &str) -> Response<DBody> {
    json_resp(
        status,
        &json!({"error": {"message": msg, "type": kind, "param": null, "code": null}}),
    )
}

/// Converts an Ollama error response into OpenAI's shape (status kept).
fn convert_error(resp: Response<DBody>) -> Response<DBody> {
    let status = resp.status();
    let kind = if status == StatusCode::NOT_FOUND {
        "not_found_error"
    } else {
        "invalid_request_error"
    };
    oai_error(status, kind, "request failed")
}

pub fn models(state: &State) -> Response<DBody> {
    let cfg = state.config.lock().unwrap();
    let data: Vec<Value> = cfg
        .models
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 1_790_000_000u64, "owned_by": "library"}))
        .collect();
    json_resp(StatusCode::OK, &json!({"object": "list", "data": data}))
}

pub fn model(state: &State, name: &str) -> Response<DBody> {
    match lookup(state, name) {
        Some(m) => json_resp(
            StatusCode::OK,
            &json!({"id": m.name, "object": "model", "created": 1_790_000_000u64, "owned_by": "library"}),
        ),
        None => oai_error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            &format!("model \"{name}\" not found"),
        ),
    }
}

fn flatten_content(c: &Value) -> Value {
    match c {
        Value::Array(parts) => Value::String(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => other.clone(),
    }
}

/// What Ollama's layer passes to the native path: no options but num_predict.
fn to_native(req: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(m) = req.get("model") {
        out.insert("model".into(), m.clone());
    }
    let msgs: Vec<Value> = req
        .get("messages")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|m| {
                    let mut m = m.clone();
                    if let Some(c) = m.get("content").cloned() {
                        m["content"] = flatten_content(&c);
                    }
                    m
                })
                .collect()
        })
        .unwrap_or_default();
    out.insert("messages".into(), Value::Array(msgs));
    if let Some(t) = req.get("tools") {
        out.insert("tools".into(), t.clone());
    }
    if let Some(n) = req
        .get("max_tokens")
        .or_else(|| req.get("max_completion_tokens"))
    {
        out.insert("options".into(), json!({"num_predict": n}));
    }
    out
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!(
        "data: {}\n\n",
        serde_json::to_string(v).expect("json")
    ))
}

pub async fn chat(state: &Arc<State>, body: &[u8]) -> Response<DBody> {
    let req = match parse_body(body) {
        Ok(r) => r,
        Err(e) => return convert_error(e),
    };
    let native_req = to_native(&req);
    let plan = match plan_chat(state, &native_req) {
        Ok(p) => p,
        Err(e) => return convert_error(e),
    };
    let faults = state.config.lock().unwrap().faults;
    let id = "chatcmpl-123";
    let created = 1_795_000_000u64;
    let model = plan.model.clone();
    let oai_calls: Vec<Value> = plan
        .calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "id": c["id"],
                "index": if faults.all_index_zero { 0 } else { i },
                "type": "function",
                "function": {"name": c["function"]["name"], "arguments": serde_json::to_string(&c["function"]["arguments"]).expect("json")}
            })
        })
        .collect();
    let usage = json!({
        "prompt_tokens": plan.seen.evaluated,
        "completion_tokens": plan.pieces.len() + plan.calls.len(),
        "total_tokens": plan.seen.evaluated + (plan.pieces.len() + plan.calls.len()) as u64,
    });
    let stream_on = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream_on {
        let mut msg = json!({"role": "assistant", "content": plan.pieces.concat()});
        let finish = if oai_calls.is_empty() {
            plan.done_reason
        } else {
            "tool_calls"
        };
        if !oai_calls.is_empty() {
            let mut calls = oai_calls.clone();
            for c in &mut calls {
                c.as_object_mut().expect("object").remove("index");
            }
            msg["tool_calls"] = Value::Array(calls);
        }
        return json_resp(
            StatusCode::OK,
            &json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                "usage": usage,
            }),
        );
    }
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut lines: Vec<Bytes> = plan
        .pieces
        .iter()
        .map(|p| {
            sse(&chunk(
                json!({"role": "assistant", "content": p}),
                Value::Null,
            ))
        })
        .collect();
    let deliver_calls = !oai_calls.is_empty() && !faults.drop_streamed_tool_calls;
    if deliver_calls {
        lines.push(sse(&chunk(
            json!({"role": "assistant", "content": "", "tool_calls": oai_calls}),
            Value::Null,
        )));
    }
    let finish = if deliver_calls {
        "tool_calls"
    } else {
        plan.done_reason
    };
    lines.push(sse(&chunk(
        json!({"role": "assistant", "content": ""}),
        json!(finish),
    )));
    if include_usage {
        lines.push(sse(&json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_ollama", "choices": [], "usage": usage,
        })));
    }
    lines.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let (tx, rx) = mpsc::channel(1);
    let err = sse(
        &json!({"error": {"message": "an error was encountered while running the model", "type": "api_error", "param": null, "code": null}}),
    );
    tokio::spawn(native::emit(
        state.clone(),
        plan.script.clone(),
        lines,
        tx,
        err,
    ));
    stream("text/event-stream", rx)
}

/// Ollama's own `/v1/completions` (`CompletionsMiddleware` → `/api/generate` →
/// `CompleteWriter`, ollama main fb30760): no `num_ctx` can be asked, so the default
/// context applies; `max_tokens` is `num_predict`; chunks are `text_completion` objects
/// with the finish reason on the last, a usage chunk with empty choices when asked (and,
/// as Ollama writes them, zeroed usage on every other chunk), then `[DONE]`.
pub async fn completions(state: &Arc<State>, body: &[u8]) -> Response<DBody> {
    let req = match parse_body(body) {
        Ok(r) => r,
        Err(e) => return convert_error(e),
    };
    let mut native_req = Map::new();
    for k in ["model", "prompt"] {
        if let Some(v) = req.get(k) {
            native_req.insert(k.into(), v.clone());
        }
    }
    if let Some(n) = req.get("max_tokens") {
        native_req.insert("options".into(), json!({"num_predict": n}));
    }
    let model = match find_model(state, &native_req) {
        Ok(m) => m,
        Err(e) => return convert_error(e),
    };
    let plan = native::plan_generate(state, &native_req, &model);
    let id = "cmpl-123";
    let created = 1_795_000_000u64;
    let completion = plan.pieces.len() as u64;
    let usage = json!({
        "prompt_tokens": plan.seen.evaluated,
        "completion_tokens": completion,
        "total_tokens": plan.seen.evaluated + completion,
    });
    let object = |text: &str, finish: Value| {
        json!({
            "id": id, "object": "text_completion", "created": created, "model": plan.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"text": text, "index": 0, "finish_reason": finish}],
        })
    };
    if !req.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let mut v = object(&plan.pieces.concat(), json!(plan.done_reason));
        v["usage"] = usage;
        return json_resp(StatusCode::OK, &v);
    }
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let zeroed = |mut v: Value| {
        if include_usage {
            v["usage"] = json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
        }
        v
    };
    let mut lines: Vec<Bytes> = plan
        .pieces
        .iter()
        .map(|p| sse(&zeroed(object(p, Value::Null))))
        .collect();
    lines.push(sse(&zeroed(object("", json!(plan.done_reason)))));
    if include_usage {
        let mut u = object("", Value::Null);
        u["choices"] = json!([]);
        u["usage"] = usage;
        lines.push(sse(&u));
    }
    lines.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let (tx, rx) = mpsc::channel(1);
    let err = sse(
        &json!({"error": {"message": "an error was encountered while running the model", "type": "api_error", "param": null, "code": null}}),
    );
    tokio::spawn(native::emit(
        state.clone(),
        plan.script.clone(),
        lines,
        tx,
        err,
    ));
    stream("text/event-stream", rx)
}

pub fn embeddings(state: &State, body: &[u8]) -> Response<DBody> {
    let req = match parse_body(body) {
        Ok(r) => r,
        Err(e) => return convert_error(e),
    };
    let model = match find_model(state, &req) {
        Ok(m) => m,
        Err(e) => return convert_error(e),
    };
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"object": "embedding", "embedding": vector(s), "index": i}))
        .collect();
    let tokens: u64 = inputs.iter().map(|s| super::tokenize::count(s)).sum();
    json_resp(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": model.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}
