//! Native routes of the double that answer with a model's words: chat and generate
//! (plans, NDJSON lines, streaming). Model lookup, embeddings and listings: `models.rs`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::models::{find_model, parse_body};
use super::printed::Printed;
use super::server::{error, json as json_resp, stream, DBody};
use super::tokenize::{self, Seen};
use super::{DoubleModel, Script, State, ToolPlacement};

pub const CREATED_AT: &str = "2026-11-20T10:00:00.000000Z";

/// What the double will answer to one chat or generate request.
pub struct Plan {
    pub model: String,
    pub pieces: Vec<String>,
    pub calls: Vec<Value>,
    pub seen: Seen,
    pub done_reason: &'static str,
    pub script: Script,
    /// What a thinking model thinks first, when the request's `think` asks for it.
    pub thinking: Option<&'static str>,
    /// `logprobs: true` asked for them: each content piece's, with this many alternatives.
    pub logprobs: Option<usize>,
}

/// The double's chat models think (a `message.thinking` chunk before the content) when
/// `think` is `true` or a level, as Ollama's thinking models do.
pub const THINKING: &str = "The user wants an answer.";

/// The logprobs the double reports for one piece of content: the piece as one token,
/// and `top` alternatives (the piece again).
pub fn piece_logprobs(piece: &str, top: usize) -> Value {
    let entry = json!({"token": piece, "logprob": -0.25, "bytes": piece.as_bytes()});
    let mut e = entry.clone();
    e["top_logprobs"] = Value::Array(vec![entry; top]);
    json!([e])
}

fn logprobs(req: &Map<String, Value>) -> Option<usize> {
    (req.get("logprobs") == Some(&json!(true)))
        .then(|| req.get("top_logprobs").and_then(Value::as_u64).unwrap_or(0) as usize)
}

fn thinking(req: &Map<String, Value>) -> Option<&'static str> {
    match req.get("think") {
        Some(Value::Bool(true)) => Some(THINKING),
        Some(Value::String(s)) if !s.is_empty() => Some(THINKING),
        _ => None,
    }
}

fn num_ctx(state: &State, req: &Map<String, Value>, model: &DoubleModel) -> u64 {
    let asked = req
        .get("options")
        .and_then(|o| o.get("num_ctx"))
        .and_then(Value::as_u64);
    asked
        .unwrap_or(state.config.lock().unwrap().default_num_ctx)
        .min(model.context_length)
}

/// Deterministic tool-call id: `call_` + 8 of [a-z0-9].
pub fn call_id(i: usize, name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ i as u64;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let s: String = (0..8)
        .map(|k| alphabet[((h >> (k * 5)) % 36) as usize] as char)
        .collect();
    format!("call_{s}")
}

/// Arguments for a tool from its JSON schema: strings "Paris" (or the first enum value),
/// numbers 1, booleans true.
fn arguments_for(tool: &Value) -> Value {
    let mut args = Map::new();
    if let Some(props) = tool
        .pointer("/function/parameters/properties")
        .and_then(Value::as_object)
    {
        for (k, schema) in props {
            let v = if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
                first.clone()
            } else {
                match schema.get("type").and_then(Value::as_str) {
                    Some("number" | "integer") => json!(1),
                    Some("boolean") => json!(true),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ => json!("Paris"),
                }
            };
            args.insert(k.clone(), v);
        }
    }
    Value::Object(args)
}

fn words(text: &str) -> Vec<String> {
    let w: Vec<&str> = text.split_whitespace().collect();
    let n = w.len();
    w.iter()
        .enumerate()
        .map(|(i, s)| {
            if i + 1 < n {
                format!("{s} ")
            } else {
                (*s).to_owned()
            }
        })
        .collect()
}

fn limit(pieces: &mut Vec<String>, req: &Map<String, Value>) -> &'static str {
    let max = req
        .get("options")
        .and_then(|o| o.get("num_predict"))
        .and_then(Value::as_i64)
        .filter(|n| *n >= 0);
    match max {
        Some(n) if (n as usize) < pieces.len() => {
            pieces.truncate(n as usize);
            "length"
        }
        _ => "stop",
    }
}

/// Plans a chat reply.
pub fn plan_chat(state: &State, req: &Map<String, Value>) -> Result<Plan, Response<DBody>> {
    let model = find_model(state, req)?;
    if model.embedding {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("\"{}\" does not support chat", model.name),
        ));
    }
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ctx = num_ctx(state, req, &model);
    let seen = tokenize::truncate_chat(&messages, ctx);
    let script = state.config.lock().unwrap().script.clone();
    let last = messages.last();
    let last_role = last
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let last_text = last
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let tools = req
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let calls: Vec<Value> = if !tools.is_empty() && last_role == "user" {
        tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let name = t.pointer("/function/name").and_then(Value::as_str).unwrap_or("tool");
                json!({"id": call_id(i, name), "function": {"index": i, "name": name, "arguments": arguments_for(t)}})
            })
            .collect()
    } else {
        Vec::new()
    };
    let text = match (&script.text, last_role) {
        (Some(t), _) => t.clone(),
        (None, "tool") => format!(
            "The tool said: {}",
            last_text
                .split_whitespace()
                .take(12)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        (None, _) if !calls.is_empty() => "Let me check.".to_owned(),
        (None, _) => format!(
            "Hello from the double. You said: {}",
            last_text
                .split_whitespace()
                .take(8)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    };
    let (mut pieces, calls) = match script.tools {
        // With nothing to call (the last message is a tool's result), a model that prints
        // its calls answers in prose like any other; `Verbatim` writes its text anyway.
        ToolPlacement::Printed(form)
            if !tools.is_empty() && (!calls.is_empty() || form == Printed::Verbatim) =>
        {
            let text = super::printed::text(form, &calls, script.text.as_deref(), last_text);
            (super::printed::pieces(&text), Vec::new())
        }
        _ => (words(&text), calls),
    };
    let done_reason = limit(&mut pieces, req);
    Ok(Plan {
        model: req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&model.name)
            .to_owned(),
        pieces,
        calls,
        seen,
        done_reason,
        script,
        thinking: thinking(req),
        logprobs: logprobs(req),
    })
}

fn final_fields(plan: &Plan, obj: &mut Map<String, Value>) {
    obj.insert("done".into(), json!(true));
    obj.insert("done_reason".into(), json!(plan.done_reason));
    obj.insert("total_duration".into(), json!(5_043_500_667u64));
    obj.insert("load_duration".into(), json!(5_025_959u64));
    obj.insert("prompt_eval_count".into(), json!(plan.seen.evaluated));
    obj.insert("prompt_eval_duration".into(), json!(325_953_000u64));
    obj.insert(
        "eval_count".into(),
        json!(plan.pieces.len() + plan.calls.len()),
    );
    obj.insert("eval_duration".into(), json!(4_709_213_000u64));
}

pub fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("json");
    b.push(b'\n');
    Bytes::from(b)
}

/// The NDJSON lines of a chat reply, placing tool calls per the script.
pub fn chat_lines(plan: &Plan) -> Vec<Bytes> {
    let msg = |content: &str, calls: Option<Vec<Value>>| {
        let mut m = json!({"role": "assistant", "content": content});
        if let Some(c) = calls {
            m["tool_calls"] = Value::Array(c);
        }
        m
    };
    let chunk = |m: Value| json!({"model": plan.model, "created_at": CREATED_AT, "message": m, "done": false});
    let mut out: Vec<Bytes> = Vec::new();
    if let Some(t) = plan.thinking {
        let mut m = msg("", None);
        m["thinking"] = json!(t);
        out.push(line(&chunk(m)));
    }
    out.extend(plan.pieces.iter().map(|p| {
        let mut c = chunk(msg(p, None));
        if let Some(top) = plan.logprobs {
            c["logprobs"] = piece_logprobs(p, top);
        }
        line(&c)
    }));
    let has_calls = !plan.calls.is_empty();
    match plan.script.tools {
        ToolPlacement::Intermediate if has_calls => {
            out.push(line(&chunk(msg("", Some(plan.calls.clone())))))
        }
        ToolPlacement::Split if has_calls => {
            for c in &plan.calls {
                out.push(line(&chunk(msg("", Some(vec![c.clone()])))));
            }
        }
        _ => {}
    }
    let final_calls =
        (plan.script.tools == ToolPlacement::Final && has_calls).then(|| plan.calls.clone());
    let mut last =
        json!({"model": plan.model, "created_at": CREATED_AT, "message": msg("", final_calls)});
    final_fields(plan, last.as_object_mut().expect("object"));
    out.push(line(&last));
    out
}

/// Sends lines on `tx` following the script's pace, gate, error and stall.
pub async fn emit(
    state: Arc<State>,
    script: Script,
    lines: Vec<Bytes>,
    tx: mpsc::Sender<Bytes>,
    error_line: Bytes,
) {
    for (i, l) in lines.into_iter().enumerate() {
        if i > 0 {
            if script.gated {
                match state.gate.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
            }
            if !script.pace.is_zero() {
                tokio::time::sleep(script.pace).await;
            }
        }
        if script.error_after == Some(i) {
            let _ = tx.send(error_line).await;
            return;
        }
        if script.stall_after == Some(i) {
            tx.closed().await;
            return;
        }
        // Counted before the hand-over, so a reader that has chunk k sees the count k+1.
        state.emitted.send_modify(|n| *n += 1);
        let frames: Vec<Bytes> = match script.fragment {
            Some(n) if n > 0 => l.chunks(n).map(Bytes::copy_from_slice).collect(),
            _ => vec![l],
        };
        for f in frames {
            if tx.send(f).await.is_err() {
                return;
            }
        }
    }
}

fn wants_stream(req: &Map<String, Value>) -> bool {
    req.get("stream").and_then(Value::as_bool).unwrap_or(true)
}

async fn respond(
    state: &Arc<State>,
    req: &Map<String, Value>,
    plan: Plan,
    lines: Vec<Bytes>,
    whole: Value,
) -> Response<DBody> {
    if plan.script.stall_headers {
        std::future::pending::<()>().await;
    }
    if !wants_stream(req) {
        return json_resp(StatusCode::OK, &whole);
    }
    let (tx, rx) = mpsc::channel(1);
    let err =
        line(&json!({"error": "an error was encountered while running the model: unexpected EOF"}));
    tokio::spawn(emit(state.clone(), plan.script.clone(), lines, tx, err));
    stream("application/x-ndjson", rx)
}

pub async fn chat(state: &Arc<State>, body: &[u8]) -> Response<DBody> {
    let req = match parse_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let plan = match plan_chat(state, &req) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let lines = chat_lines(&plan);
    if plan.script.stamp && wants_stream(&req) {
        let last = lines.last().cloned().unwrap_or_default();
        return super::stamp::stream(state, &plan, last);
    }
    let mut m = json!({"role": "assistant", "content": plan.pieces.concat()});
    if let Some(t) = plan.thinking {
        m["thinking"] = json!(t);
    }
    if !plan.calls.is_empty() {
        m["tool_calls"] = Value::Array(plan.calls.clone());
    }
    let mut whole = json!({"model": plan.model, "created_at": CREATED_AT, "message": m});
    if let Some(top) = plan.logprobs {
        let all: Vec<Value> = plan
            .pieces
            .iter()
            .flat_map(|p| {
                piece_logprobs(p, top)
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        whole["logprobs"] = Value::Array(all);
    }
    final_fields(&plan, whole.as_object_mut().expect("object"));
    respond(state, &req, plan, lines, whole).await
}

/// Plans a generate reply to a request with a prompt.
pub fn plan_generate(state: &State, req: &Map<String, Value>, model: &DoubleModel) -> Plan {
    let prompt = req.get("prompt").and_then(Value::as_str).unwrap_or("");
    let system = req.get("system").and_then(Value::as_str).unwrap_or("");
    let ctx = num_ctx(state, req, model);
    let seen = tokenize::truncate_text(&format!("{system} {prompt}"), ctx);
    let script = state.config.lock().unwrap().script.clone();
    let text = script.text.clone().unwrap_or_else(|| {
        format!(
            "Generated from: {}",
            prompt
                .split_whitespace()
                .take(8)
                .collect::<Vec<_>>()
                .join(" ")
        )
    });
    let mut pieces = words(&text);
    let done_reason = limit(&mut pieces, req);
    Plan {
        model: req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&model.name)
            .to_owned(),
        pieces,
        calls: Vec::new(),
        seen,
        done_reason,
        script,
        thinking: None,
        logprobs: None,
    }
}

pub async fn generate(state: &Arc<State>, body: &[u8]) -> Response<DBody> {
    let req = match parse_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let model = match find_model(state, &req) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let prompt = req.get("prompt").and_then(Value::as_str).unwrap_or("");
    if prompt.is_empty() {
        // Ollama's GenerateHandler: no prompt only loads the model, and answers one
        // JSON object whether or not the request streams.
        let stalled = state.config.lock().unwrap().script.stall_headers;
        if stalled {
            std::future::pending::<()>().await;
        }
        let asked = req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&model.name);
        return json_resp(
            StatusCode::OK,
            &json!({"model": asked, "created_at": CREATED_AT, "response": "", "done": true, "done_reason": "load"}),
        );
    }
    let plan = plan_generate(state, &req, &model);
    let mut lines: Vec<Bytes> = plan
        .pieces
        .iter()
        .map(|p| line(&json!({"model": plan.model, "created_at": CREATED_AT, "response": p, "done": false})))
        .collect();
    // Ollama's final generate chunk carries `context` (the prompt's and the answer's
    // token ids) unless the request is raw.
    let raw = req.get("raw").and_then(Value::as_bool).unwrap_or(false);
    let context: Vec<u64> = (1..=plan.seen.evaluated + plan.pieces.len() as u64).collect();
    let fin = |mut v: Value| {
        let o = v.as_object_mut().expect("object");
        final_fields(&plan, o);
        if !raw {
            o.insert("context".into(), json!(context));
        }
        v
    };
    let last = fin(json!({"model": plan.model, "created_at": CREATED_AT, "response": ""}));
    lines.push(line(&last));
    let whole = fin(
        json!({"model": plan.model, "created_at": CREATED_AT, "response": plan.pieces.concat()}),
    );
    respond(state, &req, plan, lines, whole).await
}
